"""The unpruned network of a job: trained once and cached, or loaded from a user's checkpoint.

``base.checkpoint``, or a weights file the model group names (``model.checkpoint`` of timm,
``model.weights_path`` of torchvision), is the trained network: nothing is trained then.
Otherwise the base network is trained with ``base.training`` (with a progress bar) and cached.

The cache key is a SHA-256 of the config that determines the trained weights (``data``,
``model``, ``base.training``, ``loss`` and ``seed``), so every trial of a study that varies only
pruning or fine-tuning settings reuses one base network. Files are written in the safe
format of ``prune_core.save_pruned`` (temporary name, then rename), so concurrent jobs never
read half a file. A network whose weights are not all finite is never cached (the job fails,
naming the cause), and a cache file that cannot be read is trained again and replaced, after a
warning.

>>> from omegaconf import OmegaConf
>>> a = OmegaConf.create({"data": {"n": 1}, "model": {"w": 2}, "base": {"training": {}}, "seed": 0})
>>> cache_key(a) == cache_key(OmegaConf.merge(a, {"pruning": {"goal": 0.5}}))
True
>>> cache_key(a) == cache_key(OmegaConf.merge(a, {"seed": 1}))
False
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prune_core import load_pruned, save_pruned, train_network
from prune_core.finetune import Ranks
from sweeps.builders.datasets import folder_identity
from sweeps.job.config import training_options
from sweeps.job.data import JobData
from sweeps.layout import WEIGHT_FILE_KEYS, load_checkpoint
from sweeps.process.devices import job_device, job_index

log = logging.getLogger(__name__)


def cache_key(cfg: DictConfig) -> str:
    """Hash of what determines the trained base network."""
    keyed = {name: OmegaConf.to_container(cfg[name], resolve=True) for name in ("data", "model")}
    keyed["training"] = OmegaConf.to_container(cfg.base.training, resolve=True)
    keyed["seed"], keyed["loss"] = cfg.seed, cfg.get("loss")
    if cfg.data.get("root"):  # data on disk: its files (names, sizes, times) are part of what was trained on
        keyed["files"] = folder_identity(cfg.data.root)
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def base_network(cfg: DictConfig, data: JobData, build: Callable[[], nn.Module]) -> tuple[nn.Module, str]:
    """The trained unpruned network and where it came from (a checkpoint, the cache, or training now)."""
    if cfg.base.checkpoint:
        return load_checkpoint(cfg.base.checkpoint, build), f"checkpoint {cfg.base.checkpoint}"
    weights = [cfg.model.get(key) for key in WEIGHT_FILE_KEYS if cfg.model.get(key)]
    if weights:  # the builder loaded the user's trained weights
        return build(), f"model weights {weights[0]}"
    folder = Path(cfg.base.cache_dir)
    key = cache_key(cfg)  # once: for data on disk it walks the folder
    path = folder / f"base_{key}.pt"
    if Ranks.current().from_main(path.is_file()):  # rank 0's answer: every rank of a job trains, or none
        try:
            return load_pruned(path, build), f"cache {path}"
        except Exception as exc:  # a corrupt or foreign file: never fail every trial on it
            log.warning(
                f"The cached base network {path} cannot be read ({type(exc).__name__}: {exc}); training it again"
            )
    torch.manual_seed(cfg.seed)
    model = build()
    options = training_options(
        cfg, "base.training", device=job_device(cfg.base.training.get("device", "auto"), job_index())
    )
    log.info(f"Training the base network ({options.max_epochs} epochs); cached as {path}")
    train_network(model, data.train, cfg.loss, options, progress=True)
    broken = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(tensor.isfinite().all())
    ]
    if broken:
        raise ValueError(
            f"the base network trained to non-finite weights ({broken[:3]}): not cached; lower "
            f"base.training.initial_learn_rate={options.initial_learn_rate} or check the data"
        )
    folder.mkdir(parents=True, exist_ok=True)
    save_pruned(model, path, extra={"key": key})
    return model, f"trained, cached {path}"
