"""Checks of a job's configuration that need no data: run before any data is loaded or anything trained.

``check_job_config(cfg)`` raises ValueError naming the config group, the value and what is
allowed, for the pruning options (``prune_core.check_pruning_options``) and the fine-tuning and
base-training options (``prune_core.TrainingOptions``). ``sweeps.run`` calls it first in every
job, and the study's callback calls it once before the study starts, so a bad value given on the
command line fails in a second and leaves no run, study or cache behind.

>>> from omegaconf import OmegaConf
>>> cfg = OmegaConf.create({"seed": 0, "pruning": {"increment": 0, "loss": "crossentropy"},
...                         "training": {}, "base": {"training": {}}})
>>> check_job_config(cfg)
Traceback (most recent call last):
ValueError: pruning: increment must be a number in (0, 1], got 0
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from prune_core import TrainingOptions, check_pruning_options


def check_job_config(cfg: DictConfig) -> None:
    """Raise ValueError for a configured value that no data could make valid (see the module docstring)."""
    try:
        check_pruning_options(**OmegaConf.to_container(cfg.pruning, resolve=True))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"pruning: {exc}") from exc
    for group in ("training", "base.training"):
        try:
            TrainingOptions(**OmegaConf.to_container(OmegaConf.select(cfg, group), resolve=True), seed=cfg.seed)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{group}: {exc}") from exc
