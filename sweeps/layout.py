"""The MLflow layout that ``sweeps`` writes and ``analysis`` reads back: every name in one place.

Neutral ground between the app and the analysis: it imports ``prune_core`` and (to probe a
server) MLflow, never Optuna, Hydra, the app or ``analysis``. Tags, artifact paths, checkpoint
names, the tracking URI's resolution, and how a user's weights file is read:

- the store: ``tracking_uri(uri)`` is ``uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded
  ``sqlite:///<cwd>/mlflow.db``, for the app and the analysis alike; ``check_reachable`` fails
  fast, naming the URI;
- tags: ``ROLE`` (``"study"``, ``"trial"`` or ``"single"``), ``STUDY``, ``TRIAL``, ``SAMPLER``,
  ``SWEEP_DIR``, ``STOP_REASON``, ``RETURNED_ITERATION`` (the iteration whose network a run
  returned), ``WORKER`` (the process that wrote the run, as JSON: what reaping reads) and
  ``PRUNED`` (set when Optuna's pruner stopped the trial: where), ``PROCESSES`` (how many
  processes ran the job data-parallel: 1 for one), ``ONNX`` ("exported" or
  "failed: <why>"), ``LATENCY_SOURCE`` ("onnxruntime", or "torch" when the export failed) and
  ``FRONT_FIGURE`` (on a study run: "failed: <why>" when its end-of-run figure was not drawn);
- artifacts: ``CONFIG`` (the composed Hydra config), ``table(name)`` (the history tables),
  ``checkpoint(iteration)``, ``ONNX_FILE`` (the returned network exported);
- weights: ``WEIGHT_FILE_KEYS`` (the model config keys that name a trained weights file) and
  ``load_checkpoint`` (the safe format of ``save_pruned``, or a plain ``state_dict``).

>>> table("pruning_history"), checkpoint(3)
('tables/pruning_history.json', 'checkpoints/pruned_iteration_003.pt')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import torch
from torch import nn

from prune_core import checkpoint_name, load_pruned, read_pruned

ROLE, STUDY, TRIAL = "taylorprune.role", "taylorprune.study", "taylorprune.trial"
SAMPLER, SWEEP_DIR = "taylorprune.sampler", "taylorprune.sweep_dir"
STOP_REASON, RETURNED_ITERATION = "taylorprune.stop_reason", "taylorprune.returned_iteration"
WORKER = "taylorprune.worker"
PRUNED = "taylorprune.pruned"
PROCESSES = "taylorprune.processes"
RESUMED = "taylorprune.resumed"  # on a trial's run that a retried trial went on with: from where
ONNX, LATENCY_SOURCE = "taylorprune.onnx", "taylorprune.latency_source"
FRONT_FIGURE = "taylorprune.front_figure"
JOB_ROLES = ("trial", "single")
# The experiment's kind: the MLflow UI opens it on "Model training", not on its GenAI pages.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"

HYDRA_DIR, CONFIG = "hydra", "hydra/config.yaml"
TABLES_DIR, TABLES = "tables", ("pruning_history", "training_history", "validation_history")
CHECKPOINTS = "checkpoints"
ONNX_FILE = "model.onnx"
# The model config keys that name a trained weights file: such a model is the base network as it is.
WEIGHT_FILE_KEYS = ("checkpoint", "weights_path")


def table(name: str) -> str:
    """The artifact path of a history table (``mlflow.load_table``-able JSON)."""
    return f"{TABLES_DIR}/{name}.json"


def checkpoint(iteration: int) -> str:
    """The artifact path of a pruning iteration's checkpoint."""
    return f"{CHECKPOINTS}/{checkpoint_name(iteration)}"


def tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded sqlite store in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_reachable(uri: str, label: str, store_must_exist: bool = False, wait: bool = False) -> None:
    """Raise ValueError, starting with ``label``, when the store at ``uri`` cannot be used.

    A sqlite store needs its folder (the writer creates the file) or, with ``store_must_exist``
    (a reader), the file itself; a server must answer within 10 s, without retries, or with
    ``wait`` (a server that answered before, down for a while) after MLflow's own retries.
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if store_must_exist and not path.is_file():
            raise ValueError(f"{label}: there is no MLflow store at {str(path)!r}")
        if not path.parent.is_dir():
            raise ValueError(f"{label}: folder {str(path.parent)!r} does not exist")
        return
    from mlflow.tracking import MlflowClient

    at_once = {} if wait else {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    try:
        with patch.dict(os.environ, at_once):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise ValueError(f"{label} cannot be reached: {type(exc).__name__}: {str(exc)[:300]}") from exc


def load_checkpoint(path: str | Path, build: Callable[[], nn.Module], argument: str = "base.checkpoint") -> nn.Module:
    """A user's network: the safe format (``save_pruned``) or a plain ``state_dict`` file (``argument``: the
    config key that named it, for errors)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{argument}={str(path)!r} does not exist or is not a file")
    try:
        read_pruned(path)
    except ValueError:
        model = build()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:
            raise ValueError(
                f"{argument}={str(path)!r} is neither a save_pruned file nor a state_dict of "
                f"the configured model: {type(exc).__name__}: {exc}"
            ) from exc
        return model
    return load_pruned(path, build)
