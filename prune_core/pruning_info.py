"""``PruningInfo`` (what ``compress_network`` returns besides the network) and the record it is built from.

``PruningRecord`` holds the bookkeeping of one run: the learnables before pruning, one
history row per pruning iteration, the fine-tuning log, checkpoints, the per-iteration
printout; ``finish`` turns it into a ``PruningInfo`` with DataFrames, the pruned layers, the
summary text and the progress figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from prune_core.data import DataSource
from prune_core.options import TrainingOptions
from prune_core.progress_plot import pruning_progress_figure, save_figure
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.serialize import save_pruned
from prune_core.training import TrainingLog, evaluate, to_device

VERBOSITY = ("summary", "pruning", "training", "off")
PLOTS = ("none", "pruning-progress")


@dataclass
class PruningInfo:
    """What ``compress_network`` did.

    - ``pruning_history``: one row per pruning iteration (0 = the input network): ``iteration``,
      ``learnables``, ``reduction`` (fraction of the original learnables removed),
      ``filters_removed``, ``end_iteration`` (the last fine-tuning iteration so far),
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
      ``plots="pruning-progress"``), ``checkpoints`` (paths written), ``seconds`` (time per phase).
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

    @property
    def reduction(self) -> float:
        """Fraction of the original learnables removed in the returned network."""
        rows = self.pruning_history
        return float(rows.loc[rows["iteration"] == self.returned_iteration, "reduction"].iloc[0])


