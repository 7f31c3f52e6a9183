"""Data-parallel pruning on a real gloo process group of 2 processes (CPU): the same scores, removals and
network as one process on the same batches, the same ``PruningInfo`` on every rank, and a failure on one
rank failing every rank without a hang."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from prune_core import CRITERIA, Criterion, TaylorPrunableNetwork, TrainingOptions, compress_network
from prune_core.finetune import Ranks, as_source, check_ranks, resolve_loss, train_network
from tests.support.ranks import run_ranks

pytestmark = pytest.mark.slow


def _network(batch_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    norm = [nn.BatchNorm1d(8)] if batch_norm else []
    return nn.Sequential(
        nn.Conv1d(1, 8, 3), *norm, nn.ReLU(), nn.Conv1d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)
    )


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, generator=generator), torch.randint(0, 3, (n,), generator=generator)


CRITERIA_WITH_GRADIENTS = ("taylor", "taylor-bn", "taylor-weight")


def _scores(rank: int | None) -> dict[str, tuple[list[float], list[int]]]:
    """Per criterion: raw scores over 4 scoring batches of 16 (this rank's halves of them), and the 6 units
    chosen."""
    x, y = _data()
    ranks, found = Ranks.current(), {}
    for criterion in CRITERIA_WITH_GRADIENTS:
        prunable = TaylorPrunableNetwork(_network(batch_norm=True), x[:2], criterion=criterion)
        batches = as_source(x, y).batches(16, "every-epoch", torch.Generator().manual_seed(3), limit=4, ranks=ranks)
        assert prunable.score_batches(batches, resolve_loss("crossentropy"), ranks=ranks)
        found[criterion] = prunable.scorer.scores(prunable.model).tolist(), prunable.choose(max_units=6)
    return found


def test_scores_summed_across_ranks_are_one_process_scores(tmp_path: Path) -> None:
    alone = _scores(None)
    outcomes = run_ranks(_scores, 2, tmp_path)
    assert [o.error for o in outcomes] == [None, None]
    for criterion in CRITERIA_WITH_GRADIENTS:
        for outcome in outcomes:
            scores, chosen = outcome.value[criterion]
            np.testing.assert_allclose(scores, alone[criterion][0], rtol=1e-5, atol=1e-12, err_msg=criterion)
            assert chosen == alone[criterion][1], criterion
    assert outcomes[0].value == outcomes[1].value  # bit for bit the same on both ranks


def _options(x: torch.Tensor, y: torch.Tensor, **extra: object) -> TrainingOptions:
    return TrainingOptions(
        "sgdm",
        initial_learn_rate=0.05,
        max_epochs=2,
        mini_batch_size=16,
        seed=0,
        shuffle="every-epoch",
        validation_data=(x, y),
        metrics=["accuracy"],
        **extra,
    )


def _compress(rank: int | None, folder: str | None) -> dict[str, object]:
    x, y = _data()
    pruned, info = compress_network(
        _network(batch_norm=False),
        x,
        y,
        "crossentropy",
        _options(x, y),
        goal=0.6,
        increment=0.2,
        verbosity="off",
        checkpoint_path=folder,
    )
    channels = info.pruning_history.filter(like="channels[")
    return {
        "channels": channels.values.tolist(),
        "state": {k: v.clone() for k, v in pruned.state_dict().items()},
        "info": (info.pruning_history, info.training_history, info.validation_history, info.stop_reason),
        "checkpoints": sorted(os.listdir(folder)) if folder else [],
    }


def test_compress_network_on_two_ranks_prunes_as_one_process(tmp_path: Path) -> None:
    alone = _compress(None, None)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    outcomes = run_ranks(_compress, 2, tmp_path, str(folder))
    assert [o.error for o in outcomes] == [None, None]
    first, second = (o.value for o in outcomes)
    assert first["channels"] == second["channels"] == alone["channels"]
    for name, value in alone["state"].items():  # the same steps on the same batches: gradients averaged
        torch.testing.assert_close(first["state"][name], value, rtol=1e-4, atol=1e-5)
        assert torch.equal(first["state"][name], second["state"][name])
    for ours, theirs in zip(first["info"][:3], second["info"][:3], strict=True):  # rank 0's, on every rank
        assert ours.equals(theirs)
    assert first["info"][3] == "Learnables reduction goal reached."
    assert first["checkpoints"] == [f"pruned_iteration_{i:03d}.pt" for i in (1, 2, 3)]  # written once, by rank 0


def _train(rank: int | None) -> dict[str, torch.Tensor]:
    x, y = _data()
    dataset = TensorDataset(x, y)
    trained, info = train_network(_network(batch_norm=False), dataset, "crossentropy", _options(x, y))
    assert info.status == "completed" and len(info.training_history) == 12
    return trained.state_dict()


def _train_from_loader(rank: int) -> dict[str, torch.Tensor]:
    """A user's DataLoader with a DistributedSampler: its own shares, moved to a new epoch every pass."""
    x, y = _data()
    sampler = DistributedSampler(TensorDataset(x, y), shuffle=True, seed=0)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, sampler=sampler)
    options = TrainingOptions("sgdm", max_epochs=2, mini_batch_size=16, validation_data=(x, y))
    trained, info = train_network(_network(batch_norm=False), loader, "crossentropy", options)
    assert info.status == "completed" and len(info.training_history) == 12
    assert sampler.epoch == 2  # set before each of the two passes
    return trained.state_dict()


