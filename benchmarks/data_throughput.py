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
Each pair runs ``--repeats`` times after a warm-up of both, the side that goes first
alternating. Images per second are the batch size over the median step (robust to the other
processes of a shared machine) and over the mean step; the ratio is also given within each
pair of runs next to each other in time, whose median and range show how much of a difference
is the machine's drift. Two checks look for work ours does beyond the plain loop: the ATen
operators per step, counted by the PyTorch profiler on both sides, and the threads alive while
``compress_network`` fine-tunes. Target: at least 0.97x the plain loop.

    python -m benchmarks.data_throughput [--device cpu|cuda] [--repeats 3]

Writes ``benchmarks/results/data_throughput.md`` (``data_throughput_<card>.md`` on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

from benchmarks.publish import publish
from prune_core import TrainingOptions, compress_network, train_network
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


def fine_tuning_options(device: torch.device, precision: str, **extra) -> TrainingOptions:
    """The fine-tuning settings both loops share (Adam at 1e-3, ``EPOCHS`` epochs of ``BATCH``), with ``extra``."""
    return TrainingOptions(
        "adam",
        initial_learn_rate=1e-3,
        max_epochs=EPOCHS,
        mini_batch_size=BATCH,
        device=str(device),
        precision=precision,
        **extra,
    )


def through_compress(
    model: nn.Module, loader: DataLoader, device: torch.device, precision: str, threads: set[str] | None = None
) -> tuple[list[float], nn.Module]:
    """One pruning iteration and ``EPOCHS`` epochs of fine-tuning: the wall time of every fine-tuning step (from
    the training history's ``time_s``, data loading and bookkeeping included), and the pruned network.
    ``threads``: filled with the names of the threads alive during fine-tuning."""

    def seen_threads(state: dict) -> None:
        if threads is not None:
            threads.update(t.name for t in threading.enumerate())

    options = fine_tuning_options(device, precision, seed=0, output_fn=seen_threads)
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


def ops_per_step(run, steps: int) -> dict[str, int]:
    """The ATen operators ``run()`` calls, counted by the profiler, per training step."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    return {e.key: e.count // steps for e in profiler.key_averages() if e.key.startswith("aten::")}


def same_work(model: nn.Module, loader: DataLoader, device: torch.device, precision: str) -> str:
    """Whether the fine-tuning loop (``train_network`` runs the one ``compress_network`` runs) calls the
    same operators per step as the plain loop, on the same network: a line for the report."""
    options = fine_tuning_options(device, precision)
    steps = EPOCHS * len(loader)
    ours = ops_per_step(lambda: train_network(copy.deepcopy(model), loader, "crossentropy", options), steps)
    plain = ops_per_step(lambda: plain_loop(copy.deepcopy(model), loader, device, precision), steps)
    extra = {k: ours.get(k, 0) - plain.get(k, 0) for k in ours.keys() | plain.keys()}
    differing = {k: v for k, v in sorted(extra.items()) if v}
    return (
        f"ATen operators per step ({precision}, torch.profiler, the fine-tuning loop against the plain one): "
        f"ours {sum(ours.values())}, plain {sum(plain.values())}; differing: {differing or 'none'}."
    )


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
    rows, notes, threads = [], [], set()
    for precision in ("fp32", "bf16"):
        ours, plain, pairs = [], [], []
        _, pruned = through_compress(base, loader, device, precision)  # warm-ups, not counted
        plain_loop(copy.deepcopy(pruned), loader, device, precision)
        for repeat in range(args.repeats):  # alternating which side goes first
            first_plain = repeat % 2 == 1
            if first_plain:
                plain_steps = plain_loop(copy.deepcopy(pruned), loader, device, precision)
            steps, pruned = through_compress(base, loader, device, precision, threads)
            if not first_plain:
                plain_steps = plain_loop(copy.deepcopy(pruned), loader, device, precision)
            ours += steps
            plain += plain_steps
            pairs.append(statistics.median(plain_steps) / statistics.median(steps))
        a, b = BATCH / statistics.median(ours), BATCH / statistics.median(plain)
        mean_a, mean_b = BATCH / statistics.fmean(ours), BATCH / statistics.fmean(plain)
        rows.append(
            f"| {precision} | {b:.1f} | {a:.1f} | **{a / b:.3f}** | {statistics.median(pairs):.3f} "
            f"({min(pairs):.3f} to {max(pairs):.3f}) | {mean_a / mean_b:.3f} | {len(ours)} / {len(plain)} |"
        )
        notes.append(same_work(pruned, loader, device, precision))
    notes.append(f"Threads alive while compress_network fine-tuned: {sorted(threads)}.")
    lines = [
        "# Fine-tuning throughput: compress_network against a plain PyTorch loop",
        "",
        f"torch {torch.__version__}, {card}, device {device}"
        + (", 2 threads" if device.type == "cpu" else "")
        + f". timm resnet18 (10 classes), an image folder of "
        f"{10 * PER_CLASS} PNGs at 32x32 read by one DataLoader (batch {BATCH}, random crop and flip, no "
        f"workers), Adam, {EPOCHS} epochs. Produced by `python -m benchmarks.data_throughput`; every step of "
        f"{args.repeats} alternating runs after a warm-up. Target: compress_network at least 0.97x the plain loop.",
        "",
        "| precision | plain loop, median step (images/s) | compress_network fine-tuning, median step (images/s) "
        "| ratio | ratio within each run pair: median (range) | ratio of mean steps | steps (ours / plain) |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        *(f"- {note}" for note in notes),
    ]
    publish("data_throughput" if device.type == "cpu" else f"data_throughput_{card.replace(' ', '_')}", lines)


if __name__ == "__main__":
    main()
