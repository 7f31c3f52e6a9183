"""The plugin's entry module: ``OptunaSweeper``, which Hydra finds when it scans for plugins.

It imports nothing heavy: the implementation (``optuna_sweep.sweeper``, with Optuna) is imported
when a sweep is set up, so an app run without ``-m`` never loads Optuna.

>>> issubclass(OptunaSweeper, Sweeper)
True
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """``hydra/sweeper=taylorprune_optuna``: delegates to ``optuna_sweep.sweeper.OptunaSweeperImpl``."""

    def __init__(self, **options: Any) -> None:
        from optuna_sweep.sweeper import OptunaSweeperImpl

        self.impl = OptunaSweeperImpl(**options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
