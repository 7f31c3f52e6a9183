"""Pickle-free save/load of pruned models."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from prune_core import ChannelGraph, load_pruned, read_pruned, remove_units, save_pruned
from tests.support.architectures import DepthwiseGroupedNet, FlattenCNN, TinyResNet


@pytest.mark.parametrize("build", [TinyResNet, DepthwiseGroupedNet, FlattenCNN])
def test_round_trip_rebuilds_the_pruned_model(tmp_path, build):
    torch.manual_seed(0)
    model = build().eval()
    example = torch.randn(2, 3, 16, 16) if build is TinyResNet else torch.randn(2, 3, 8, 8)
    graph = ChannelGraph.build(model, example)
    remove_units(model, graph, graph.greedy_removal([u.id for u in graph.removable_units()][::2]))
    path = tmp_path / "pruned.pt"
    save_pruned(model, path, extra={"iteration": 3})
    loaded = load_pruned(path, build).eval()
    with torch.no_grad():
        assert torch.equal(loaded(example), model(example))
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    spec, _ = read_pruned(path)
    assert spec["extra"] == {"iteration": 3}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_the_file_loads_with_weights_only(tmp_path):
    save_pruned(TinyResNet(), tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(payload) == {"spec", "state_dict"}


def test_corrupted_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable pruned-model checkpoint"):
        load_pruned(path, TinyResNet)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"spec": "{}", "state_dict": {}, "x": copy.deepcopy}, handle)
    with pytest.raises(ValueError, match="not a readable pruned-model checkpoint"):
        read_pruned(path)


def test_mismatched_architecture_is_named(tmp_path):
    save_pruned(TinyResNet(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="does not match the architecture from build_fn"):
        load_pruned(tmp_path / "m.pt", FlattenCNN)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        save_pruned(TinyResNet(), tmp_path / "nope" / "m.pt")


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_pruned(TinyResNet(), path)
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_pruned(FlattenCNN(), path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_a_builder_with_other_layer_settings_is_refused_with_the_attributes_named(tmp_path):
    save_pruned(torch.nn.Sequential(torch.nn.Conv1d(1, 8, 3)), tmp_path / "m.pt")
    other = lambda: torch.nn.Sequential(torch.nn.Conv1d(1, 8, 5, padding=2))  # noqa: E731
    with pytest.raises(ValueError, match=r"`0`.kernel_size: \[3\] saved, \[5\] built; `0`.padding: \[0\] saved"):
        load_pruned(tmp_path / "m.pt", other)
