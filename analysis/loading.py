"""An MLflow experiment as one table: a row per (trial, pruning iteration).

Every pruning iteration of every trial is a candidate compression level, so ``load_experiment``
reads each run's ``tables/pruning_history.json`` artifact (written by ``sweeps.run``) and
joins it with the run's identity and its hyperparameters:

- ``trial`` (the Optuna trial number; -1 for a single run), ``run_id``, ``study``, ``status``,
  ``stop_reason``, ``returned`` (True on the iteration whose network the run returned: the
  run's ``taylorprune.returned_iteration`` tag) and ``rejected`` (True on the iteration after it
  when the run crossed its validation threshold or diverged: a network that was not kept);
- the hyperparameters that differ between runs, typed (numbers as numbers, ``None`` as NaN);
- ``iteration``, ``learnables``, ``reduction``, ``validation_<loss|metric>`` and the rest of
  the pruning history;
- ``checkpoint``: the artifact path of that iteration's checkpoint (None when it has none);
- ``latency_ms`` (and ``latency_ms_b<N>``): the returned network's measured latency
  (``sweeps.deployment.measure``), on its returned row only (NaN elsewhere, and for runs that measured
  none); ``latency_source`` ("onnxruntime", or "torch" when the export failed);
- ``pruned``: True for every row of a trial that Optuna's pruner stopped early (its levels are
  real, checkpointed networks; the trial was just not run to its end).

Failed and still-running trials are left out unless ``include_unfinished=True``; their
numbers are in ``Experiment.unfinished``. A finished run whose history table is missing or
unreadable (truncated, not the logged layout) is left out too, with the reason, in
``Experiment.left_out``: one bad run does not stop the analysis. Every artifact is downloaded
into a temporary folder that is removed once it is read (``downloaded``). A study resumed several
times (several parent runs) is one experiment: trials are identified by their tags, not by their parent.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from unittest.mock import patch

import pandas as pd
from mlflow.tracking import MlflowClient

from prune_core import StopReason
from sweeps import layout

HISTORY = layout.table("pruning_history")


@dataclass
class Experiment:
    """The rows (``table``), the swept hyperparameters and what was left out."""

    name: str
    tracking_uri: str
    table: pd.DataFrame
    hyperparameters: list[str]
    unfinished: dict[str, int] = field(default_factory=dict)  # status -> number of runs left out
    left_out: dict[str, str] = field(default_factory=dict)  # run id -> why its history could not be read

    @property
    def metrics(self) -> list[str]:
        """The logged validation columns (``validation_loss``, ``validation_accuracy``, ...)."""
        return [c for c in self.table.columns if c.startswith("validation_")]


def typed(value: str):
    """An MLflow param string as the value it was: int, float, bool, None or str."""
    if value in ("None", "null"):
        return None
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def resolve_uri(tracking_uri: str | None) -> str:
    """``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``; checked it can be read."""
    uri = layout.tracking_uri(tracking_uri)
    layout.check_reachable(uri, f"tracking URI {uri!r}", store_must_exist=True)
    return uri


def _numeric(column: pd.Series) -> pd.Series:
    try:
        return pd.to_numeric(column)
    except (TypeError, ValueError):
        return column


@contextmanager
def downloaded(tracking_uri: str, run_id: str, artifact: str) -> Iterator[str]:
    """A run's artifact in a temporary folder, removed when the block ends (nothing left in /tmp)."""
    with (
        tempfile.TemporaryDirectory(prefix="taylorprune-artifact-") as folder,
        patch.dict(os.environ, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"),
    ):
        yield MlflowClient(tracking_uri).download_artifacts(run_id, artifact, dst_path=folder)


def _history(uri: str, run) -> pd.DataFrame:
    """The run's pruning history; ValueError, naming what is wrong, when it is not a readable table."""
    try:
        with downloaded(uri, run.info.run_id, HISTORY) as path, open(path) as handle:
            payload = json.load(handle)
        history = pd.DataFrame(payload["data"], columns=payload["columns"])
        history["iteration"] = pd.to_numeric(history["iteration"], errors="raise").astype(int)
    except Exception as exc:
        raise ValueError(f"{HISTORY} is not a readable history table ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if history.empty:
        raise ValueError(f"{HISTORY} has no rows")
    return history


def returned_iteration(tags: dict[str, str], last_iteration: int) -> int:
    """The iteration whose network a run returned: its tag, or (runs logged before the tag) its stop reason."""
    tagged = tags.get(layout.RETURNED_ITERATION)
    if tagged is not None and tagged.lstrip("-").isdigit():
        return int(tagged)
    stop = tags.get(layout.STOP_REASON, "")
    return last_iteration - (1 if stop in set(StopReason) and StopReason(stop).returns_previous else 0)


def load_experiment(name: str, tracking_uri: str | None = None, include_unfinished: bool = False) -> Experiment:
    """Load experiment ``name`` (see the module docstring)."""
    uri = resolve_uri(tracking_uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"experiment {name!r} does not exist at {uri}; experiments there: {known}")
    found = client.search_runs([experiment.experiment_id], max_results=50_000)
    jobs = [r for r in found if r.data.tags.get(layout.ROLE) in layout.JOB_ROLES]
    unfinished: dict[str, int] = {}
    left_out: dict[str, str] = {}
    rows, params = [], []
    for run in jobs:
        if run.info.status != "FINISHED":
            unfinished[run.info.status] = unfinished.get(run.info.status, 0) + 1
            if not include_unfinished:
                continue
        if HISTORY not in {a.path for a in client.list_artifacts(run.info.run_id, "tables")}:
            left_out[run.info.run_id] = f"no {HISTORY} artifact"
            continue
        try:
            history = _history(uri, run)
        except ValueError as exc:
            left_out[run.info.run_id] = str(exc)
            continue
        checkpoints = {a.path for a in client.list_artifacts(run.info.run_id, layout.CHECKPOINTS)}
        history["checkpoint"] = [
            path if (path := layout.checkpoint(int(k))) in checkpoints else None for k in history["iteration"]
        ]
        stop = run.data.tags.get(layout.STOP_REASON, "")
        last = returned_iteration(run.data.tags, int(history["iteration"].max()))
        history["returned"] = history["iteration"] == last
        history["rejected"] = history["iteration"] > last
        for metric, value in run.data.metrics.items():  # measured on the returned network only
            if metric.startswith("latency_ms"):
                history[metric] = history["returned"].map({True: value, False: float("nan")})
        history["latency_source"] = history["returned"].map({True: run.data.tags.get(layout.LATENCY_SOURCE)})
        history["pruned"] = layout.PRUNED in run.data.tags
        history.insert(0, "stop_reason", stop)
        history.insert(0, "status", run.info.status)
        history.insert(0, "study", run.data.tags.get(layout.STUDY))
        history.insert(0, "run_id", run.info.run_id)
        history.insert(0, "trial", int(run.data.tags.get(layout.TRIAL, -1)))
        rows.append(history)
        params.append((run.info.run_id, run.data.params))
    if not rows:
        raise ValueError(
            f"experiment {name!r} has no finished trials with a pruning history "
            f"(runs left out by status: {unfinished or 'none'}; unreadable: {left_out or 'none'})"
        )
    table = pd.concat(rows, ignore_index=True)
    values = pd.DataFrame({run_id: {k: typed(v) for k, v in p.items()} for run_id, p in params}).T
    varying = [k for k in values.columns if values[k].astype(str).nunique() > 1]
    swept = values[varying].apply(_numeric)
    table = table.merge(swept, left_on="run_id", right_index=True, how="left")
    table = table.sort_values(["trial", "run_id", "iteration"], ignore_index=True)
    return Experiment(name, uri, table, varying, unfinished, left_out)


def trial_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its returned level and how long its pruning took (``time_s`` of the last iteration)."""
    finals = table[table["returned"]].set_index("run_id")
    seconds = table.groupby("run_id")["time_s"].max().rename("seconds")
    return finals.join(seconds).reset_index().sort_values("trial", ignore_index=True)
