"""What ``compress_network`` shows while it runs, chosen by ``verbosity``.

- "summary": a progress bar toward the goal (or the most that can go), then the two-line summary;
- "pruning": a table line per pruning iteration, then the stop reason and the summary;
- "training": the same, with the fine-tuning progress (drawn by the training loop);
- "off": nothing.

A reporter receives each history row (``row``) and the end (``finish``); the figure is drawn
from the finished tables (``progress_plot``), whatever the verbosity.

>>> reporter = make_reporter("pruning", objective="accuracy", reachable=0.5)
>>> reporter.row({"iteration": 0, "learnables": 1200, "reduction": 0.0, "macs_reduction": 0.0,
...               "filters_removed": 0, "time_s": 0.1})
iteration  learnables reduction      MACs filters validation  time (s)
        0       1,200      0.0%      0.0%       0        nan       0.1
>>> reporter.finish("Maximum compression reached.", "Compressed network has ...")
Stop reason: Maximum compression reached.
Compressed network has ...
"""

from __future__ import annotations

import math
from typing import Any

from tqdm.auto import tqdm


class Reporter:
    """Shows nothing ("off"); the base of the others."""

    def __init__(self, objective: str, reachable: float, progress: str = "reduction") -> None:
        self.objective = f"validation_{objective}"
        self.reachable, self.progress = reachable, progress

    def row(self, row: dict[str, Any]) -> None:
        """A pruning iteration's history row was recorded."""

    def finish(self, stop_reason: str, summary: str) -> None:
        """The run ended."""

    def close(self) -> None:
        """The run stopped, normally or on an error: nothing more is drawn (safe to call again)."""


class SummaryReporter(Reporter):
    """A progress bar in percent fewer learnables (or MACs), then the summary."""

    def __init__(self, objective: str, reachable: float, progress: str = "reduction") -> None:
        super().__init__(objective, reachable, progress)
        what = "MACs" if progress == "macs_reduction" else "learnables"
        self.bar = tqdm(
            total=round(100 * reachable, 1),
            unit="%",
            desc="pruning",
            bar_format="{desc}: {n:.1f}/{total:.1f}% fewer " + what + " |{bar}| {elapsed}",
        )

    def row(self, row: dict[str, Any]) -> None:
        self.bar.update(min(round(100 * row[self.progress], 1), self.bar.total) - self.bar.n)
        if self.objective in row:
            self.bar.set_postfix({self.objective: f"{row[self.objective]:.4g}"}, refresh=False)

    def finish(self, stop_reason: str, summary: str) -> None:
        self.bar.close()
        print(summary)

    def close(self) -> None:
        self.bar.close()


class LinesReporter(Reporter):
    """A table line per pruning iteration, then the stop reason and the summary."""

    def row(self, row: dict[str, Any]) -> None:
        if row["iteration"] == 0:
            print(
                f"{'iteration':>9} {'learnables':>11} {'reduction':>9} {'MACs':>9} {'filters':>7} "
                f"{'validation':>10} {'time (s)':>9}"
            )
        value = row.get(self.objective, math.nan)
        print(
            f"{row['iteration']:>9d} {row['learnables']:>11,d} {100 * row['reduction']:>8.1f}% "
            f"{100 * row['macs_reduction']:>8.1f}% {row['filters_removed']:>7d} {value:>10.4g} "
            f"{row['time_s']:>9.1f}",
            flush=True,
        )

    def finish(self, stop_reason: str, summary: str) -> None:
        print(f"Stop reason: {stop_reason}")
        print(summary)


REPORTERS: dict[str, type[Reporter]] = {
    "summary": SummaryReporter,
    "pruning": LinesReporter,
    "training": LinesReporter,
    "off": Reporter,
}


def make_reporter(verbosity: str, *, objective: str, reachable: float, progress: str = "reduction") -> Reporter:
    """The reporter for ``verbosity``; ``objective`` is the validation value shown, ``reachable`` the bar's end
    and ``progress`` the history column it follows ("reduction" or "macs_reduction")."""
    return REPORTERS[verbosity](objective, reachable, progress)
