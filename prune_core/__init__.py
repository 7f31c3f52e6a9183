"""prune_core: structured (filter) pruning of PyTorch networks.

Two wings under one roof. ``prune_core.channels`` knows which channels of a network can go
and removes them (``ChannelGraph``, ``remove_units``, ``analyze_compression``, ``save_pruned``);
``prune_core.finetune`` trains (``TrainingOptions``, ``train_network``, data, losses, metrics, and
``Ranks``: data-parallel runs under ``torch.distributed``).
The top joins them: ``compress_network`` (with ``PruningOptions``), ``TaylorPrunableNetwork``,
the criteria and allocations. Three extension points take code of one's own without editing
the package: ``register_criterion``, ``register_allocation`` and ``register_module_rule``.
These names are the public API; the modules behind them are private.

>>> import torch, torch.nn as nn
>>> import prune_core as pc
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 2))
>>> graph = pc.ChannelGraph.build(net, torch.zeros(1, 1, 16))
>>> pc.remove_units(net, graph, [0, 1])
>>> net[0]
Conv1d(1, 6, kernel_size=(3,), stride=(1,))
"""

from prune_core.channels import (
    ChannelGraph,
    CompressionReport,
    ExampleInputMismatch,
    SurgeryMismatch,
    TraceFailure,
    Unit,
    analyze_compression,
    channelwise,
    load_pruned,
    read_pruned,
    register_module_rule,
    remove_units,
    save_pruned,
)
from prune_core.checks import check_number, is_number
from prune_core.compress import compress_network
from prune_core.finetune import Distillation, Metric, TrainingInfo, TrainingOptions, train_network
from prune_core.importance import CRITERIA, Criterion, register_criterion
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.pruning_info import PruningInfo, checkpoint_iteration, checkpoint_name
from prune_core.pruning_options import AUTO_SCORE_ITERATIONS, PruningKeywords, PruningOptions
from prune_core.resume import ResumePoint, read_resume_point
from prune_core.selection import ALLOCATIONS, Allocation, register_allocation
from prune_core.stop_reason import StopReason

__all__ = [
    "ALLOCATIONS",
    "AUTO_SCORE_ITERATIONS",
    "Allocation",
    "CRITERIA",
    "ChannelGraph",
    "CompressionReport",
    "Criterion",
    "Distillation",
    "ExampleInputMismatch",
    "Metric",
    "PruningInfo",
    "PruningKeywords",
    "PruningOptions",
    "ResumePoint",
    "StopReason",
    "SurgeryMismatch",
    "TaylorPrunableNetwork",
    "TrainingInfo",
    "TrainingOptions",
    "TraceFailure",
    "Unit",
    "analyze_compression",
    "channelwise",
    "check_number",
    "checkpoint_iteration",
    "checkpoint_name",
    "compress_network",
    "is_number",
    "load_pruned",
    "read_pruned",
    "read_resume_point",
    "register_allocation",
    "register_criterion",
    "register_module_rule",
    "remove_units",
    "save_pruned",
    "train_network",
]
