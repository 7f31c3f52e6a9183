"""Where a retried trial goes on from: the MLflow run of the trial it runs again, and that run's last checkpoint.

With ``hydra.sweeper.retry_failed_trials``, a trial whose worker died is asked again with its
parameters, and its job sees the failed trial's number (``optuna_sweep.RETRIED_ENV``).
``find_resumption`` looks up that trial's run in the study (by its tags), downloads the last
checkpoint it logged and checks that it can be gone on from; the job then reopens the same run
(``job_run``) and passes the file to ``compress_network(resume_from=...)``, so the run's history
goes on at the next iteration. Without a run, a checkpoint, or with one that cannot be read, the
trial starts over from the base network, and says why.

    resumption = find_resumption(client, "taylorprune", study_name(), folder, base)   # None: start over
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from torch import nn

from optuna_sweep import RETRIED_ENV
from prune_core import checkpoint_iteration, read_resume_point
from sweeps import layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resumption:
    """The run a retried trial reopens, the checkpoint it goes on from, and whose they were."""

    run_id: str
    checkpoint: Path
    retried_trial: str
    rows: list[dict]  # the pruning history up to the checkpoint, as it holds it

    @property
    def iteration(self) -> int:
        """The pruning iteration the checkpoint was written after."""
        return int(self.rows[-1]["iteration"])

    @property
    def tag(self) -> str:
        """The ``layout.RESUMED`` tag of the reopened run."""
        return f"from pruning iteration {self.iteration} of trial {self.retried_trial}"


def find_resumption(
    client: MlflowClient, experiment: str, study: str, folder: Path, base: nn.Module
) -> Resumption | None:
    """For a job that runs a failed trial again, where to go on from (the checkpoint downloaded into ``folder``,
    checked against the ``base`` network it began from); None for any other job, or when the failed trial left
    nothing to go on from."""
    retried = os.environ.get(RETRIED_ENV)
    if retried is None:
        return None
    found_experiment = client.get_experiment_by_name(experiment)
    runs = (
        []
        if found_experiment is None
        else client.search_runs(
            [found_experiment.experiment_id],
            f"tags.`{layout.STUDY}` = '{study}' AND tags.`{layout.TRIAL}` = '{retried}' "
            f"AND tags.`{layout.ROLE}` = 'trial'",
        )
    )
    if not runs:
        log.warning(f"Trial {retried} runs again from the base network: the study {study!r} has no run of it")
        return None
    run_id = runs[0].info.run_id
    names = [Path(a.path).name for a in client.list_artifacts(run_id, layout.CHECKPOINTS)]
    found = sorted(n for name in names if (n := checkpoint_iteration(name)) is not None)
    if not found:
        log.warning(f"Trial {retried} runs again from the base network: its run {run_id} logged no checkpoint")
        return None
    iteration = found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(client.download_artifacts(run_id, layout.checkpoint(iteration), str(folder)))
    try:  # read back from the store: untrusted until it loads, from a run of this base network
        rows = read_resume_point(path, base).rows
    except ValueError as exc:
        log.warning(f"Trial {retried} runs again from the base network: its last checkpoint cannot be read ({exc})")
        return None
    log.info(f"Trial {retried} goes on from its checkpoint of pruning iteration {iteration} (run {run_id})")
    return Resumption(run_id, path, retried, rows)
