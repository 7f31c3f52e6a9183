"""Data-parallel pruning: the time of a pruning iteration on 1 and on N processes, and what scales.

``compress_network`` runs on every rank of a ``torch.distributed`` group (gloo on CPUs, one core per
process; NCCL on GPUs, one GPU per process), spawned here with ``torch.multiprocessing``. Each run
prunes a ResNet (torchvision's ResNet-18 on CPUs, ResNet-50 on GPUs, 10 classes) in 5% steps with
one fine-tuning epoch per iteration; its pruning history splits every iteration into scoring,
analysis + surgery (with the surgery check) and fine-tuning, and its ``seconds`` hold the validation
and checkpoint time.

Reported per process count: seconds per pruning iteration by phase (means over the iterations, rank
0's clock), and the scaling efficiency of fine-tuning and of scoring, ``t(1) / (N * t(N))``: 1.0 is
perfect, what a phase that does not scale gets is ``1 / N``. The surgery, its check and the
checkpoints stay serial: every rank does the surgery, rank 0 writes the checkpoint.

Data: on CPUs, scikit-learn's handwritten digits (1,797 images of 8x8, upscaled to 32x32 and
repeated on 3 channels); on GPUs, as many random 224x224 images as ``--images`` (timing only).

    python -m benchmarks.distributed                         # 1 and 2 processes on this CPU
    python -m benchmarks.distributed --device cuda           # 1 GPU and every GPU of the machine

Writes ``benchmarks/results/distributed_cpu.md`` (or ``distributed_<card>.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from benchmarks.publish import publish
from prune_core import TrainingOptions, compress_network

PHASES = ("scoring_s", "surgery_s", "fine_tuning_s")


def digits_32() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits, 32x32 on 3 channels, scaled to [0, 1]."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    images = nn.functional.interpolate(images, size=32, mode="bilinear").repeat(1, 3, 1, 1)
    return images, torch.tensor(digits.target)


def data(device: str, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    if device == "cpu":
        return digits_32()
    generator = torch.Generator().manual_seed(0)
    return torch.randn(images, 3, 224, 224, generator=generator), torch.randint(0, 10, (images,), generator=generator)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    x, y = data(args.device, args.images)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(num_classes=10)
    options = TrainingOptions(
        "sgdm",
        initial_learn_rate=0.01,
        max_epochs=1,
        mini_batch_size=args.batch,
        shuffle="every-epoch",
        metrics=["accuracy"],
        seed=0,
        validation_data=(x[:512], y[:512]),
        validation_frequency=10_000,
        device=args.device,
    )
    with tempfile.TemporaryDirectory() as folder:
        pruned, info = compress_network(
            model,
            x,
            y,
            "crossentropy",
            options,
            goal=0.05 * args.iterations,
            increment=0.05,
            num_importance_score_iterations=args.score_batches,
            checkpoint_path=folder,
            verbosity="off",
        )
    plain = plain_epoch(pruned, x, y, args.batch, world, rank)
    if rank == 0:
        rows = info.pruning_history.iloc[1:]
        result = {phase: float(rows[phase].mean()) for phase in PHASES}
        result["plain_epoch_s"] = plain
        result["iterations"] = len(rows)
        result["validation_s"] = info.seconds.get("validation", 0.0) / len(rows)
        steps = result["fine_tuning_s"] - result["validation_s"] - info.seconds.get("optimizer", 0.0) / len(rows)
        result["training_s"] = steps
        result["checkpoints_s"] = info.seconds["checkpoints"] / len(rows)
        result["first_channels"] = info.pruning_history.filter(like="channels[").iloc[1].tolist()
        Path(out).write_text(json.dumps(result))
    if world > 1:
        dist.destroy_process_group()


def plain_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, world: int, rank: int) -> float:
    """Seconds of one epoch of a plain PyTorch loop on ``model`` (the pruned network): ``DistributedDataParallel``
    and a ``DistributedSampler`` on ``world`` processes, the same share of each global batch as above."""
    device = next(model.parameters()).device
    sampler = DistributedSampler(TensorDataset(x, y), world, rank, shuffle=True, seed=0) if world > 1 else None
    loader = DataLoader(TensorDataset(x, y), batch_size=batch // world, sampler=sampler, shuffle=sampler is None)
    network = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    network.train()
    if world > 1:
        dist.barrier()
    started = time.perf_counter()
    for inputs, targets in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(network(inputs.to(device)), targets.to(device))
        loss.backward()
        optimizer.step()
        float(loss.detach())  # as a loop that logs its loss does
    return time.perf_counter() - started


def measure(world: int, args: argparse.Namespace) -> dict:
    """``compress_network`` on ``world`` processes; rank 0's per-iteration seconds by phase."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "result.json")
        mp.spawn(_rank, args=(world, _free_port(), args, out), nprocs=world)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--processes", type=int, nargs="+", help="process counts (default: 1 and 2, or 1 and every GPU)"
    )
    parser.add_argument("--model", choices=["resnet18", "resnet50"], help="default: resnet18 on CPU, resnet50 on GPU")
    parser.add_argument("--threads", type=int, default=1, help="threads per process on a CPU (default 1)")
    parser.add_argument("--batch", type=int, default=64, help="global mini-batch size (default 64)")
    parser.add_argument("--images", type=int, default=8192, help="random images on a GPU (default 8192)")
    parser.add_argument("--iterations", type=int, default=3, help="pruning iterations (default 3)")
    parser.add_argument("--score-batches", type=int, default=8, help="scoring mini-batches (default 8)")
    args = parser.parse_args()
    args.model = args.model or ("resnet18" if args.device == "cpu" else "resnet50")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    counts = args.processes or ([1, 2] if args.device == "cpu" else sorted({1, torch.cuda.device_count()}))
    results = {world: measure(world, args) for world in counts}
    one = results[counts[0]]
    # the first removal comes before any fine-tuning: the same scores, so the same units, on any count
    assert all(r["first_channels"] == one["first_channels"] for r in results.values()), "first removal differs"
    if args.device == "cpu":
        where, name = f"{platform.processor() or platform.machine()}, {args.threads} thread(s) per process", "cpu"
    else:
        where = torch.cuda.get_device_name()
        name = where.lower().replace(" ", "_")
    lines = [
        f"# Data-parallel pruning ({where})",
        "",
        f"`python -m benchmarks.distributed --device {args.device}`: {args.model}, {args.iterations} pruning "
        f"iterations of 5%, one fine-tuning epoch each, global batch {args.batch}, {args.score_batches} "
        "scoring batches; seconds per pruning iteration (rank 0), scaling efficiency t(1) / (N t(N)). "
        "Every process count removed the same units in the first iteration (later ones follow fine-tunings "
        "whose BatchNorm statistics are each process's share of the batch).",
        "",
        "| processes | scoring s | fine-tuning: steps s | fine-tuning: validation s | analysis + surgery + check s "
        "| checkpoint wait s | iteration s | speed-up | efficiency: fine-tuning steps | efficiency: scoring "
        "| plain DDP loop: epoch s | efficiency: plain DDP loop |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_total = sum(one[p] for p in PHASES)
    for world, r in results.items():
        total = sum(r[p] for p in PHASES)
        fine = one["training_s"] / (world * r["training_s"])
        scoring = one["scoring_s"] / (world * r["scoring_s"])
        plain = one["plain_epoch_s"] / (world * r["plain_epoch_s"])
        lines.append(
            f"| {world} | {r['scoring_s']:.2f} | {r['training_s']:.2f} | {r['validation_s']:.2f} | "
            f"{r['surgery_s']:.2f} | "
            f"{r['checkpoints_s']:.3f} | {total:.2f} | {base_total / total:.2f}x | {fine:.2f} | {scoring:.2f} | "
            f"{r['plain_epoch_s']:.2f} | {plain:.2f} |"
        )
    serial = np.mean([r["surgery_s"] for r in results.values()])
    lines += [
        "",
        f"Serial on every rank: the analysis, surgery and its check, {serial:.2f} s per iteration; rank 0 "
        "alone writes the checkpoint (in the background) and logs. The plain DDP loop is the peer: one epoch "
        "of the returned network with PyTorch's DistributedDataParallel and DistributedSampler, nothing else "
        "(its network is the smallest of the run, so compare efficiencies, not seconds).",
    ]
    publish(f"distributed_{name}", lines)


if __name__ == "__main__":
    main()
