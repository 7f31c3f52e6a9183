"""``PruningInfo`` (what ``compress_network`` returns besides the network) and the record it is built from.

``PruningRecord`` holds the bookkeeping of one run and nothing else: the learnables before
pruning, one history row per pruning iteration, the fine-tuning log, the checkpoints written
and the time per phase. It hands each row to a reporter (``reporting``) and to the caller's
``iteration_fn``; ``finish`` turns it into a ``PruningInfo`` with DataFrames, the pruned
layers, the summary text and the progress figure.

>>> import torch.nn as nn
>>> record = PruningRecord(nn.Linear(4, 2), producers=["0"], objective="loss", verbosity="off", macs=8)
>>> record.record(nn.Linear(4, 1), 0, {}, None, channels={"0": 1}, macs=4)    # True: iteration_fn asked to stop
False
>>> record.rows[0]["reduction"], record.rows[0]["macs_reduction"], record.rows[0]["channels[0]"]
(0.5, 0.5, 1)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from torch import nn

from prune_core.channels import owner
from prune_core.finetune import TrainingLog
from prune_core.progress_plot import pruning_progress_figure, save_figure
from prune_core.reporting import make_reporter

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class PruningInfo:
    """What ``compress_network`` did.

    - ``pruning_history``: one row per pruning iteration (0 = the input network): ``iteration``,
      ``learnables``, ``reduction`` (fraction of the original learnables removed), ``macs`` (per
      example of the input, ``count_macs``), ``macs_reduction`` (fraction of the original MACs
      removed), ``filters_removed``, ``end_iteration`` (the last fine-tuning iteration so far),
      ``validation_<loss|metric>`` (after fine-tuning, with validation data), ``scoring_s``,
      ``surgery_s``, ``fine_tuning_s``, ``time_s`` (elapsed since the start) and
      ``channels[<layer>]``, the filters left in every producer layer.
    - ``training_history``: one row per fine-tuning iteration: ``pruning_iteration``, ``epoch``,
      ``iteration`` (counted across all fine-tunings), ``loss``, each metric on the batch,
      ``learn_rate``, ``time_s``.
    - ``validation_history``: one row per validation: ``pruning_iteration``, ``epoch``,
      ``iteration``, ``loss``, each metric, ``time_s``.
    - ``pruned_layers`` (dotted module paths), ``stop_reason`` (the message, a plain ``str``;
      compare it with ``StopReason`` members), ``summary`` (the text printed),
      ``returned_iteration`` (the pruning iteration of the network returned), ``figure`` (with
      ``plots="pruning-progress"``), ``checkpoints`` (paths written), ``seconds`` (time per phase),
      ``final_iteration`` (the history row of the final fine-tune, ``final_epochs``; None without).
    """

    pruning_history: pd.DataFrame
    training_history: pd.DataFrame
    validation_history: pd.DataFrame
    pruned_layers: list[str]
    stop_reason: str
    summary: str
    returned_iteration: int
    figure: Figure | None = None
    checkpoints: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    final_iteration: int | None = None

    @property
    def returned_row(self) -> dict[str, Any]:
        """The returned network's row of ``pruning_history`` (column name to value)."""
        rows = self.pruning_history
        row: dict[str, Any] = rows.loc[rows["iteration"] == self.returned_iteration].iloc[0].to_dict()
        return row

    @property
    def reduction(self) -> float:
        """Fraction of the original learnables removed in the returned network."""
        return float(self.returned_row["reduction"])

    @property
    def macs_reduction(self) -> float:
        """Fraction of the original MACs (per example) removed in the returned network."""
        return float(self.returned_row["macs_reduction"])


