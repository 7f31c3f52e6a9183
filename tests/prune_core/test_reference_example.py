"""The reference example reproduced: a sequence CNN trained on MNIST-1D, compressed to the maximum in 5% steps."""

import pandas as pd
import pytest
import torch
from torch import nn

from prune_core import TrainingOptions, compress_network, train_network
from sweeps.builders.datasets import mnist1d_tensors
from sweeps.builders.models import reference_cnn1d


@pytest.mark.slow
def test_reference_example_compresses_to_the_maximum(capsys):
    torch.manual_seed(0)
    data = mnist1d_tensors(seed=42)
    net = reference_cnn1d()  # Conv1d+BN+ReLU twice, global average pooling, a fully connected classifier
    train = TrainingOptions("adam", max_epochs=15, mini_batch_size=64, initial_learn_rate=3e-3, seed=0)
    train_network(net, (data["x_train"], data["y_train"]), "crossentropy", train)
    options = TrainingOptions(
        "adam",
        max_epochs=1,
        mini_batch_size=64,
        metrics=["accuracy"],
        validation_data=(data["x_test"], data["y_test"]),
        validation_frequency=20,
        seed=0,
    )
    pruned, info = compress_network(net, data["x_train"], data["y_train"], "crossentropy", options, increment=0.05)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"Compressed network has {100 * info.reduction:.1f}% fewer learnable parameters."
    assert printed[1] == 'Pruning compressed 5 layers: "0","1","3","4","8"'
    assert info.stop_reason == "Maximum compression reached."
    assert info.pruned_layers == ["0", "1", "3", "4", "8"]  # both convs, both batch norms, the classifier
    rows = info.pruning_history
    assert rows["iteration"].tolist() == list(range(len(rows))) and len(rows) >= 15
    steps = pd.Series(range(1, len(rows)), index=rows.index[1:])
    assert (rows["reduction"].iloc[1:-1] >= 0.05 * steps.iloc[:-1] - 1e-9).all(), "iteration k: k x 5% gone in all"
    assert (rows["reduction"].diff().iloc[1:] > 0).all(), "every iteration removes something"
    assert pruned[0].out_channels == 1 and pruned[3].out_channels == 1
    assert rows["validation_accuracy"].iloc[0] > 85, "the trained network is good before pruning"
    assert rows.loc[rows["reduction"] < 0.5, "validation_accuracy"].min() > 85, "half the learnables go cheaply"
    assert set(info.training_history["pruning_iteration"]) == set(range(1, len(rows)))
    assert isinstance(pruned, nn.Sequential) and pruned(data["x_test"][:4]).shape == (4, 10)
