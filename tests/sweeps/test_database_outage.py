"""A study on PostgreSQL rides out its database going away for a while, and stops clearly when it does not come back.

Each test has a cluster of its own, stopped with ``pg_ctl stop -m fast`` (every connection cut,
as in a restart or a failover) and started again.
"""

import optuna
import pytest

from optuna_sweep.reconnecting import ReconnectingRDBStorage, StorageUnreachable
from tests.support.app import FAST, FAST_SEARCH, finish, start_app, wait_for
from tests.support.services import create_database, pg_ctl

OUTAGE_LINE = "The study's database did not answer"


def completed(url: str) -> int:
    try:
        study = optuna.load_study(study_name="taylorprune", storage=url)
    except KeyError:  # not created yet
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.mark.integration
@pytest.mark.slow
def test_a_study_rides_out_an_outage_of_its_database(own_postgres, tmp_path):
    url = create_database(own_postgres, "study")
    process = start_app(tmp_path, *FAST, *FAST_SEARCH, "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={url}")
    wait_for(lambda: completed(url) >= 1, "the first trial to complete")
    pg_ctl(own_postgres, "stop")
    seen = []
    for line in process.stdout:  # the worker goes on with its trial, then waits for the database
        seen.append(line)
        if OUTAGE_LINE in line:
            break
    assert any(OUTAGE_LINE in line for line in seen), "".join(seen)[-3000:]
    pg_ctl(own_postgres, "start")
    output = "".join(seen) + finish(process)
    assert process.returncode == 0, output[-4000:]
    states = [t.state for t in optuna.load_study(study_name="taylorprune", storage=url).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 4, output[-4000:]


@pytest.mark.integration
def test_a_database_that_does_not_come_back_stops_the_study_with_a_clear_error(own_postgres):
    storage = ReconnectingRDBStorage(create_database(own_postgres, "gone"), reconnect_seconds=2)
    study = optuna.create_study(study_name="s", storage=storage)
    pg_ctl(own_postgres, "stop")
    with pytest.raises(
        StorageUnreachable,
        match=r"the study's database postgresql://postgres@127.0.0.1:\d+/gone did not answer for \d+ s",
    ) as caught:
        study.ask()
    assert "hydra.sweeper.reconnect_seconds" in str(caught.value)
    pg_ctl(own_postgres, "start")
    assert study.ask().number == 0, "once it is back, the same storage works again"
