"""Slots that never wait: with ``n_jobs=2``, the third trial is launched as soon as one of the first two ends,
while the other still runs; an interrupt tells the running trials FAIL and leaves nothing RUNNING.

The launcher here runs each job until the test releases it (events, no timing), so the order is exact.
The app's parallel tests (joblib, submitit) run the same loop with real launchers."""

from __future__ import annotations

import queue
import threading

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from optuna_sweep.sweeper import SLOT_ENV, OptunaSweeperImpl


class GatedLauncher:
    """A launcher whose jobs (one per launch) end when the test releases their trial; returns the trial's
    number as its objective value, or raises ``KeyboardInterrupt`` for one marked so."""

    def __init__(self, trials: int) -> None:
        self.started: queue.Queue[int] = queue.Queue()
        self.release = {number: threading.Event() for number in range(trials)}
        self.slots: dict[int, str] = {}  # trial number -> its OPTUNA_SLOT override

    def launch(self, batch, initial_job_idx):
        assert len(batch) == 1, "one job per slot"
        (slot,) = [o.rpartition("=")[2] for o in batch[0] if o.startswith(f"++hydra.job.env_set.{SLOT_ENV}=")]
        self.slots[initial_job_idx] = slot
        self.started.put(initial_job_idx)
        self.release[initial_job_idx].wait()
        return [JobReturn(overrides=batch[0], status=JobStatus.COMPLETED, _return_value=float(initial_job_idx))]


def sweeper(launcher, trials: int) -> tuple[OptunaSweeperImpl, optuna.Study]:
    impl = OptunaSweeperImpl(
        sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 0}),
        direction="minimize",
        study_name=None,
        storage=None,
        load_if_exists=False,
        n_trials=trials,
        n_jobs=2,
        max_failure_rate=1.0,
        constraints=False,
        params=None,
        results_file=None,
    )
    impl.launcher, impl.callbacks = launcher, []
    impl.validate_batch_is_legal = lambda batch: None  # needs Hydra's config loader; the app's tests cover it
    return impl, optuna.create_study()


def test_a_slot_takes_the_next_trial_as_soon_as_its_own_ends():
    launcher = GatedLauncher(3)
    impl, study = sweeper(launcher, 3)
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    result: list[tuple[int, int]] = []
    loop = threading.Thread(target=lambda: result.append(impl._in_slots(study, space, [], study._storage)))
    loop.start()
    assert {launcher.started.get(), launcher.started.get()} == {0, 1}
    launcher.release[1].set()
    assert launcher.started.get() == 2, "launched as soon as trial 1 ended"
    assert not launcher.release[0].is_set(), "while trial 0 still runs"
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.COMPLETE, TrialState.RUNNING]
    launcher.release[2].set()
    launcher.release[0].set()
    loop.join()
    assert result == [(3, 0)]
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, float(n)) for n in range(3)]
    assert launcher.slots[2] == launcher.slots[1] != launcher.slots[0], "trial 2 took the slot trial 1 freed"


def test_an_interrupt_fails_the_running_trials_and_leaves_nothing_running():
    launcher = GatedLauncher(3)
    impl, study = sweeper(launcher, 3)
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    told = threading.Event()
    tell = impl._tell

    def tell_then_interrupt(study, trial, job):  # Ctrl-C arrives as the sweeper tells trial 1
        tell(study, trial, job)
        told.set()
        raise KeyboardInterrupt

    impl._tell = tell_then_interrupt
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            impl._in_slots(study, space, [], study._storage)
        except BaseException as exc:
            outcome.append(exc)

    loop = threading.Thread(target=run)
    loop.start()
    assert {launcher.started.get(), launcher.started.get()} == {0, 1}
    launcher.release[1].set()
    told.wait()
    launcher.release[0].set()  # the slot still running trial 0 returns once its job has been stopped
    loop.join()
    assert [type(exc) for exc in outcome] == [KeyboardInterrupt]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
