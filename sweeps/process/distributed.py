"""A job on several processes: ``training.distributed=auto`` joins them in one ``torch.distributed`` group.

A trial that has more than one GPU runs as one process per GPU, each running the same job: started
by ``torchrun --nproc-per-node N -m sweeps.run ...``, by SLURM (``hydra/launcher=slurm_ddp``: one
task per GPU, through submitit), or by submitit's local launcher with ``tasks_per_node`` > 1.
``job_ranks(setting)`` reads which process this is, from the first of

- a submitit job's environment (``submitit.helpers.TorchDistributedEnvironment``: the rendezvous on
  the job's first host, the port drawn from its job id), on SLURM or local: a study's trial on
  several processes;
- torchrun's (or one's own) ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``,
  for a single run (a study under torchrun would run a sweeper on every process: refused);
- SLURM's ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` under a plain ``srun``, with
  ``MASTER_ADDR`` and ``MASTER_PORT`` exported by the batch script, for a single run (in a study,
  the tasks of an ``srun`` are workers of their own, as before);

and, with more than one process, initialises the process group (NCCL on GPUs, gloo on CPUs) for the
job, destroys it at the end, and yields the job's ``Ranks``. ``compress_network`` then runs
data-parallel (``prune_core.finetune.ranks``). Only rank 0 asks the tracking store, reports to the
Optuna trial and logs to MLflow; its value is the trial's. With ``off``, or a single process, the
job is the one process it always was.

>>> with job_ranks("off") as ranks:
...     ranks
Ranks(rank=0, world=1)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from prune_core.finetune import Ranks

DISTRIBUTED_SETTINGS = ("auto", "off")


def _from_slurm() -> None:
    """The rendezvous variables of a plain ``srun`` task, from SLURM's."""
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(
            f"training.distributed=auto: this srun task is one of {os.environ['SLURM_NTASKS']}, but {missing} "
            "are not set; export MASTER_ADDR (the first node) and MASTER_PORT in the batch script, "
            "or launch with hydra/launcher=slurm_ddp or torchrun"
        )
    os.environ.update(
        RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=os.environ["SLURM_NTASKS"], LOCAL_RANK=os.environ["SLURM_LOCALID"]
    )


def launched_world(single_run: bool) -> int:
    """How many processes run this job (1 when it was not launched as several), with ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK`` and the rendezvous exported for ``init_process_group``. In a study (``single_run`` False),
    only a launcher's job counts: processes started by torchrun or srun would each run a sweeper of their own."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        from submitit.helpers import TorchDistributedEnvironment

        if "WORLD_SIZE" not in os.environ and TorchDistributedEnvironment().world_size > 1:
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if not single_run and int(os.environ["WORLD_SIZE"]) > 1:
            raise ValueError(
                f"training.distributed=auto: this study runs in one of {os.environ['WORLD_SIZE']} processes "
                "(torchrun?), each of which would run a sweeper of its own; launch a study's trials on "
                "several processes with hydra/launcher=local_ddp or slurm_ddp, or set training.distributed=off"
            )
    elif single_run and int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        _from_slurm()
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_setting(setting: str) -> None:
    if setting not in DISTRIBUTED_SETTINGS:
        raise ValueError(f"training.distributed={setting!r} is not a setting; use one of {DISTRIBUTED_SETTINGS}")


@contextmanager
def job_ranks(setting: str, device: str = "auto", single_run: bool = True) -> Iterator[Ranks]:
    """The job's ranks, in a process group of its own while the block runs (see the module docstring);
    ``device`` is ``training.device`` (gloo for "cpu"), ``single_run`` False for a study's trial."""
    check_setting(setting)
    if setting == "off" or dist.is_initialized() or launched_world(single_run) == 1:
        yield Ranks.current()
        return
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield Ranks.current()
    finally:
        if dist.is_initialized():  # a failed rank has destroyed it already
            dist.destroy_process_group()
