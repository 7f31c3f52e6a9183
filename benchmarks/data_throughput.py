"""Images per second of fine-tuning through ``compress_network``, against a plain PyTorch loop.

The same model, the same DataLoader and the same batch size on both sides. Data: an image
folder of PNGs on disk (scikit-learn's digits, upscaled to 32x32 RGB, 100 per class), read by
``sweeps.builders.datasets.image_folder`` with the training transforms (random crop, flip, normalise)
through one DataLoader. Model: timm's ``resnet18`` with 10 classes.

``compress_network`` runs one pruning iteration (5% of the learnables) and fine-tunes the
pruned network for three epochs; each step's wall time comes from its training history
(``time_s``: data loading, the step and its bookkeeping). The plain loop trains the same pruned
architecture for three epochs over the same loader with the same Adam settings: ``zero_grad``,
forward, cross-entropy, backward, step, reading the loss, nothing else, timed the same way.
Each pair runs ``--repeats`` times after a warm-up, the side that goes first alternating.
Images per second are the batch size over the median step (robust to the other processes of a
shared machine) and over the mean step. Target: at least 0.95x the plain loop.

    python -m benchmarks.data_throughput [--device cpu|cuda] [--repeats 3]

Writes ``benchmarks/results/data_throughput.md`` (``data_throughput_<card>.md`` on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.publish import publish
from prune_core import TrainingOptions, compress_network
from sweeps.builders.datasets import image_folder
from sweeps.builders.models import timm_model

PER_CLASS, BATCH, EPOCHS = 100, 64, 3


def write_folder(root: Path) -> Path:
    """``root/train/<digit>/*.png``: 100 digits per class, 32x32 RGB."""
    digits = load_digits()
    for label in range(10):
        folder = root / "train" / f"digit_{label}"
        folder.mkdir(parents=True)
        for k, index in enumerate(np.flatnonzero(digits.target == label)[:PER_CLASS]):
            image = Image.fromarray((digits.images[index] * (255 / 16)).astype(np.uint8)).resize((32, 32))
            image.convert("RGB").save(folder / f"{k:03d}.png")
    return root


def plain_loop(model: nn.Module, loader: DataLoader, device: torch.device, precision: str) -> list[float]:
    """``EPOCHS`` epochs of the textbook loop; the wall time of every step (data loading included)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else None
    steps, last = [], time.perf_counter()
    for x, y in (batch for _ in range(EPOCHS) for batch in loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        if autocast is None:
            loss = nn.functional.cross_entropy(model(x), y)
        else:
            with autocast:
                loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # waits for the step, as the training history's row does
        now = time.perf_counter()
        steps.append(now - last)
        last = now
    return steps


def through_compress(
    model: nn.Module, loader: DataLoader, device: torch.device, precision: str
) -> tuple[list[float], nn.Module]:
    """One pruning iteration and ``EPOCHS`` epochs of fine-tuning: the wall time of every fine-tuning step (from
    the training history's ``time_s``, data loading and bookkeeping included), and the pruned network."""
    options = TrainingOptions(
        "adam",
        initial_learn_rate=1e-3,
        max_epochs=EPOCHS,
        mini_batch_size=BATCH,
        device=str(device),
        precision=precision,
        seed=0,
    )
    pruned, info = compress_network(
        model,
        loader,
        "crossentropy",
        options,
        goal=0.05,
        increment=0.05,
        num_importance_score_iterations=2,
        verbosity="off",
    )
    times = info.training_history["time_s"].to_numpy()
    return list(np.diff(times)), pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(2)
    folder = write_folder(Path(tempfile.mkdtemp(prefix="taylorprune-throughput-")))
    data = image_folder(str(folder), validation=None, crop=32, mean=[0.5] * 3, std=[0.5] * 3, augment=True)
    loader = DataLoader(
        data["train"],
        batch_size=BATCH,
        shuffle=True,
        drop_last=False,
        generator=torch.Generator().manual_seed(0),
        pin_memory=device.type == "cuda",
    )
    torch.manual_seed(0)
    base = timm_model("resnet18", num_classes=10).to(device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    rows = []
    for precision in ("fp32", "bf16"):
        ours, plain = [], []
        _, pruned = through_compress(base, loader, device, precision)  # a warm-up, not counted
        for repeat in range(args.repeats):  # alternating which side goes first
            if repeat % 2:
                plain += plain_loop(copy.deepcopy(pruned), loader, device, precision)
            steps, pruned = through_compress(base, loader, device, precision)
            ours += steps
            if not repeat % 2:
                plain += plain_loop(copy.deepcopy(pruned), loader, device, precision)
        a, b = BATCH / statistics.median(ours), BATCH / statistics.median(plain)
        mean_a, mean_b = BATCH / statistics.fmean(ours), BATCH / statistics.fmean(plain)
        rows.append(
            f"| {precision} | {b:.1f} | {a:.1f} | **{a / b:.3f}** | {mean_b:.1f} | {mean_a:.1f} | "
            f"{mean_a / mean_b:.3f} | {len(ours)} / {len(plain)} |"
        )
    lines = [
        "# Fine-tuning throughput: compress_network against a plain PyTorch loop",
        "",
        f"torch {torch.__version__}, {card}, device {device}"
        + (", 2 threads" if device.type == "cpu" else "")
        + f". timm resnet18 (10 classes), an image folder of "
        f"{10 * PER_CLASS} PNGs at 32x32 read by one DataLoader (batch {BATCH}, random crop and flip, no "
        f"workers), Adam, {EPOCHS} epochs. Produced by `python -m benchmarks.data_throughput`; every step of "
        f"{args.repeats} alternating runs after a warm-up. Target: compress_network at least 0.95x the plain loop.",
        "",
        "| precision | plain loop, median step (images/s) | compress_network fine-tuning, median step (images/s) "
        "| ratio | plain, mean step | ours, mean step | ratio | steps (ours / plain) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *rows,
    ]
    publish("data_throughput" if device.type == "cpu" else f"data_throughput_{card.replace(' ', '_')}", lines)


if __name__ == "__main__":
    main()
