"""The fine-tuning wing: data, losses, metrics, training options and the training loop.

``as_source`` turns data in any accepted form into mini-batches (``data``); ``resolve_loss``
and ``resolve_metric`` turn names into functions (``losses``, ``metrics``); ``TrainingOptions``
is MATLAB's ``trainingOptions`` (``options``), ``Distillation`` its teacher term
(``distillation``); ``train_network`` trains once and ``fine_tune`` is the loop
``compress_network`` runs after every pruning iteration (``training``); ``Ranks`` spreads both
over the processes of a ``torch.distributed`` group (``ranks``).

These names are the wing's public interface; its modules are private.

>>> import torch, torch.nn as nn
>>> from prune_core.finetune import TrainingOptions, train_network
>>> net, info = train_network(nn.Linear(3, 2), (torch.randn(16, 3), torch.randint(0, 2, (16,))),
...                           "crossentropy", TrainingOptions("adam", max_epochs=1, mini_batch_size=8))
>>> info.status
'completed'
"""

from prune_core.finetune.data import DataSource, as_source
from prune_core.finetune.distillation import Distillation
from prune_core.finetune.losses import NAMED_LOSSES, LossFn, resolve_loss
from prune_core.finetune.metrics import Metric, resolve_metric
from prune_core.finetune.options import TrainingOptions
from prune_core.finetune.ranks import RankFailed, Ranks
from prune_core.finetune.training import (
    FineTuneOutcome,
    TrainingInfo,
    TrainingLog,
    check_ranks,
    evaluate,
    fine_tune,
    forward_outputs,
    to_device,
    train_network,
)

__all__ = [
    "NAMED_LOSSES",
    "DataSource",
    "Distillation",
    "FineTuneOutcome",
    "LossFn",
    "Metric",
    "RankFailed",
    "Ranks",
    "TrainingInfo",
    "TrainingLog",
    "TrainingOptions",
    "as_source",
    "check_ranks",
    "evaluate",
    "fine_tune",
    "forward_outputs",
    "resolve_loss",
    "resolve_metric",
    "to_device",
    "train_network",
]
