"""analyze_compression: what can be pruned, how it is coupled, and the most that can go.

The counterpart of MATLAB's "Analyze for Compression".

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.BatchNorm1d(8), nn.ReLU(),
...                     nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))
>>> report = analyze_compression(net, torch.zeros(2, 1, 32), verbose=False)
>>> report.groups[["layers", "channels", "learnables_per_channel", "prunable"]].values.tolist()
[['0', 8, 9, True], ['5', 3, 9, False]]
>>> round(report.max_reduction, 3)
0.84
>>> report.total_macs, round(report.max_macs_reduction, 3)      # per example: 8*3*30 + 8*3
(744.0, 0.875)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from torch import nn

from prune_core.channels.graph import ChannelGraph
from prune_core.channels.macs import count_macs, macs_per_weight
from prune_core.channels.ops import layer_family


@dataclass
class CompressionReport:
    """Result of ``analyze_compression``.

    ``groups``: one row per channel group -- ``group``, ``layers`` (whose filters are
    removed), ``members`` (every layer that shrinks with them), ``channels``,
    ``learnables_per_channel``, ``macs_per_channel``, ``removable_learnables`` (every channel
    but one removed), ``prunable`` and ``reason``. ``layers``: one row per convolution / linear
    layer with ``filters``, ``prunable_filters`` and the ``reason`` when not all can be pruned.
    MACs are per example of the example input (``count_macs``).
    """

    groups: pd.DataFrame
    layers: pd.DataFrame
    total_learnables: int
    max_removable_learnables: int
    graph: ChannelGraph
    total_macs: float = 0.0
    max_removable_macs: float = 0.0

    @property
    def max_macs_reduction(self) -> float:
        """MACs reduction of the maximum learnables removal (every prunable layer keeps one filter)."""
        return self.max_removable_macs / self.total_macs if self.total_macs else 0.0

    @property
    def max_reduction(self) -> float:
        """Maximum possible learnables reduction (every prunable layer keeps one filter)."""
        return self.max_removable_learnables / self.total_learnables if self.total_learnables else 0.0

    def __str__(self) -> str:
        prunable = self.groups[self.groups["prunable"]]
        blocked = self.layers[self.layers["reason"] != ""]
        lines = [
            f"Network has {self.total_learnables:,} learnable parameters in {len(self.layers)} "
            f"convolution/linear layers.",
            f"{len(prunable)} prunable channel groups ({int(prunable['channels'].sum())} channels); maximum possible "
            f"learnables reduction {100 * self.max_reduction:.1f}% ({self.max_removable_learnables:,} parameters).",
            f"{self.total_macs:,.0f} MACs per example; at that removal {100 * self.max_macs_reduction:.1f}% fewer.",
        ]
        if len(prunable):
            table = prunable[
                [
                    "group",
                    "layers",
                    "members",
                    "channels",
                    "learnables_per_channel",
                    "macs_per_channel",
                    "removable_learnables",
                ]
            ]
            lines += ["", "Prunable groups:", table.to_string(index=False, max_colwidth=60)]
        if len(blocked):
            lines += [
                "",
                "Not (fully) prunable layers:",
                blocked[["layer", "type", "filters", "prunable_filters", "reason"]].to_string(
                    index=False, max_colwidth=90
                ),
            ]
        return "\n".join(lines)


def analyze_compression(
    model: nn.Module,
    example_input,
    layer_names: Iterable[str] | str | None = None,
    leaf_modules: Iterable[str | type] = (),
    verbose: bool = True,
    attention_units: str = "heads",
) -> CompressionReport:
    """Analyse ``model`` for filter pruning; print the report unless ``verbose=False``.

    ``layer_names`` restricts pruning to the named layers and whatever they affect; ``attention_units``: as in
    ``ChannelGraph.build`` ("heads" or "head_dims").
    """
    graph = ChannelGraph.build(
        model, example_input, layer_names=layer_names, leaf_modules=leaf_modules, attention_units=attention_units
    )
    per_weight = macs_per_weight(model, example_input)
    most = graph.max_removal()
    report = CompressionReport(
        groups=_group_table(graph, per_weight),
        layers=_layer_table(model, graph),
        total_learnables=graph.total_learnables,
        max_removable_learnables=graph.learnables_removed(most),
        graph=graph,
        total_macs=count_macs(model, example_input),
        max_removable_macs=graph.learnables_removed(most, per_weight),
    )
    if verbose:
        print(report)
    return report


def _group_table(graph: ChannelGraph, per_weight: dict[str, float]) -> pd.DataFrame:
    grouped: dict[tuple, list[int]] = {}
    for unit in graph.units:
        grouped.setdefault((unit.members, unit.producers, unit.reasons), []).append(unit.id)
    rows = []
    for number, ((members, producers, reasons), ids) in enumerate(grouped.items()):
        costs = {uid: graph.unit_cost(uid) for uid in ids}
        removable = 0
        if not reasons:
            removable = graph.learnables_removed(graph.greedy_removal(sorted(ids, key=lambda uid: -costs[uid])))
        rows.append(
            {
                "group": number,
                "layers": ", ".join(producers),
                "members": ", ".join(members),
                "channels": len(ids),
                "learnables_per_channel": round(sum(costs.values()) / len(costs)),
                "macs_per_channel": round(sum(graph.unit_cost(uid, per_weight) for uid in ids) / len(ids)),
                "removable_learnables": removable,
                "prunable": not reasons,
                "reason": "; ".join(reasons),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "group",
            "layers",
            "members",
            "channels",
            "learnables_per_channel",
            "macs_per_channel",
            "removable_learnables",
            "prunable",
            "reason",
        ],
    )


def _layer_table(model: nn.Module, graph: ChannelGraph) -> pd.DataFrame:
    prunable: dict[str, int] = {}
    reasons: dict[str, set[str]] = {}
    for unit in graph.units:
        for layer in unit.producers:
            if unit.removable:
                prunable[layer] = prunable.get(layer, 0) + 1
            else:
                reasons.setdefault(layer, set()).update(unit.reasons)
    rows = []
    for name, module in model.named_modules():
        family = layer_family(module)
        if family is None or family.filter_count is None:
            continue
        produced = graph.producer_units.get(name)  # its units' channels: a head or a head dim of an attention
        filters = produced.size if produced is not None else getattr(module, family.filter_count)
        why = set(reasons.get(name, set()))
        if name not in prunable and name not in reasons:
            why.add(_not_a_producer_reason(name, module, graph))
        rows.append(
            {
                "layer": name,
                "type": type(module).__name__,
                "filters": filters,
                "prunable_filters": prunable.get(name, 0),
                "reason": "; ".join(sorted(why)),
            }
        )
    return pd.DataFrame(rows, columns=["layer", "type", "filters", "prunable_filters", "reason"])


def _not_a_producer_reason(name: str, module: nn.Module, graph: ChannelGraph) -> str:
    if name in graph.grouped_convs:
        return "grouped/depthwise convolution: follows the channels of the layer feeding it"
    if not any(key[0].startswith(name + ".") for key in graph.sites):
        return "not reached by the traced forward pass (or inside a module that was not traced)"
    filters = graph.site_units.get((f"{name}.weight", 0))
    if filters is not None and any(graph.units[u].removable for u in set(filters.tolist()) if u >= 0):
        return "its filters go with another layer's units (an attention's heads: see its query or qkv layer)"
    return "its filters are not prunable here (grouped transposed convolution or unsupported use)"
