"""The MLflow store of the app: opened once, experiments found or created, params in MLflow's limits.

- ``open_store(uri, label, wait)``: ``layout.check_reachable`` for a writer, then an embedded (sqlite)
  store's schema created under a lock, so many workers starting at once never race on it;
- ``experiment_id(client, name)``: the experiment, created by whichever worker gets there first,
  and tagged as model training (``layout.EXPERIMENT_KIND``);
- ``as_params(mapping)``: MLflow params, each value cut to MLflow's 6000 characters.

>>> [(p.key, p.value) for p in as_params({"a": "x" * 7000})] == [("a", "x" * 6000)]
True
"""

from __future__ import annotations

from collections.abc import Mapping

from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from optuna_sweep.storage import creation_lock
from sweeps import layout

PARAM_VALUE_LIMIT = 6000  # characters MLflow keeps of a param's value


def open_store(uri: str, label: str, wait: bool = False) -> None:
    """``check_reachable`` for a writer (``wait``: ride out a server that is down for a while), then create an
    embedded (sqlite) store's schema under a lock."""
    layout.check_reachable(uri, label, wait=wait)
    if uri.startswith("sqlite:///"):
        with creation_lock(uri.removeprefix("sqlite:///")):
            MlflowClient(uri).search_experiments(max_results=1)


def as_params(values: Mapping[str, str]) -> list[Param]:
    """``values`` as MLflow params, each cut to what MLflow keeps."""
    return [Param(key, value[:PARAM_VALUE_LIMIT]) for key, value in values.items()]


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if absent (by whichever of several workers gets there first),
    tagged ``mlflow.experimentKind=custom_model_development`` unless it already says what it is."""
    existing = client.get_experiment_by_name(name)
    if existing is None:
        try:
            return client.create_experiment(name, tags={layout.EXPERIMENT_KIND: layout.MODEL_TRAINING})
        except MlflowException:  # created by another worker in the meantime
            existing = client.get_experiment_by_name(name)
            if existing is None:
                raise
    if layout.EXPERIMENT_KIND not in existing.tags:  # made before the tag, or by someone else
        client.set_experiment_tag(existing.experiment_id, layout.EXPERIMENT_KIND, layout.MODEL_TRAINING)
    return existing.experiment_id