def learnables(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def checkpoint_name(iteration: int) -> str:
    """The file name of pruning iteration ``iteration``'s checkpoint (``pruned_iteration_007.pt``)."""
    return f"pruned_iteration_{iteration:03d}.pt"


class PruningRecord:
    """Bookkeeping of one ``compress_network`` run (see the module docstring)."""

    def __init__(self, prunable: TaylorPrunableNetwork, source: DataSource, validation: DataSource | None, loss_fn,
                 options: TrainingOptions, goal: float, verbosity: str, generator: torch.Generator,
                 iteration_fn: Callable[[dict], None] | None = None) -> None:
        self.prunable, self.source, self.validation = prunable, source, validation
        self.iteration_fn = iteration_fn
        self.loss_fn, self.options, self.verbosity, self.generator = loss_fn, options, verbosity, generator
        self.original = prunable.graph.total_learnables
        self.original_shapes = dict(prunable.graph.param_shapes)
        self.producers = list(prunable.graph.producer_units)
        self.rows: list[dict] = []
        self.log = TrainingLog()
        self.checkpoints: list[Path] = []
        self.seconds = {"scoring": 0.0, "checkpoints": 0.0}
        reachable = goal
        if verbosity == "summary":  # the bar's end: the goal, or the most that can go
            reachable = min(goal, prunable.graph.learnables_removed(prunable.graph.max_removal()) / self.original)
        self.bar = tqdm(total=round(100 * reachable, 1), disable=verbosity != "summary", unit="%",
                        desc="pruning", bar_format="{desc}: {n:.1f}/{total:.1f}% fewer learnables |{bar}| {elapsed}")

    def removed(self) -> int:
        return self.original - learnables(self.prunable.model)

    def score(self, batches: int) -> bool:
        """Taylor scores from ``batches`` mini-batches in eval mode (no side effects); False if a loss is not finite."""
        started = time.perf_counter()
        model, device = self.prunable.model, self.options.torch_device()
        was_training = model.training
        model.eval()
        try:
            for inputs, targets in self.source.batches(self.options.mini_batch_size, self.options.shuffle,
                                                       self.generator, limit=batches):
                loss = self.prunable.score_batch(to_device(inputs, device), to_device(targets, device), self.loss_fn)
                if not math.isfinite(loss):
                    return False
        finally:
            model.train(was_training)
            self.seconds["scoring"] += time.perf_counter() - started
        return True

    def validate_start(self) -> dict | None:
        """Validation of the input network (iteration 0), also logged in the validation history."""
        if self.validation is None:
            return None
        started = time.perf_counter()
        values = evaluate(self.prunable.model, self.validation, self.loss_fn, self.options.resolved_metrics,
                          self.options.mini_batch_size, self.options.torch_device())
        row = {"pruning_iteration": 0, "epoch": 0, "iteration": 0, **values, "time_s": self.log.elapsed()}
        self.log.validation.append(row)
        self.log.add_time("initial_validation", started)
        return row

    def crossed(self, validation: dict | None, threshold: float) -> bool:
        value = validation[self.options.objective_metric_name]
        return value < threshold if self.options.objective_maximized else value > threshold

    def record(self, iteration: int, filters_removed: int, timing: dict, validation: dict | None) -> None:
        current = learnables(self.prunable.model)
        row = {"iteration": iteration, "learnables": current, "reduction": 1 - current / self.original,
               "filters_removed": filters_removed, "end_iteration": self.log.iteration}
        if validation is not None:
            row.update({f"validation_{k}": v for k, v in validation.items()
                        if k not in ("pruning_iteration", "epoch", "iteration", "time_s")})
        row.update({"scoring_s": 0.0, "surgery_s": 0.0, "fine_tuning_s": 0.0, **timing, "time_s": self.log.elapsed()})
        graph = self.prunable.graph
        row.update({f"channels[{fqn}]": graph.producer_units[fqn].size if fqn in graph.producer_units else 0
                    for fqn in self.producers})
        self.rows.append(row)
        self._report(row)
        if self.iteration_fn is not None:
            self.iteration_fn(dict(row))

    def _report(self, row: dict) -> None:
        if self.verbosity == "summary":
            self.bar.update(min(round(100 * row["reduction"], 1), self.bar.total) - self.bar.n)
            objective = f"validation_{self.options.objective_metric_name}"
            if objective in row:
                self.bar.set_postfix({objective: f"{row[objective]:.4g}"}, refresh=False)
        elif self.verbosity in ("pruning", "training"):
            if row["iteration"] == 0:
                print(f"{'iteration':>9} {'learnables':>11} {'reduction':>9} {'filters':>7} "
                      f"{'validation':>10} {'time (s)':>9}")
            value = row.get(f"validation_{self.options.objective_metric_name}", math.nan)
            print(f"{row['iteration']:>9d} {row['learnables']:>11,d} {100 * row['reduction']:>8.1f}% "
                  f"{row['filters_removed']:>7d} {value:>10.4g} {row['time_s']:>9.1f}", flush=True)

    def checkpoint(self, model: nn.Module, folder: Path, iteration: int) -> None:
        started = time.perf_counter()
        path = folder / checkpoint_name(iteration)
        row = self.rows[-1]
        save_pruned(model, path, extra={k: v for k, v in row.items() if not k.startswith("channels[")})
        self.checkpoints.append(path)
        self.seconds["checkpoints"] += time.perf_counter() - started

    def pruned_layers(self, model: nn.Module) -> list[str]:
        now = {name: tuple(p.shape) for name, p in model.named_parameters()}
        changed = {name.rpartition(".")[0] for name, shape in self.original_shapes.items() if now.get(name) != shape}
        return [name for name, _ in model.named_modules() if name in changed]

    def finish(self, model: nn.Module, stop_reason: str, returned_row: int, plots: str, plots_path) -> PruningInfo:
        self.bar.close()
        pruning = pd.DataFrame(self.rows)
        training, validation = pd.DataFrame(self.log.training), pd.DataFrame(self.log.validation)
        layers = self.pruned_layers(model)
        reduction = 1 - learnables(model) / self.original
        quoted = ",".join(f'"{name}"' for name in layers)
        summary = (f"Compressed network has {100 * reduction:.1f}% fewer learnable parameters.\n"
                   f"Pruning compressed {len(layers)} layers: {quoted}")
        if self.verbosity != "off":
            if self.verbosity != "summary":
                print(f"Stop reason: {stop_reason}")
            print(summary)
        figure = None
        if plots == "pruning-progress":
            metrics = [m.name for m in self.options.resolved_metrics]
            shown = self.options.objective_metric_name
            shown = metrics[0] if shown == "loss" and metrics else shown
            figure = pruning_progress_figure(pruning, training, validation, shown)
            if plots_path is not None:
                save_figure(figure, plots_path)
        seconds = {**self.seconds, **self.log.seconds, "total": self.log.elapsed()}
        return PruningInfo(pruning, training, validation, layers, str(stop_reason), summary,
                           int(pruning["iteration"].iloc[returned_row]), figure, list(self.checkpoints), seconds)
