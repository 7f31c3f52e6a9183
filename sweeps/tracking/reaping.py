"""Runs left RUNNING by a process that died: found and marked KILLED, so the MLflow UI tells the truth.

Every run records the process that writes it in the tag ``taylorprune.worker`` (see
``sweeps.layout``). ``reap_runs`` marks KILLED each RUNNING run of an experiment

- whose process ran on this host and is gone (SIGKILL, a crash, a pre-empted node's local run), or
- that holds a trial of ``study`` which Optuna no longer has RUNNING (failed by a heartbeat, the
  way a worker on another host is reaped).

The study's callback calls it when a study starts and when it ends, so the same command run again
after a killed study leaves nothing RUNNING.

>>> worker_tag({"host": "h", "pid": 7, "started": 1.5})
'{"host": "h", "pid": 7, "started": 1.5}'
>>> read_worker_tag("{not json"), read_worker_tag(None)
(None, None)
"""

from __future__ import annotations

import json
import logging
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from optuna_sweep import is_gone
from sweeps import layout

log = logging.getLogger(__name__)


def worker_tag(worker: dict[str, Any]) -> str:
    """The tag value of a worker record (``this_worker()``)."""
    return json.dumps(worker)


def read_worker_tag(value: str | None) -> dict[str, Any] | None:
    """A worker record read back from a tag (untrusted: anything unreadable is None)."""
    try:
        record = json.loads(value)
    except (TypeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _trial_ended(tags: dict[str, str], states: dict[int, optuna.trial.TrialState], study_name: str | None) -> bool:
    if tags.get(layout.ROLE) != "trial" or tags.get(layout.STUDY) != study_name:
        return False
    try:
        state = states.get(int(tags.get(layout.TRIAL, "")))
    except ValueError:
        return False
    return state is not None and state != optuna.trial.TrialState.RUNNING


def reap_runs(client: MlflowClient, experiment_id: str, study: optuna.Study | None = None) -> list[str]:
    """Mark KILLED the experiment's RUNNING runs that nothing runs any more (see the module docstring)."""
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)} if study is not None else {}
    name = study.study_name if study is not None else None
    reaped = []
    for run in running:
        tags = run.data.tags
        if is_gone(read_worker_tag(tags.get(layout.WORKER))) or _trial_ended(tags, states, name):
            client.set_terminated(run.info.run_id, "KILLED")
            reaped.append(run.info.run_id)
    if reaped:
        log.warning(f"MLflow: {len(reaped)} run(s) left RUNNING by a process that is gone marked KILLED: {reaped}")
    return reaped
