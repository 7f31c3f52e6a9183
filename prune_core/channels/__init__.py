"""The channels wing: which channels of a network can go, and removing them.

``ChannelGraph.build`` traces a model (``tracing``; where torch.fx cannot, its forward is
recorded as it runs: ``recorder``) on an ``ExampleInput`` (``example``), propagates channel
labels through it (``propagate``, on the union-find of ``labels``) and groups channels into
removal units (``graph``). What it knows of each family of operations is one ``Family`` object
(``family``; the built-in ones in ``families``, their rules in ``rules_elementwise``,
``rules_shape``, ``rules_layers`` and ``rules_attention``, and which operation is of which family
in ``ops``); ``register_module_rule`` teaches it a module of one's own. ``remove_units`` cuts
them out (``surgery``) and checks the result (``verify``); ``analyze_compression`` reports on a
model (``report``); ``save_pruned``/``load_pruned`` store a pruned model without pickle
(``serialize``). A pruned ``nn.MultiheadAttention`` becomes a ``PrunedMultiheadAttention``
(``attention``); ``out_proj_called`` lets hooks see the heads' outputs of unpruned ones.
Analysis leaves the model as it was (``preserve``).

These names are the wing's public interface; its modules are private.

>>> import torch, torch.nn as nn
>>> from prune_core.channels import ChannelGraph, remove_units
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Conv1d(8, 4, 3))
>>> graph = ChannelGraph.build(net, torch.zeros(1, 1, 16))
>>> remove_units(net, graph, [0, 1])
>>> net[2].in_channels
6
"""

from prune_core.channels.atomic import atomic_path
from prune_core.channels.attention import PrunedMultiheadAttention, out_proj_called
from prune_core.channels.example import ExampleInput
from prune_core.channels.families import BUILT_IN as FAMILIES
from prune_core.channels.family import Family
from prune_core.channels.graph import ATTENTION_UNITS, ChannelGraph, RemovalTally, Unit
from prune_core.channels.macs import PrunedMacs, count_macs, macs_per_weight
from prune_core.channels.ops import layer_family, module_family, register_module_rule, unregister_module_rule
from prune_core.channels.preserve import preserved
from prune_core.channels.propagate import NETWORK_OUTPUT, ExampleInputMismatch
from prune_core.channels.recorder import tensors_in
from prune_core.channels.report import CompressionReport, analyze_compression
from prune_core.channels.rule_call import OpCall
from prune_core.channels.rules_layers import channelwise
from prune_core.channels.serialize import load_pruned, read_pruned, save_pruned
from prune_core.channels.sites import owner
from prune_core.channels.surgery import remove_units
from prune_core.channels.tracing import TraceFailure, trace_model
from prune_core.channels.verify import SurgeryMismatch, check_equivalent, reference_outputs

__all__ = [
    "ATTENTION_UNITS",
    "FAMILIES",
    "NETWORK_OUTPUT",
    "ChannelGraph",
    "CompressionReport",
    "ExampleInput",
    "ExampleInputMismatch",
    "Family",
    "OpCall",
    "PrunedMacs",
    "PrunedMultiheadAttention",
    "RemovalTally",
    "SurgeryMismatch",
    "TraceFailure",
    "Unit",
    "analyze_compression",
    "atomic_path",
    "channelwise",
    "check_equivalent",
    "count_macs",
    "layer_family",
    "load_pruned",
    "macs_per_weight",
    "module_family",
    "out_proj_called",
    "owner",
    "preserved",
    "read_pruned",
    "reference_outputs",
    "register_module_rule",
    "remove_units",
    "save_pruned",
    "tensors_in",
    "trace_model",
    "unregister_module_rule",
]
