"""Which launches make a job data-parallel (``sweeps.process.distributed``): a launcher's multi-task job, or
torchrun and srun for a single run; in a study, torchrun is refused and srun's tasks stay workers of their own."""

from __future__ import annotations

import os

import pytest

from sweeps.process.distributed import job_ranks, launched_world

NO_LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR", "SLURM_NTASKS")


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A copy of the environment, without any launcher's variables, that the test may change."""
    copy = {k: v for k, v in os.environ.items() if k not in NO_LAUNCHER and not k.startswith("SLURM_")}
    monkeypatch.setattr(os, "environ", copy)
    return copy


def test_one_process_is_one_job(environ: dict[str, str]) -> None:
    assert launched_world(single_run=True) == launched_world(single_run=False) == 1


def test_a_single_run_under_srun_takes_its_ranks_from_slurm(environ: dict[str, str]) -> None:
    environ.update(SLURM_NTASKS="4", SLURM_PROCID="2", SLURM_LOCALID="0")
    with pytest.raises(ValueError, match=r"one of 4, but \['MASTER_ADDR', 'MASTER_PORT'\] are not set"):
        launched_world(single_run=True)
    environ.update(MASTER_ADDR="node1", MASTER_PORT="29500")
    assert launched_world(single_run=True) == 4
    assert (environ["RANK"], environ["WORLD_SIZE"], environ["LOCAL_RANK"]) == ("2", "4", "0")


def test_in_a_study_srun_tasks_are_workers_and_torchrun_is_refused(environ: dict[str, str]) -> None:
    environ.update(SLURM_NTASKS="3", SLURM_PROCID="1", SLURM_LOCALID="1")
    assert launched_world(single_run=False) == 1  # each task a sweeper of its own, as before
    environ.update(RANK="1", WORLD_SIZE="2")
    with pytest.raises(ValueError, match=r"one of 2 processes \(torchrun\?\), each of which would run a sweeper"):
        launched_world(single_run=False)


def test_a_bad_setting_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"training.distributed='yes' is not a setting; use one of \('auto', 'off'\)"):
        with job_ranks("yes"):
            pass
