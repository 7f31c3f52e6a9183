"""Everything a finished pruning run logs, and each pruning iteration as it happens.

- ``LiveLog``: each fine-tuning iteration's ``train/...`` metrics and each validation's
  ``validation/...`` metrics (step = fine-tuning iteration) and each pruning iteration's
  ``pruning/...`` metrics (step = pruning iteration), logged on a
  thread of their own as they happen, and each checkpoint as the background writer finishes it,
  so a long trial shows in the UI while it runs and pruning never waits for MLflow;
- ``log_pruning``: the flattened config as params; the run's *result*, the returned network's
  values, as single-value metrics named after the study's objectives (``validation_accuracy``,
  ``reduction``, ...: what the MLflow UI's run table shows) and the tag
  ``taylorprune.returned_iteration``; the three history tables (``mlflow.load_table``-able JSON), the
  Hydra config, the progress plot and the final model (``mlflow.pytorch`` flavour, named
  ``trial-<N>`` in a study, the run's output at the returned iteration's step, with the result
  metrics as its own: ``sweeps.tracking.logged_model``; and the safe format);
- ``log_deployment``: the returned network's export and latency.

Every tag and artifact name comes from ``sweeps.layout``, which ``analysis`` reads with.

>>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
{'a.b': '1', 'a.c': '[1, 2]', 'd': 'None'}
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.export import ExportedProgram

from prune_core import PruningInfo, StopReason, checkpoint_iteration, save_pruned
from prune_core.channels import atomic_path
from sweeps import layout
from sweeps.deployment.measure import Deployment
from sweeps.tracking.logged_model import new_logged_model, save_logged_model
from sweeps.tracking.store import as_params

log = logging.getLogger(__name__)
BATCH = 1000  # MLflow's limit of metrics per log_batch call
COUNTERS = ("pruning_iteration", "epoch", "iteration", "time_s")  # the history's columns that are not metrics
PARAM_BATCH = 100


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"a.b": "value"}`` (lists kept whole)."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(tree)}


def _metric_batches(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH])


def pruning_metrics(row: dict, timestamp: int) -> list[Metric]:
    """One pruning iteration's ``pruning/...`` metrics (step = iteration)."""
    keys = [
        "learnables",
        "reduction",
        "macs",
        "macs_reduction",
        "filters_removed",
        *(k for k in row if k.startswith("validation_")),
    ]
    return [Metric(f"pruning/{k}", float(row[k]), timestamp, int(row["iteration"])) for k in keys if k in row]


def validation_metrics(row: dict, step: int, timestamp: int) -> list[Metric]:
    """A validation's ``validation/...`` metrics from a row's ``validation_<name>`` values (a fine-tuning
    state, or a pruning history row), at fine-tuning iteration ``step``."""
    return [
        Metric(f"validation/{key.removeprefix('validation_')}", float(value), timestamp, step)
        for key, value in row.items()
        if key.startswith("validation_")
    ]


def step_metrics(prefix: str, row: dict, timestamp: int) -> list[Metric]:
    """One fine-tuning iteration's (or validation's) ``<prefix>/...`` metrics (step = fine-tuning iteration)."""
    step = int(row["iteration"])
    return [
        Metric(f"{prefix}/{key}", float(value), timestamp, step)
        for key, value in row.items()
        if key not in COUNTERS and not key.startswith("validation_")
    ]


