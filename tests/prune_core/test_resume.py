"""compress_network(..., resume_from=checkpoint): a run that stopped goes on from its last checkpoint, its
history rows kept, every iteration once; a file that cannot be gone on from is refused before any work."""

import pytest
import torch

from prune_core import TrainingOptions, compress_network, save_pruned
from tests.support.architectures import wave_cnn, wave_task

SETTINGS = dict(goal=0.6, increment=0.15, verbosity="off", min_filter_fraction=0.25)


def options(x, y):
    return TrainingOptions("adam", max_epochs=1, mini_batch_size=32, seed=0, validation_data=(x, y))


def test_a_resumed_run_goes_on_from_the_checkpoint_with_its_history(tmp_path):
    x, y = wave_task()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    _, full = compress_network(wave_cnn(), x, y, "crossentropy", options(x, y), checkpoint_path=first, **SETTINGS)
    assert len(full.checkpoints) >= 3
    network = wave_cnn()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    pruned, resumed = compress_network(
        network,
        x,
        y,
        "crossentropy",
        options(x, y),
        resume_from=first / "pruned_iteration_002.pt",
        checkpoint_path=second,
        **SETTINGS,
    )
    history = resumed.pruning_history
    assert history["iteration"].tolist() == list(range(len(history))), "every iteration once, in order"
    kept = full.pruning_history[full.pruning_history["iteration"] <= 2]
    assert history.iloc[:3][["learnables", "reduction", "validation_loss"]].equals(
        kept[["learnables", "reduction", "validation_loss"]]
    ), "the checkpoint's rows are the resumed run's first rows"
    assert resumed.stop_reason == full.stop_reason and history["reduction"].iloc[-1] >= SETTINGS["goal"]
    fine_tuned = resumed.training_history["pruning_iteration"]
    assert fine_tuned.min() == 3, "only the iterations after the checkpoint are fine-tuned again"
    assert resumed.training_history["iteration"].min() > kept["end_iteration"].iloc[-1], "the count goes on"
    assert [p.name for p in resumed.checkpoints][0] == "pruned_iteration_003.pt"
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items()), "the input is not changed"
    again = compress_network(
        wave_cnn(), x, y, "crossentropy", options(x, y), resume_from=resumed.checkpoints[0], **SETTINGS
    )[1]
    assert again.pruning_history["iteration"].tolist() == history["iteration"].tolist(), "its checkpoints resume too"
    assert sum(p.numel() for p in pruned.parameters()) == history["learnables"].iloc[resumed.returned_iteration]


def test_a_file_that_cannot_be_gone_on_from_is_refused(tmp_path):
    x, y = wave_task()
    plain = tmp_path / "plain.pt"
    save_pruned(wave_cnn(), plain, extra={"iteration": 1})
    with pytest.raises(ValueError, match=r"resume_from '.*plain.pt' is not a checkpoint compress_network can go on"):
        compress_network(wave_cnn(), x, y, "crossentropy", resume_from=plain, verbosity="off")
    with pytest.raises(ValueError, match=r"resume_from '.*missing.pt' is not a file"):
        compress_network(wave_cnn(), x, y, "crossentropy", resume_from=tmp_path / "missing.pt", verbosity="off")
    once = TrainingOptions(max_epochs=1)
    compress_network(wave_cnn(), x, y, "crossentropy", once, goal=0.2, checkpoint_path=tmp_path, verbosity="off")
    with pytest.raises(ValueError, match="began from a network of .* learnables; this one has"):
        compress_network(
            wave_cnn(width=4), x, y, "crossentropy", resume_from=tmp_path / "pruned_iteration_001.pt", verbosity="off"
        )
