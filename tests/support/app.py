"""Running ``python -m sweeps.run`` as a user would, in a scratch folder, with a tiny fast setup, and
reading what it left (the MLflow store, the Optuna study) while it runs or after. The app's processes
are forked from an interpreter that has already imported it (``tests.support.zygote``);
``run_app(..., fresh=True)`` starts a new interpreter, as a user does.

Every wait is on an event (a line of output, a run in the store, a process gone), with a generous
deadline that only a hung process reaches."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from optuna_sweep import creation_lock
from tests.support.zygote import ForkedProcess, run_module, start_module

ROOT = Path(__file__).resolve().parents[2]
# Small data, a short base training, a short pruning: each job takes a few seconds. FAST leaves out the
# three slowest things a study logs, the MLflow model (about a second a trial), the study's front figure
# (a second or two a study) and Optuna's plots (a second a study); FAST_LOGGING_ALL keeps them, for the
# tests that read them back.
FAST_LOGGING_ALL = [
    "data.num_samples=800",
    "base.training.max_epochs=3",
    "pruning.goal=0.3",
    "pruning.increment=0.15",
    "training.max_epochs=1",
    "training.validation_frequency=5",
    "export.onnx=false",
    "export.latency=false",
]
FAST = [*FAST_LOGGING_ALL, "tracking.log_model=false", "~hydra.callbacks.front_figure", "tracking.study_plots=false"]
# replaces the default search space (hydra.sweeper.params) by two dimensions given on the command line
FAST_SEARCH = [
    "hydra.sweeper.params=null",
    "pruning.num_importance_score_iterations=int(interval(2, 10))",
    "training.max_epochs=range(1, 3)",
]


def app_env() -> dict[str, str]:
    """The environment of a user's shell: the project importable, no MLflow settings leaking in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": str(ROOT)}


def run_app(
    cwd: Path, *overrides: str, multirun: bool = False, check: bool = True, timeout: int = 600, fresh: bool = False
) -> subprocess.CompletedProcess:
    """``python -m sweeps.run [-m] overrides...`` in ``cwd``, forked from ``tests.support.zygote`` (``fresh``: in
    a new interpreter, as a user starts it); fails the test with the output if it fails."""
    args = [*(["-m"] if multirun else []), *overrides]
    if fresh:
        command = [sys.executable, "-m", "sweeps.run", *args]
        result = subprocess.run(command, cwd=cwd, env=app_env(), capture_output=True, text=True, timeout=timeout)
    else:
        result = run_module("sweeps.run", args, cwd, app_env(), timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(result.args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def run_analysis(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m analysis args...`` in ``cwd`` (forked from ``tests.support.zygote``), whatever its exit status."""
    return run_module("analysis", list(args), cwd, app_env(), timeout=900)


DEADLINE = 900  # seconds; reached only by a process that hangs
# trials long enough (tens of seconds) to be caught in the middle of one
LONG = [
    *FAST,
    "hydra.sweeper.params=null",
    "data.num_samples=5000",
    "pruning.goal=0.9",
    "pruning.increment=0.05",
    "training.max_epochs=range(8, 10)",
]


def client(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def all_runs(folder: Path):
    c = client(folder)
    experiment = c.get_experiment_by_name("taylorprune")
    return [] if experiment is None else c.search_runs([experiment.experiment_id], max_results=1000)


def trials(folder: Path, name: str = "taylorprune") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}").trials


def start_app(folder: Path, *overrides: str, env: dict[str, str] | None = None) -> ForkedProcess:
    """``python -m sweeps.run -m overrides...`` started in ``folder`` (with ``env`` added to the environment),
    forked from ``tests.support.zygote``: a process the test can read while it runs and signal."""
    return start_module("sweeps.run", ["-m", *overrides], folder, app_env() | {"PYTHONUNBUFFERED": "1"} | (env or {}))


def wait_for(condition, what: str):
    """Poll ``condition()`` until it returns something truthy (the deadline only catches a hang)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"waited {DEADLINE} s for {what}")


def running_trial_runs(folder: Path, count: int):
    """Once ``count`` trial runs are RUNNING in the store (read while the app writes it), those runs."""
    if not (folder / "mlflow.db").is_file():
        return None
    with creation_lock(folder / "mlflow.db"):  # never open a store while the app creates its schema
        found = [
            r for r in all_runs(folder) if r.info.status == "RUNNING" and r.data.tags.get("taylorprune.role") == "trial"
        ]
    return found if len(found) >= count else None


def finish(process: ForkedProcess) -> str:
    try:
        return process.communicate(timeout=DEADLINE)[0]
    finally:
        process.kill()


def waves(n_train: int = 256, n_val: int = 128) -> dict[str, torch.Tensor]:
    """A user dataset for ``data._target_``: which of 4 frequencies a noisy sine wave has (length 40)."""
    gen = torch.Generator().manual_seed(0)
    n = n_train + n_val
    y = torch.randint(0, 4, (n,), generator=gen)
    t = torch.arange(40.0)
    phase = 6.283 * torch.rand(n, 1, generator=gen)
    x = (torch.sin(6.283 * (y[:, None] + 1) * t / 40 + phase) + 0.3 * torch.randn(n, 40, generator=gen)).unsqueeze(1)
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_val": x[n_train:], "y_val": y[n_train:]}


def train_only() -> dict[str, torch.Tensor]:
    """A user dataset without a validation split."""
    data = waves()
    return {"x_train": data["x_train"], "y_train": data["y_train"]}


def waves_with_nan() -> dict[str, torch.Tensor]:
    """``waves`` with one NaN in training example 5."""
    data = waves()
    data["x_train"][5, 0, 7] = float("nan")
    return data


def waves_datasets() -> dict:
    """``waves`` as a user's Datasets: the training split a Dataset, validation a DataLoader of its own."""
    data = waves()
    validation = DataLoader(TensorDataset(data["x_val"], data["y_val"]), batch_size=50)
    return {
        "train": TensorDataset(data["x_train"], data["y_train"]),
        "validation": validation,
        "classes": ["1 Hz", "2 Hz", "3 Hz", "4 Hz"],
    }