class LiveLog:
    """Logs each fine-tuning iteration (``TrainingOptions(output_fn=live.fine_tuning_step)``) and each
    pruning iteration (``compress_network(iteration_fn=live)``) as they happen, on a thread of its own,
    and each checkpoint as it is written (``checkpoint_fn=live.checkpoint``, on the background writer's
    thread): the UI shows a trial's curves while it runs, and pruning never waits for the store.
    Fine-tuning rows are sent in one batch per pruning iteration. Validations go the same way: those
    during fine-tuning from its states, the one that ends a fine-tuning (or precedes pruning) from the
    pruning iteration's row, at the fine-tuning iteration it ended on.

    Its own thread rather than MLflow's asynchronous logging: MLflow's queue polls with a one-second
    timeout, so ending a run that used it waits up to a second (half a second per trial on average).

    With ``checkpoints``, an iteration's metrics are held until the checkpoint of that iteration (or a
    later one) is logged, so a run that a retried trial goes on with (``sweeps.tracking.resumption``)
    holds each iteration once: what the killed process did after its last logged checkpoint, and will
    be done again, was never sent. Held metrics go out at the next checkpoint or at ``flush``; with
    ``resumable`` (a trial that is run again if it stops), not at the ``flush`` of a stopped run
    (Ctrl-C, SIGTERM): the history tables hold them, and the retried trial sends them again.

    >>> with LiveLog(MlflowClient(uri), run.info.run_id) as live:            # doctest: +SKIP
    ...     options = replace(options, output_fn=live.fine_tuning_step)
    ...     pruned, info = compress_network(..., iteration_fn=live, checkpoint_fn=live.checkpoint)
    ...     live.flush()                         # stored; a failed write raises here
    """

    def __init__(self, client: MlflowClient, run_id: str, checkpoints: bool = False, resumable: bool = False) -> None:
        self.client, self.run_id, self.checkpoints = client, run_id, checkpoints
        self.resumable = resumable and checkpoints
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taylorprune-live-log")
        self._pending: list[Future[None]] = []
        self._steps: list[Metric] = []
        self._held: list[tuple[int, list[Metric]]] = []  # (pruning iteration, its metrics) until checkpointed
        self._lock = threading.Lock()  # checkpoints arrive on the writer's thread
        self._validated: set[tuple[int, int]] = set()  # (pruning, fine-tuning iteration) of validations sent or held

    def fine_tuning_step(self, state: dict) -> bool:
        """Keep one fine-tuning iteration's ``train/...`` metrics (and its validation's, if it had one) for the
        next batch; never asks to stop."""
        now = int(time.time() * 1000)
        validation = self._validation(state, int(state["pruning_iteration"]), int(state["iteration"]), now)
        self._steps += step_metrics("train", state, now) + validation
        return False

    def _validation(self, row: dict, pruning_iteration: int, step: int, timestamp: int) -> list[Metric]:
        """``validation_metrics`` of a validation not sent or held yet."""
        metrics = validation_metrics(row, step, timestamp)
        if not metrics or (pruning_iteration, step) in self._validated:
            return []
        self._validated.add((pruning_iteration, step))
        return metrics

    def _ending_validation(self, row: dict, timestamp: int) -> list[Metric]:
        """The validation in a pruning history row (if it has one): the one that ended its fine-tuning."""
        if "end_iteration" not in row:
            return []
        return self._validation(row, int(row["iteration"]), int(row["end_iteration"]), timestamp)

    def __call__(self, row: dict) -> None:
        now = int(time.time() * 1000)
        metrics = self._steps + pruning_metrics(row, now) + self._ending_validation(row, now)
        self._steps = []
        if not self.checkpoints:
            self._send(metrics)
            return
        with self._lock:
            self._held.append((int(row["iteration"]), metrics))

    def restore(self, rows: list[dict]) -> None:
        """Send the ``pruning/...`` metrics of the ``rows`` (a checkpoint's history, which a resumed run goes
        on from) that the run does not have yet: those its killed process held when it died."""
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "pruning/reduction")}
        now = int(time.time() * 1000)
        missing = [row for row in rows if int(row["iteration"]) not in logged]
        self._send([m for row in missing for m in pruning_metrics(row, now)])
        self._send([m for row in missing for m in self._ending_validation(row, now)])

    def _release(self, through: float) -> None:
        """Send the held metrics of the pruning iterations up to ``through``."""
        with self._lock:
            released = [m for iteration, metrics in self._held if iteration <= through for m in metrics]
            self._held = [(iteration, metrics) for iteration, metrics in self._held if iteration > through]
        self._send(released)

    def _send(self, metrics: list[Metric]) -> None:
        for start in range(0, len(metrics), BATCH):
            chunk = metrics[start : start + BATCH]
            self._pending.append(self._pool.submit(self.client.log_batch, self.run_id, metrics=chunk))

    def checkpoint(self, path: Path) -> None:
        """Log the checkpoint file ``path`` under the run's ``checkpoints`` artifacts, then the metrics held
        for its iteration and those before."""
        self.client.log_artifact(self.run_id, str(path), layout.CHECKPOINTS)
        iteration = checkpoint_iteration(path.name)
        self._release(math.inf if iteration is None else iteration)

    def flush(self, stopped: bool = False) -> None:
        """Send what is kept, wait until everything logged so far is stored; raise the first error of a write.

        ``stopped``: the run was stopped (Ctrl-C, SIGTERM); if ``resumable``, what came after its last
        checkpoint is not sent (see the class docstring)."""
        if stopped and self.resumable:
            with self._lock:
                self._held = []
        else:
            self._release(math.inf)
            self._send(self._steps)
        self._steps = []
        pending, self._pending = self._pending, []
        for operation in pending:
            operation.result()

    def __enter__(self) -> LiveLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True)


def history_metrics(info: PruningInfo) -> list[Metric]:
    """The whole history as metrics, time-stamped when each row happened (from the tables' ``time_s``): per
    pruning iteration (``pruning/...``) and per fine-tuning iteration (``train/...``, ``validation/...``). A
    run logs them live instead (``LiveLog``); this is what ``benchmarks.sweep_overhead`` batches."""
    now = int(time.time() * 1000)
    metrics = [m for row in info.pruning_history.to_dict("records") for m in pruning_metrics(row, now)]
    tables = (("train", info.training_history), ("validation", info.validation_history))
    started = now - int(1000 * max([0.0, *(float(t["time_s"].max()) for _, t in tables if len(t))]))
    for prefix, table in tables:
        for row in table.to_dict("records"):
            stamp = started + int(1000 * row["time_s"]) if "time_s" in row else now
            metrics += step_metrics(prefix, row, stamp)
    return metrics


