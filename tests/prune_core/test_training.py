"""Losses, metrics, data forms, TrainingOptions and the fine-tuning loop."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prune_core import TrainingOptions, train_network
from prune_core.finetune import NAMED_LOSSES, TrainingLog, as_source, evaluate, fine_tune, resolve_loss, resolve_metric


def toy_classification(n: int = 96, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen)
    return x, (x[:, 0] > 0).long()


@pytest.mark.parametrize(
    "name,reference",
    [
        ("crossentropy", lambda y, t: F.cross_entropy(y, t)),
        ("index-crossentropy", lambda y, t: F.cross_entropy(y, t)),
        ("binary-crossentropy", lambda y, t: F.binary_cross_entropy_with_logits(y[:, 0], t.float())),
        ("mae", lambda y, t: (y[:, 0] - t).abs().mean()),
        ("mean-absolute-error", lambda y, t: (y[:, 0] - t).abs().mean()),
        ("l1loss", lambda y, t: (y[:, 0] - t).abs().mean()),
        ("mse", lambda y, t: (y[:, 0] - t).square().mean()),
        ("mean-squared-error", lambda y, t: (y[:, 0] - t).square().mean()),
        ("l2loss", lambda y, t: (y[:, 0] - t).square().mean()),
        ("huber", lambda y, t: F.huber_loss(y[:, 0], t.float())),
    ],
)
def test_named_losses(name, reference):
    torch.manual_seed(0)
    classes = name.endswith("crossentropy") and name != "binary-crossentropy"
    y = torch.randn(6, 3 if classes else 1)
    t = torch.tensor([0, 2, 1, 1, 0, 2]) if classes else torch.tensor([0.0, 1, 1, 0, 1, 0])
    got = resolve_loss(name)((y,), (t,))
    torch.testing.assert_close(got, reference(y, t).float())
    assert set(NAMED_LOSSES) >= {name}


def test_crossentropy_takes_one_hot_targets_and_callables_see_all_outputs():
    y, t = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(resolve_loss("crossentropy")((y,), (F.one_hot(t, 3).float(),)), F.cross_entropy(y, t))
    seen = resolve_loss(lambda a, b, c: a.sum() + b.sum() + c.sum())((y, y), (t,))
    torch.testing.assert_close(seen, 2 * y.sum() + t.sum())
    with pytest.raises(ValueError, match="index-crossentropy' needs integer class indices"):
        resolve_loss("index-crossentropy")((y,), (torch.full((4,), 0.5),))
    with pytest.raises(TypeError, match="loss must be a loss name or a callable, got int 3"):
        resolve_loss(3)


def test_metrics():
    out, t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 0, 0])
    acc = resolve_metric("accuracy")
    assert acc.finish(*acc.batch(out, t)) == pytest.approx(200 / 3)
    rmse = resolve_metric("rmse")
    value = rmse.finish(*rmse.batch(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 0.0])))
    assert value == pytest.approx(math.sqrt(5))
    with pytest.raises(ValueError, match="metrics entry 'f1' is not a known metric"):
        resolve_metric("f1")


@pytest.mark.parametrize("form", ["tensors", "arrays", "dataset", "loader", "frame", "frame-of-arrays"])
def test_every_data_form_gives_the_same_examples(form):
    x, y = toy_classification(10)
    data = {
        "tensors": (x, y),
        "arrays": (x.numpy().astype(np.float64), y.numpy()),
        "dataset": TensorDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=4),
        "frame": pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": pd.Categorical(y.numpy())}),
        "frame-of-arrays": pd.DataFrame({"signal": list(x.numpy()), "label": y.numpy()}),
    }[form]
    source = as_source(data)
    batches = list(source.batches(batch_size=4))
    xs = torch.cat([b[0][0] for b in batches])
    ys = torch.cat([b[1][0] for b in batches])
    torch.testing.assert_close(xs.float(), x)
    assert ys.tolist() == y.tolist() and len(source) == 10 and len(batches) == 3


def test_shuffle_modes():
    x, y = toy_classification(12)
    source = as_source(x, y)
    gen = torch.Generator().manual_seed(0)
    order = lambda mode: torch.cat([b[0][0][:, 0] for b in source.batches(4, mode, gen)]).tolist()  # noqa: E731
    assert order("never") == x[:, 0].tolist()
    assert order("once") == order("once") != x[:, 0].tolist()
    assert order("every-epoch") != order("every-epoch")


@pytest.mark.parametrize(
    "data,message",
    [
        ((torch.zeros(5, 3), torch.zeros(4)), "same number of examples: predictors have 5, targets have 4"),
        ((torch.zeros(0, 3), torch.zeros(0)), "data is empty"),
        ("not data", "data must be a DataLoader, a Dataset, a \\(predictors, targets\\) pair or a DataFrame, got str"),
        (pd.DataFrame({"y": [1, 2]}), "needs predictor columns and a last target column"),
    ],
)
def test_bad_data(data, message):
    with pytest.raises((TypeError, ValueError), match=message):
        as_source(data)


@pytest.mark.parametrize("solver", ["sgdm", "adam", "rmsprop", "lbfgs"])
def test_every_solver_reduces_the_loss(solver):
    torch.manual_seed(0)
    x, y = toy_classification()
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    source, loss = as_source(x, y), resolve_loss("crossentropy")
    options = TrainingOptions(
        solver, max_epochs=5, mini_batch_size=32, initial_learn_rate=None if solver == "lbfgs" else 0.05
    )
    before = evaluate(net, source, loss, (), 32, torch.device("cpu"))["loss"]
    assert fine_tune(net, source, loss, options, TrainingLog()).status == "completed"
    assert evaluate(net, source, loss, (), 32, torch.device("cpu"))["loss"] < 0.8 * before


def test_history_schedule_validation_patience_and_clipping():
    torch.manual_seed(0)
    x, y = toy_classification()
    net = nn.Linear(3, 2)
    options = TrainingOptions(
        "sgdm",
        max_epochs=4,
        mini_batch_size=32,
        learn_rate_schedule="piecewise",
        learn_rate_drop_period=2,
        learn_rate_drop_factor=0.5,
        metrics=["accuracy"],
        validation_frequency=2,
        gradient_threshold=1e-3,
        gradient_threshold_method="global-l2norm",
    )
    log = TrainingLog()
    fine_tune(
        net,
        as_source(x, y),
        resolve_loss("crossentropy"),
        options,
        log,
        pruning_iteration=3,
        validation=as_source(x, y),
    )
    training = pd.DataFrame(log.training)
    assert list(training.columns) == [
        "pruning_iteration",
        "epoch",
        "iteration",
        "loss",
        "accuracy",
        "learn_rate",
        "time_s",
    ]
    assert training.groupby("epoch")["learn_rate"].first().tolist() == [0.01, 0.01, 0.005, 0.005]
    assert (training["pruning_iteration"] == 3).all() and len(training) == 12
    assert pd.DataFrame(log.validation)["iteration"].tolist() == [2, 4, 6, 8, 10, 12]
    patient = TrainingOptions(
        "sgdm",
        max_epochs=50,
        mini_batch_size=32,
        validation_frequency=1,
        validation_patience=2,
        initial_learn_rate=1e-9,
    )
    log = TrainingLog()
    fine_tune(nn.Linear(3, 2), as_source(x, y), resolve_loss("crossentropy"), patient, log, validation=as_source(x, y))
    assert len(log.training) < 10, "validation patience stops fine-tuning once the loss stops improving"


def test_gradient_clipping_methods_bound_the_update():
    x, y = toy_classification()
    for method in ("l2norm", "global-l2norm", "absolute-value"):
        net = nn.Linear(3, 2)
        before = net.weight.detach().clone()
        options = TrainingOptions(
            "sgdm",
            max_epochs=1,
            mini_batch_size=96,
            momentum=0,
            l2_regularization=0,
            initial_learn_rate=1.0,
            gradient_threshold=1e-3,
            gradient_threshold_method=method,
        )
        fine_tune(net, as_source(x, y), resolve_loss("crossentropy"), options, TrainingLog())
        assert (net.weight.detach() - before).abs().max() <= 1e-3 + 1e-7


def test_output_fn_is_given_each_validations_values():
    x, y = toy_classification()
    states = []
    options = TrainingOptions(
        "adam", max_epochs=1, mini_batch_size=32, metrics=["accuracy"], validation_frequency=2, output_fn=states.append
    )
    log = TrainingLog()
    fine_tune(nn.Linear(3, 2), as_source(x, y), resolve_loss("crossentropy"), options, log, validation=as_source(x, y))
    validated = [s for s in states if "validation_loss" in s]
    assert [s["iteration"] for s in validated] == [s["iteration"] for s in log.validation if s["iteration"] % 2 == 0]
    assert validated and all({"validation_loss", "validation_accuracy"} <= set(s) for s in validated)
    assert [s["validation_loss"] for s in validated] == [r["loss"] for r in log.validation if r["iteration"] % 2 == 0]


def test_output_fn_stops_and_divergence_is_reported():
    x, y = toy_classification()
    calls = []
    options = TrainingOptions(
        "adam",
        max_epochs=3,
        mini_batch_size=32,
        output_fn=lambda state: calls.append(state["iteration"]) or state["iteration"] == 4,
    )
    assert (
        fine_tune(nn.Linear(3, 2), as_source(x, y), resolve_loss("crossentropy"), options, TrainingLog()).status
        == "stopped"
    )
    assert calls == [1, 2, 3, 4]
    nan_loss = lambda out, t: out.sum() * math.nan  # noqa: E731
    assert (
        fine_tune(
            nn.Linear(3, 2), as_source(x, y), resolve_loss(nan_loss), TrainingOptions(max_epochs=1), TrainingLog()
        ).status
        == "diverged"
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"solver": "sgd"}, "solver 'sgd' is not supported"),
        ({"max_epochs": 0}, "max_epochs must be a positive integer, got 0"),
        ({"initial_learn_rate": -1.0}, "initial_learn_rate must be a positive number, got -1.0"),
        ({"shuffle": "always"}, "shuffle 'always' is not supported; use one of \\('once', 'every-epoch', 'never'\\)"),
        ({"momentum": 1.5}, "momentum must be a number in \\[0, 1\\], got 1.5"),
        ({"objective_metric_name": "accuracy"}, "'accuracy' is not computed; use one of \\['loss'\\]"),
        ({"device": "tpu"}, "device 'tpu' is not a device"),
        ({"learn_rate_schedule": "linear"}, "learn_rate_schedule 'linear' is not supported"),
        ({"distillation": {"alpha": 1.5}}, "distillation.alpha must be a number in \\[0, 1\\], got 1.5"),
        ({"distillation": {"alpha": 0.5, "temperature": 0}}, "distillation.temperature must be a positive number"),
    ],
)
def test_bad_training_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingOptions(**kwargs)


@pytest.mark.parametrize("name", ["crossentropy", "index-crossentropy"])
def test_a_label_that_is_not_a_class_of_the_output_is_named(name):
    loss = resolve_loss(name)
    with pytest.raises(ValueError, match=f"loss '{name}': label 7 is not a class of the network, which has 5 outputs"):
        loss((torch.zeros(4, 5),), (torch.tensor([0, 1, 7, 2]),))
    with pytest.raises(ValueError, match="label -1 is not a class"):
        loss((torch.zeros(2, 5, 3, 3),), (torch.full((2, 3, 3), -1),))
    assert float(loss((torch.zeros(2, 5, 3, 3),), (torch.full((2, 3, 3), 4),))) > 0, "segmentation maps too"


def test_device_auto_and_seeded_runs_repeat():
    assert TrainingOptions(device="auto").torch_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    x, y = toy_classification()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = nn.Linear(3, 2)
        log = TrainingLog()
        options = TrainingOptions(max_epochs=2, shuffle="every-epoch", mini_batch_size=16)
        fine_tune(
            net, as_source(x, y), resolve_loss("crossentropy"), options, log, generator=torch.Generator().manual_seed(5)
        )
        runs.append([r["loss"] for r in log.training])
    assert runs[0] == runs[1]


def test_train_network_is_trainnet():
    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    opts = TrainingOptions(
        "adam",
        max_epochs=3,
        mini_batch_size=16,
        metrics=["accuracy"],
        seed=0,
        validation_data=(x, y),
        validation_frequency=4,
    )
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        net, info = train_network(nn.Linear(3, 2), (x, y), "crossentropy", opts)
        runs.append(info.training_history["loss"].tolist())
    assert info.status == "completed" and len(info.training_history) == 12
    assert list(info.validation_history["iteration"]) == [4, 8, 12]
    assert runs[0] == runs[1], "options.seed fixes the shuffling"
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    assert len(train_network(nn.Linear(3, 2), loader, "crossentropy", opts)[1].training_history) == 6
    with pytest.raises(TypeError, match="options must be a prune_core.TrainingOptions, got dict"):
        train_network(net, (x, y), "crossentropy", {"max_epochs": 1})


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_full_precision_weights(precision):
    torch.manual_seed(0)
    x, y = torch.randn(96, 2, 8, 8), torch.randint(0, 3, (96,))
    net = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    opts = TrainingOptions(
        "adam",
        max_epochs=8,
        mini_batch_size=16,
        initial_learn_rate=0.01,
        seed=0,
        metrics=["accuracy"],
        precision=precision,
        validation_data=(x, y),
    )
    before = evaluate(net, as_source(x, y), resolve_loss("crossentropy"), (), 96, torch.device("cpu"))["loss"]
    trained, info = train_network(net, (x, y), "crossentropy", opts)
    assert info.status == "completed" and info.validation_history["loss"].iloc[-1] < before
    assert all(p.dtype == torch.float32 for p in trained.parameters())


def test_channels_last_trains_in_that_layout_with_the_same_result():
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 2, (32,))
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
        opts = TrainingOptions("sgdm", max_epochs=2, mini_batch_size=8, seed=0, channels_last=channels_last)
        trained, info = train_network(net, (x, y), "crossentropy", opts)
        assert trained[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        results.append(info.training_history["loss"].to_numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)
    with pytest.raises(ValueError, match="precision 'fp8' is not supported; use one of \\('fp32', 'bf16', 'fp16'\\)"):
        TrainingOptions(precision="fp8")
    with pytest.raises(ValueError, match="precision 'fp16' needs a gradient scaler, which solver 'lbfgs' cannot"):
        TrainingOptions("lbfgs", precision="fp16")


def test_dataset_loaders_with_workers_give_the_same_training():
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    losses = []
    for workers in ({}, {"num_workers": 2, "persistent_workers": True}):
        torch.manual_seed(0)
        opts = TrainingOptions("adam", max_epochs=3, mini_batch_size=8, seed=0, shuffle="every-epoch", **workers)
        _, info = train_network(nn.Linear(3, 2), TensorDataset(x, y), "crossentropy", opts)
        losses.append(info.training_history["loss"].to_numpy())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0, got -1"):
        TrainingOptions(num_workers=-1)


def test_a_resolved_loss_passed_again_is_the_same_loss():
    resolved = resolve_loss("crossentropy")
    assert resolve_loss(resolved) is resolved
    x, y = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 2
    opts = TrainingOptions("adam", max_epochs=2, mini_batch_size=16, seed=0)
    histories = []
    for loss in ("crossentropy", resolved):
        torch.manual_seed(0)
        histories.append(train_network(nn.Linear(3, 2), (x, y), loss, opts)[1].training_history["loss"].tolist())
    assert histories[0] == histories[1]
