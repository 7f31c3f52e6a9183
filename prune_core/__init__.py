"""prune_core: structured (filter) pruning of PyTorch networks.

>>> import torch, torch.nn as nn
>>> import prune_core as pc
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 2))
>>> graph = pc.ChannelGraph.build(net, torch.zeros(1, 1, 16))
>>> pc.remove_units(net, graph, [0, 1])
>>> net[0]
Conv1d(1, 6, kernel_size=(3,), stride=(1,))
"""

from prune_core.compress import check_pruning_options, compress_network
from prune_core.graph import ChannelGraph, Unit
from prune_core.metrics import Metric
from prune_core.options import TrainingOptions
from prune_core.propagate import ExampleInputMismatch
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.pruning_info import PruningInfo, checkpoint_name
from prune_core.report import CompressionReport, analyze_compression
from prune_core.serialize import load_pruned, read_pruned, save_pruned
from prune_core.stop_reason import StopReason
from prune_core.surgery import remove_units
from prune_core.tracing import TraceFailure
from prune_core.verify import SurgeryMismatch

__all__ = [
    "ChannelGraph",
    "CompressionReport",
    "ExampleInputMismatch",
    "Metric",
    "PruningInfo",
    "StopReason",
    "SurgeryMismatch",
    "TaylorPrunableNetwork",
    "TrainingOptions",
    "TraceFailure",
    "Unit",
    "analyze_compression",
    "checkpoint_name",
    "check_pruning_options",
    "compress_network",
    "load_pruned",
    "read_pruned",
    "remove_units",
    "save_pruned",
]
