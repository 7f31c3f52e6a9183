"""Checkpoints written in the background: complete when compress_network returns, one in flight,
and a failed write fails the run with its path named."""

import threading

import pytest
import torch

from prune_core import TrainingOptions, compress_network, load_pruned, read_pruned
from tests.support.architectures import wave_cnn, wave_task


def run(tmp_path, **keywords):
    x, y = wave_task()
    options = TrainingOptions("adam", max_epochs=1, mini_batch_size=32, seed=0)
    settings = dict(goal=0.5, increment=0.1, checkpoint_path=tmp_path, verbosity="off")
    return compress_network(wave_cnn(), x, y, "crossentropy", options, **(settings | keywords)), x


def test_checkpoints_are_written_off_the_loop_and_complete_when_it_returns(tmp_path):
    threads = []
    (pruned, info), x = run(tmp_path, checkpoint_fn=lambda path: threads.append(threading.current_thread()))
    rows = info.pruning_history.set_index("iteration")
    assert [p.name for p in info.checkpoints] == [f"pruned_iteration_{k:03d}.pt" for k in rows.index[1:]]
    assert threads and all(t is not threading.main_thread() for t in threads), "written on the writer's thread"
    assert not any(t.is_alive() for t in threads), "the writer is closed when compress_network returns"
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in info.checkpoints], "no temporary file left"
    for path in info.checkpoints:
        spec, state = read_pruned(path)
        iteration = spec["extra"]["iteration"]
        assert (
            sum(v.numel() for k, v in state.items() if k.endswith(("weight", "bias")))
            == rows.loc[iteration, "learnables"]
        )
    last = load_pruned(info.checkpoints[-1], wave_cnn).eval()
    torch.testing.assert_close(last(x[:8]), pruned.eval()(x[:8]))


def test_a_write_that_fails_fails_the_run_with_the_path(tmp_path):
    def block_iteration_two(row):  # a folder where the checkpoint's file must go: the rename fails
        if row["iteration"] == 2:
            (tmp_path / "pruned_iteration_002.pt").mkdir()

    with pytest.raises(OSError, match=r"while writing checkpoint .*pruned_iteration_002\.pt"):
        run(tmp_path, iteration_fn=block_iteration_two)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"


def test_an_on_written_error_fails_the_run(tmp_path):
    def refuse(path):
        raise ConnectionError("tracking server gone")

    with pytest.raises(RuntimeError, match=r"pruned_iteration_001\.pt was written, but on_written failed"):
        run(tmp_path, checkpoint_fn=refuse)


def test_the_next_checkpoint_waits_for_the_last(tmp_path):
    """While checkpoint 1 is in flight, the loop records iteration 2 but goes no further."""
    gate, row_two, row_three = threading.Event(), threading.Event(), threading.Event()
    seen = {2: row_two, 3: row_three}

    def slow_first(path):
        if path.name == "pruned_iteration_001.pt":
            assert gate.wait(120), "the test never opened the gate"

    def rows(row):
        if row["iteration"] in seen:
            seen[row["iteration"]].set()

    results = []
    worker = threading.Thread(
        target=lambda: results.append(run(tmp_path, increment=0.1, checkpoint_fn=slow_first, iteration_fn=rows))
    )
    worker.start()
    try:
        assert row_two.wait(120), "iteration 2 was never recorded"
        assert not row_three.wait(1.0), "iteration 3 began while checkpoint 1 was still being written"
    finally:
        gate.set()
        worker.join()
    (_, info), _ = results[0]
    assert info.pruning_history["iteration"].max() >= 3 and len(info.checkpoints) >= 3