def result_metrics(info: PruningInfo, names: list[str], model_id: str | None = None) -> list[Metric]:
    """The returned network's values (its row of the pruning history) under the given names (those of the
    logged model ``model_id`` as well, when given)."""
    row = info.returned_row
    now = int(time.time() * 1000)
    return [Metric(name, float(row[name]), now, 0, model_id=model_id) for name in dict.fromkeys(names) if name in row]


def write_tables(info: PruningInfo, folder: Path) -> Path:
    """The three history tables written as MLflow tables (JSON that ``mlflow.load_table`` reads) into
    ``folder/tables``, each through a temporary name; returns that folder.

    Written here and logged in one call, rather than by ``mlflow.log_table``, which makes three store
    round trips per table (and ``tables_tag`` goes with the params' batch)."""
    for name in layout.TABLES:
        path = folder / layout.table(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as written:
            getattr(info, name).to_json(written, orient="split", index=False, date_format="iso")
    return folder / layout.TABLES_DIR


def tables_tag(existing: str | None) -> RunTag:
    """MLflow's ``mlflow.loggedArtifacts`` run tag (the tables the UI lists), ``existing`` with the three
    history tables added.

    >>> tables_tag('[{"path": "tables/pruning_history.json", "type": "table"}]').value.count("pruning_history")
    1
    """
    entries = json.loads(existing or "[]")
    entries += [e for e in ({"path": layout.table(n), "type": "table"} for n in layout.TABLES) if e not in entries]
    return RunTag(MLFLOW_LOGGED_ARTIFACTS, json.dumps(entries))


def log_pruning(
    run: mlflow.ActiveRun,
    cfg: DictConfig,
    info: PruningInfo,
    pruned: nn.Module,
    output_dir: Path,
    example: torch.Tensor,
    live: LiveLog,
    log_model: bool = True,
    program: ExportedProgram | None = None,
) -> None:
    """Everything of a finished pruning run (see the module docstring); ``live``: the pruning metrics
    and checkpoints already logged as they happened (waited for here); ``log_model``: also the
    ``mlflow.pytorch`` model, from ``program`` when given (``sweeps.deployment.program``)."""
    client, run_id = MlflowClient(mlflow.get_tracking_uri()), run.info.run_id
    live.flush(stopped=info.stop_reason == StopReason.INTERRUPTED)
    params = as_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
    tags = [
        RunTag(layout.STOP_REASON, info.stop_reason),
        RunTag(layout.RETURNED_ITERATION, str(info.returned_iteration)),
        tables_tag(run.data.tags.get(MLFLOW_LOGGED_ARTIFACTS)),
    ]
    for start in range(0, len(params), PARAM_BATCH):
        client.log_batch(run_id, params=params[start : start + PARAM_BATCH], tags=tags if start == 0 else [])
    model_id = None
    if log_model:
        trial = run.data.tags.get(layout.TRIAL)
        name = f"trial-{trial}" if trial is not None else "model"
        model_id = new_logged_model(run, {p.key: p.value for p in params}, name)
    names = [
        *cfg.sweep.objectives,
        *cfg.sweep.constraints,
        "reduction",
        "learnables",
        "macs_reduction",
        "macs",
        *(c for c in info.pruning_history.columns if c.startswith("validation_")),
    ]
    _metric_batches(client, run_id, result_metrics(info, names, model_id))  # the model's own metrics, too
    if model_id is not None:
        save_logged_model(client, run_id, model_id, pruned, example, info.returned_iteration, program)
    client.log_artifacts(run_id, str(write_tables(info, output_dir)), layout.TABLES_DIR)
    hydra_dir = output_dir / ".hydra"
    if hydra_dir.is_dir():
        client.log_artifacts(run_id, str(hydra_dir), layout.HYDRA_DIR)
    if (output_dir / "pruning_progress.png").is_file():  # already drawn by compress_network
        client.log_artifact(run_id, str(output_dir / "pruning_progress.png"))
    elif info.figure is not None:
        client.log_figure(run_id, info.figure, "pruning_progress.png")
    save_pruned(pruned, output_dir / "pruned.pt", extra={"stop_reason": info.stop_reason})
    client.log_artifact(run_id, str(output_dir / "pruned.pt"), "model_safe")


def log_deployment(run: mlflow.ActiveRun, deployment: Deployment) -> None:
    """The returned network's export and latency (``sweeps.deployment.measure``): metrics, tags and ``model.onnx``."""
    client, run_id, now = MlflowClient(mlflow.get_tracking_uri()), run.info.run_id, int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, 0) for name, value in deployment.metrics.items()]
    tags = [RunTag(name, value) for name, value in deployment.tags.items()]
    client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)
    if deployment.onnx_path is not None:
        client.log_artifact(run_id, str(deployment.onnx_path))