def learnables(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def checkpoint_name(iteration: int) -> str:
    """The file name of pruning iteration ``iteration``'s checkpoint (``pruned_iteration_007.pt``)."""
    return f"pruned_iteration_{iteration:03d}.pt"


def checkpoint_iteration(name: str) -> int | None:
    """The pruning iteration of a checkpoint's file name (``checkpoint_name``'s inverse), None for any other name.

    >>> checkpoint_iteration(checkpoint_name(12)), checkpoint_iteration("model.pt")
    (12, None)
    """
    match = re.fullmatch(r"pruned_iteration_(\d+)\.pt", name)
    return None if match is None else int(match.group(1))


class PruningRecord:
    """Bookkeeping of one ``compress_network`` run (see the module docstring).

    ``model`` is the network before pruning and ``macs`` its MACs per example; ``producers`` the
    layers whose filters are counted in each row; ``objective`` the validation value the reporter
    shows; ``reachable`` the reduction the progress bar ends at, of learnables or of MACs
    (``budget``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        producers: list[str],
        objective: str,
        verbosity: str,
        reachable: float = 1.0,
        iteration_fn: Callable[[dict[str, Any]], None] | None = None,
        macs: float,
        budget: str = "learnables",
    ) -> None:
        self.original = learnables(model)
        self.original_macs, self.budget = macs, budget
        self.original_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        self.producers, self.objective, self.iteration_fn = list(producers), objective, iteration_fn
        self.rows: list[dict[str, Any]] = []
        self.log = TrainingLog()
        self.checkpoints: list[Path] = []
        self.seconds = {"scoring": 0.0, "checkpoints": 0.0}
        self.reporter = make_reporter(
            verbosity,
            objective=objective,
            reachable=reachable,
            progress="macs_reduction" if budget == "macs" else "reduction",
        )

    def removed(self, model: nn.Module) -> int:
        """Learnables gone from ``model`` since the start."""
        return self.original - learnables(model)

    def record(
        self,
        model: nn.Module,
        iteration: int,
        timing: dict[str, float],
        validation: dict[str, Any] | None,
        *,
        filters_removed: int = 0,
        channels: dict[str, int],
        macs: float,
    ) -> bool:
        """Add the history row of pruning iteration ``iteration``: ``model`` after it, its ``timing``
        (seconds per phase), the ``validation`` values, the filters left in each producer and its MACs.
        Returns True when ``iteration_fn`` asked to stop (returned True)."""
        current = learnables(model)
        row = {
            "iteration": iteration,
            "learnables": current,
            "reduction": 1 - current / self.original,
            "macs": macs,
            "macs_reduction": 1 - macs / self.original_macs if self.original_macs else 0.0,
            "filters_removed": filters_removed,
            "end_iteration": self.log.iteration,
        }
        if validation is not None:
            row.update(
                {
                    f"validation_{k}": v
                    for k, v in validation.items()
                    if k not in ("pruning_iteration", "epoch", "iteration", "time_s")
                }
            )
        row.update({"scoring_s": 0.0, "surgery_s": 0.0, "fine_tuning_s": 0.0, **timing, "time_s": self.log.elapsed()})
        row.update({f"channels[{fqn}]": channels.get(fqn, 0) for fqn in self.producers})
        self.seconds["scoring"] += row["scoring_s"]
        self.rows.append(row)
        self.reporter.row(row)
        return self.iteration_fn is not None and self.iteration_fn(dict(row)) is True

    def restore(self, rows: list[dict[str, Any]], log_iteration: int) -> None:
        """Go on from another run's history ``rows`` (a checkpoint's): they are this run's first rows, shown
        again by the reporter (not passed to ``iteration_fn``: they were then), and the fine-tuning iteration
        count and elapsed time continue from theirs."""
        for row in rows:
            self.rows.append(dict(row))
            self.reporter.row(self.rows[-1])
        self.log.iteration = log_iteration
        self.log.started -= float(rows[-1].get("time_s", 0.0))

    def checkpointed(self, paths: list[Path], waited: float) -> None:
        """The checkpoints written, and the seconds the loop waited on them."""
        self.checkpoints = list(paths)
        self.seconds["checkpoints"] = waited

    def pruned_layers(self, model: nn.Module) -> list[str]:
        now = {name: tuple(p.shape) for name, p in model.named_parameters()}
        changed = {owner(name) for name, shape in self.original_shapes.items() if now.get(name) != shape}
        return [name for name, _ in model.named_modules() if name in changed]

    def finish(
        self,
        model: nn.Module,
        stop_reason: str,
        returned_row: int,
        *,
        figure_metric: str | None,
        plots_path: str | os.PathLike[str] | None = None,
        final_iteration: int | None = None,
    ) -> PruningInfo:
        """The ``PruningInfo`` of the run; ``figure_metric`` (None: no figure) is the metric the figure shows."""
        pruning = pd.DataFrame(self.rows)
        training, validation = pd.DataFrame(self.log.training), pd.DataFrame(self.log.validation)
        layers = self.pruned_layers(model)
        reduction = 1 - learnables(model) / self.original
        quoted = ",".join(f'"{name}"' for name in layers)
        summary = (
            f"Compressed network has {100 * reduction:.1f}% fewer learnable parameters.\n"
            f"Pruning compressed {len(layers)} layers: {quoted}"
        )
        if self.budget == "macs":
            fewer = float(pruning["macs_reduction"].iloc[returned_row])
            summary = f"Compressed network needs {100 * fewer:.1f}% fewer MACs.\n" + summary
        self.reporter.finish(str(stop_reason), summary)
        figure = None
        if figure_metric is not None:
            figure = pruning_progress_figure(pruning, training, validation, figure_metric)
            if plots_path is not None:
                save_figure(figure, plots_path)
        seconds = {**self.seconds, **self.log.seconds, "total": self.log.elapsed()}
        return PruningInfo(
            pruning,
            training,
            validation,
            layers,
            str(stop_reason),
            summary,
            int(pruning["iteration"].iloc[returned_row]),
            figure,
            list(self.checkpoints),
            seconds,
            final_iteration,
        )
