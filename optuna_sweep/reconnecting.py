"""A database storage that rides out a restart or failover of its database server.

``ReconnectingRDBStorage`` is Optuna's ``RDBStorage`` with two changes:

- its connection pool tests a connection before lending it (SQLAlchemy's ``pool_pre_ping``), so
  the connections a restarted server dropped are replaced instead of failing the next call;
- every storage call that fails because the server cannot be reached (SQLAlchemy's
  ``OperationalError``, also when Optuna wrapped it in ``StorageInternalError``) is tried again
  with exponential backoff (0.5 s, 1 s, 2 s, ... at most 8 s apart) until ``reconnect_seconds``
  have passed; then it raises ``StorageUnreachable``, naming the database and how long it was
  tried, with the server's last error as its cause.

A call whose transaction was cut off is rolled back by the server, so trying it again does
not apply it twice. Only a connection lost between the server's commit and its reply would;
for the one call where that matters (finishing a trial), a retry that finds the trial already
in the state it asked for counts as done.

>>> storage = ReconnectingRDBStorage("sqlite:///:memory:", reconnect_seconds=5)
>>> storage.engine.pool._pre_ping, storage.reconnect_seconds
(True, 5)
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 120  # how long a study waits for its database to come back
_MAX_PAUSE = 8.0
# BaseStorage's methods, which the sweeper, its jobs and Optuna's samplers call, and the private ones
# Optuna's cache in front of an RDBStorage (``_CachedStorage``) calls instead
_CALLS = (
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_trials",
    "_set_trial_param",
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
    "_get_stale_trial_ids",
)
Result = TypeVar("Result")


class StorageUnreachable(RuntimeError):
    """The study's database did not answer within ``reconnect_seconds``."""


def _unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the server cannot be reached (as opposed to a wrong query or value)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.OperationalError) or (
            isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ReconnectingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` that reconnects (see the module docstring); the other arguments are its own."""

    def __init__(self, url: str, *args: Any, reconnect_seconds: float = RECONNECT_SECONDS, **kwargs: Any) -> None:
        engine_kwargs = {"pool_pre_ping": True, **(kwargs.pop("engine_kwargs", None) or {})}
        self.reconnect_seconds = reconnect_seconds
        super().__init__(url, *args, engine_kwargs=engine_kwargs, **kwargs)

    def retrying(self, call: Callable[[], Result], what: str) -> Result:
        """``call()``, tried again while the database cannot be reached, for at most ``reconnect_seconds``."""
        started, pause = time.monotonic(), 0.5
        while True:
            try:
                return call()
            except (StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
                waited = time.monotonic() - started
                if not _unreachable(error):
                    raise
                if waited + pause > self.reconnect_seconds:
                    raise StorageUnreachable(
                        f"the study's database {self.engine.url.render_as_string(hide_password=True)} did not "
                        f"answer for {waited:.0f} s ({what}); it is tried for {self.reconnect_seconds:g} s "
                        "(hydra.sweeper.reconnect_seconds)"
                    ) from error
                log.warning(f"The study's database did not answer ({what}); trying again in {pause:g} s")
                self.remove_session()
                time.sleep(pause)
                pause = min(2 * pause, _MAX_PAUSE)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Any = None
    ) -> bool:  # the one call whose repeat would fail once the first reached the database
        attempts = 0

        def finish() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return super(ReconnectingRDBStorage, self).set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                if attempts > 1 and super(ReconnectingRDBStorage, self).get_trial(trial_id).state == state:
                    return True  # the lost attempt had committed
                raise

        return self.retrying(finish, f"set_trial_state_values({trial_id}, {state.name})")


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self.retrying(lambda: method(self, *args, **kwargs), name)

    return call


for _name in _CALLS:
    setattr(ReconnectingRDBStorage, _name, _retried(_name))