def test_a_loader_with_a_distributed_sampler_trains_on_two_ranks(tmp_path: Path) -> None:
    zero, one = run_ranks(_train_from_loader, 2, tmp_path)
    assert [zero.error, one.error] == [None, None]
    assert all(torch.equal(zero.value[name], one.value[name]) for name in zero.value)


def test_train_network_on_two_ranks_trains_as_one_process(tmp_path: Path) -> None:
    alone = _train(None)
    outcomes = run_ranks(_train, 2, tmp_path)
    assert [o.error for o in outcomes] == [None, None]
    for name, value in alone.items():
        torch.testing.assert_close(outcomes[0].value[name], value, rtol=1e-4, atol=1e-5)
        assert torch.equal(outcomes[0].value[name], outcomes[1].value[name])


def _fail_on_rank_one(rank: int, how: str) -> None:
    """compress_network whose loss fails on rank 1 at its 8th call (mid fine-tune): raises, is interrupted, or
    the process dies."""
    x, y = _data()
    calls = 0

    def loss(outputs: tuple[torch.Tensor, ...], targets: tuple[torch.Tensor, ...]) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if rank == 1 and calls == 8:
            if how == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "interrupted":
                raise KeyboardInterrupt
            raise RuntimeError("out of memory on this rank")
        return nn.functional.cross_entropy(outputs[0], targets[0])

    compress_network(_network(False), x, y, loss, _options(x, y), goal=0.6, increment=0.2, verbosity="off")


def test_an_error_on_one_rank_fails_every_rank_with_it(tmp_path: Path) -> None:
    zero, one = run_ranks(_fail_on_rank_one, 2, tmp_path, "raised")
    assert one.error == "RuntimeError: out of memory on this rank"
    assert zero.error == "RankFailed: rank 1 failed: RuntimeError: out of memory on this rank"


def test_ctrl_c_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    zero, one = run_ranks(_fail_on_rank_one, 2, tmp_path, "interrupted")
    assert one.error == "KeyboardInterrupt: "  # not the network so far: the ranks stopped at different points
    assert zero.error == "RankFailed: rank 1 failed: KeyboardInterrupt: "


def test_a_killed_rank_fails_the_others(tmp_path: Path) -> None:
    zero, one = run_ranks(_fail_on_rank_one, 2, tmp_path, "killed")
    assert one.exitcode == -signal.SIGKILL and one.error == "no outcome"
    assert (
        zero.error is not None and "by peer" in zero.error
    )  # the connection to rank 1 closed or reset: failed, not hung


def test_what_cannot_be_split_among_ranks_is_refused_first() -> None:
    x, y = _data()
    two = Ranks(rank=0, world=2)
    with pytest.raises(ValueError, match=r"options.mini_batch_size=15 does not divide among the 2 processes"):
        check_ranks(two, TrainingOptions(mini_batch_size=15), as_source(x, y), None)
    with pytest.raises(ValueError, match=r"options.solver='lbfgs' cannot run on the 2 processes of this run"):
        check_ranks(two, TrainingOptions("lbfgs", mini_batch_size=16), as_source(x, y), None)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with pytest.raises(ValueError, match=r"data: a DataLoader read by 2 processes needs a .*DistributedSampler"):
        check_ranks(two, TrainingOptions(mini_batch_size=16), as_source(loader), None)
    with pytest.raises(ValueError, match=r"options.validation_data: a DataLoader"):
        check_ranks(two, TrainingOptions(mini_batch_size=16), as_source(x, y), as_source(loader))


class _GradientNorms(Criterion):
    """A user's criterion that records gradients but does not say how ranks combine them."""

    needs_gradients = True


def test_a_gradient_criterion_that_cannot_combine_ranks_is_refused_first() -> None:
    with pytest.raises(ValueError, match=r"criterion 'gradient-norms' records gradients but does not say"):
        _GradientNorms.check_ranks(Ranks(rank=0, world=2), "gradient-norms")
    _GradientNorms.check_ranks(Ranks(), "gradient-norms")  # one process: nothing to combine
    CRITERIA.get("taylor").check_ranks(Ranks(rank=0, world=2), "taylor")
