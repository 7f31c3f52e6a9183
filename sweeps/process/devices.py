"""Which device a job trains on: with several GPUs on one machine, concurrent trials each get their own.

``training.device=auto`` (and ``base.training.device``) becomes ``cuda:<k>`` with ``k`` the job's
index modulo the number of visible GPUs (``CUDA_VISIBLE_DEVICES`` already limits what torch sees):
its sweeper slot (``OPTUNA_SLOT``), which no two trials of a sweeper that run at once share, so
the ``n_jobs`` trials running together land on different cards; with one GPU it is ``cuda``,
without one ``cpu``. In a job that runs on several processes (``sweeps.process.distributed``), it is
``cuda``: each process's own GPU, its ``LOCAL_RANK``. Any other value is kept as given.

>>> job_device("auto", job_index=5, cuda_count=4), job_device("auto", 5, 1), job_device("auto", 5, 0)
('cuda:1', 'cuda', 'cpu')
>>> job_device("cuda:0", job_index=5, cuda_count=4)
'cuda:0'
"""

from __future__ import annotations

import os

import torch

from optuna_sweep.sweeper import SLOT_ENV, TRIAL_ENV
from prune_core.finetune import Ranks


def job_device(device: str, job_index: int, cuda_count: int | None = None) -> str:
    """The device of the job with index ``job_index`` (see the module docstring)."""
    if device != "auto":
        return device
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if count == 0:
        return "cpu"
    if Ranks.current().distributed:  # a job on several processes: each its own GPU, its LOCAL_RANK
        return "cuda"
    return "cuda" if count == 1 else f"cuda:{job_index % count}"


def job_index(default: int = 0) -> int:
    """This job's index among the trials running with it: its sweeper slot, else its Optuna trial number, else
    ``default``."""
    for name in (SLOT_ENV, TRIAL_ENV):
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            continue
    return default
