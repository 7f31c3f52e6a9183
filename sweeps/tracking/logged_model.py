"""The returned network as an MLflow logged model (``mlflow.pytorch`` flavour), linked to its run.

Two steps, so that the model's own metrics are logged once, with the run's:

- ``new_logged_model(run, params, name)`` creates the model, with the run as its source and
  ``params`` (the run's) as its own, and returns its id. Metrics the run then logs with that
  ``model_id`` (``Metric(..., model_id=...)``) are the model's as well: the job logs the returned
  network's values so.
- ``save_logged_model(client, run_id, model_id, model, example, step, program)`` saves ``model`` into
  it as an exported program (pt2, no pickle), from ``program`` when given (the job's one
  ``torch.export``, ``sweeps.deployment.program``), or pickled if ``torch.export`` cannot export it;
  and records it as the run's output at ``step`` (the returned pruning iteration).

Why not ``mlflow.pytorch.log_model`` inside the run: a model logged there is linked to its step by
reading back the whole history of every metric of the run, to find the values at that step. That
is a tenth of a second per trial on the MNIST-1D study, and it grows with the fine-tuning history.
It also links whatever fine-tuning metrics happen to share the step number. So MLflow's
``Model.log`` saves the model on a thread of its own, where no run is active, and writes the run's
id into the ``MLmodel`` file as a model logged in the run has it.

MLflow's own check (load the model back and serve the input example) is left out: a quarter of
the call's time on every trial; the app's tests load and serve a logged model instead.

MLflow checks a model's requirements against the installed packages by reading the file list of
every one of them, once per process: half a second of the first trial's logging. The job calls
``prepare_model_logging()`` before it prunes, which runs that check on a thread of its own while the
network is pruned; the save waits for it (at once, unless the job took less than that).

    prepare_model_logging()                      # before pruning
    model_id = new_logged_model(run, params, "trial-3")
    client.log_batch(run.info.run_id, metrics=[Metric("reduction", 0.7, now, 0, model_id=model_id)])
    save_logged_model(client, run.info.run_id, model_id, pruned, example, 4, program)
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor

import mlflow
import torch
from mlflow.entities import LoggedModelOutput, Run
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches
from torch import nn
from torch.export import ExportedProgram

from sweeps.deployment.program import exports_as

log = logging.getLogger(__name__)

REQUIREMENTS = (f"torch=={torch.__version__.split('+')[0]}",)  # the logged model's pip requirements


@functools.cache
def _requirements_checked(pid: int) -> Future:
    """MLflow's check of ``REQUIREMENTS`` against the installed packages, started once per process (``pid``: a
    forked child has no thread of its parent's, so it starts its own) on a thread."""
    checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taylorprune-requirements")
    checked = checker.submit(warn_dependency_requirement_mismatches, list(REQUIREMENTS))
    checker.shutdown(wait=False)  # the thread ends with the check
    return checked


def prepare_model_logging() -> None:
    """Start MLflow's once-per-process requirements check in the background (see the module docstring)."""
    _requirements_checked(os.getpid())


class _FlavourOfRun:
    """``mlflow.pytorch`` as ``Model.log`` calls a flavour, writing ``run_id`` into the ``MLmodel`` file."""

    __name__ = "mlflow.pytorch"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def save_model(self, path: str, mlflow_model: Model, **kwargs) -> None:
        mlflow_model.run_id = self.run_id
        mlflow.pytorch.save_model(path=path, mlflow_model=mlflow_model, **kwargs)


def _save(model_id: str, run_id: str, model: nn.Module, example: torch.Tensor, program: ExportedProgram | None):
    """Save ``model`` into the logged model ``model_id`` (pt2, or pickled when it cannot be exported)."""
    common = {
        "flavor": _FlavourOfRun(run_id),
        "artifact_path": None,
        "model_id": model_id,
        "pytorch_model": model,
        "pip_requirements": list(REQUIREMENTS),
    }
    try:
        with exports_as(model, program):
            Model.log(
                **common,
                input_example=example.cpu().numpy(),
                serialization_format="pt2",
                validate_serving_input=False,
            )
    except Exception as exc:
        log.warning(f"torch.export could not export the model ({type(exc).__name__}); logging it pickled instead")
        Model.log(**common, serialization_format="pickle")


def new_logged_model(run: Run, params: dict[str, str], name: str = "model") -> str:
    """A new logged model of ``run`` with ``params`` as its own; its id (see the module docstring)."""
    return mlflow.initialize_logged_model(
        name=name, source_run_id=run.info.run_id, params=params, experiment_id=run.info.experiment_id
    ).model_id


def save_logged_model(
    client: MlflowClient,
    run_id: str,
    model_id: str,
    model: nn.Module,
    example: torch.Tensor,
    step: int = 0,
    program: ExportedProgram | None = None,
) -> None:
    """Save ``model`` into the logged model ``model_id``, the run's output at ``step`` (see the module docstring)."""
    model = model.cpu().eval()
    _requirements_checked(os.getpid()).result()  # the package listing is ready: the save's check reuses it
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="taylorprune-model") as outside_the_run:
        outside_the_run.submit(_save, model_id, run_id, model, example, program).result()
    client.log_outputs(run_id, [LoggedModelOutput(model_id, step)])
