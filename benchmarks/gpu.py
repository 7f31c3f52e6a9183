"""``compress_network`` on a GPU: ResNet-18 at 32x32 on synthetic data, one short script.

Reports, for fp32 and for bf16 autocast (fine-tuning and scoring under
``torch.autocast("cuda", torch.bfloat16)``; weights stay fp32):

- the time per pruning iteration, split as in ``benchmarks/overhead.py`` (scoring passes,
  fine-tuning steps, validation, analysis + surgery, optimizer rebuilds, checkpoints, the rest);
- one scoring pass against one training step on the same batch (median time);
- the peak GPU memory of the whole compression and of each of those two calls
  (``torch.cuda.max_memory_allocated``).

Run on a machine with CUDA: ``python -m benchmarks.gpu`` (about two minutes on one recent card).
Writes ``benchmarks/results/gpu.md``, named after the card. Without CUDA it exits with a message
and measures nothing.
"""

from __future__ import annotations

import contextlib
import platform
import time

import torch
import torchvision

from benchmarks.criteria import LOSS
from benchmarks.overhead import median_seconds, time_split
from benchmarks.publish import publish
from prune_core import TaylorPrunableNetwork

IMAGES, BATCH = 4096, 128


def precision(name: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()


def peak_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def synced(fn):
    def run():
        fn()
        torch.cuda.synchronize()

    return run


def step_versus_scoring(mode: str) -> list[str]:
    model = torchvision.models.resnet18(num_classes=10).cuda()
    x = torch.randn(BATCH, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (BATCH,), device="cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with precision(mode):
            loss = LOSS((model(x),), (y,))
        loss.backward()
        optimizer.step()

    prunable = TaylorPrunableNetwork(model, x[:2])

    def scoring_pass():
        model.eval()
        with precision(mode):
            prunable.score_batch((x,), (y,), LOSS)

    train_step()
    step_s, score_s = median_seconds(synced(train_step), 20), median_seconds(synced(scoring_pass), 20)
    step_m, score_m = peak_mib(train_step), peak_mib(scoring_pass)
    return [
        f"| {mode} | {1e3 * step_s:.2f} | {1e3 * score_s:.2f} | {score_s / step_s:.2f} | {step_m:.0f} | {score_m:.0f} |"
    ]


def compression(mode: str) -> tuple[list[str], float]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(IMAGES, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (IMAGES,), generator=generator)
    model = torchvision.models.resnet18(num_classes=10)
    split: dict[str, float] = {}

    def run():
        with precision(mode):
            split.update(time_split(model, (x, y), (x[:512], y[:512]), goal=0.3, epochs=1))

    peak = peak_mib(run)
    per_iteration = {k: v / split["iterations"] for k, v in split.items() if k not in ("total", "iterations")}
    rows = [
        f"| {mode} | {part} | {1e3 * seconds:.1f} | {100 * seconds * split['iterations'] / split['total']:.1f}% |"
        for part, seconds in per_iteration.items()
    ]
    rows.append(
        f"| {mode} | **per iteration** ({split['iterations']:.0f} iterations) | "
        f"{1e3 * split['total'] / split['iterations']:.1f} | 100% |"
    )
    return rows, peak


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu: no CUDA device here; nothing measured (run it on a GPU machine)")
    card = torch.cuda.get_device_name()
    started = time.perf_counter()
    lines = [
        f"# compress_network on {card}\n",
        f"`python -m benchmarks.gpu`: torchvision ResNet-18 (10 classes), {IMAGES} random 32x32 images, "
        f"batch 64 in compress_network (batch {BATCH} in the step comparison), 30% in 5% steps, 1 epoch each. "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {platform.machine()}.\n",
        "## Time per pruning iteration\n",
        "| precision | part | ms per iteration | share |",
        "|---|---|---:|---:|",
    ]
    peaks = {}
    for mode in ("fp32", "bf16"):
        rows, peaks[mode] = compression(mode)
        lines += rows
    lines += [
        "",
        "Peak GPU memory of the whole compression: "
        + ", ".join(f"{mode} {mib:.0f} MiB" for mode, mib in peaks.items())
        + ".",
        "",
        "## Scoring pass against a training step (same batch)\n",
        "| precision | train step (ms) | scoring pass (ms) | ratio | train step peak (MiB) | scoring peak (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode in ("fp32", "bf16"):
        lines += step_versus_scoring(mode)
    lines.append(f"\nMeasured in {time.perf_counter() - started:.0f} s.")
    publish("gpu", lines)


if __name__ == "__main__":
    main()
