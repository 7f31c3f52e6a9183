"""Breadth beyond timm's CNNs: detectors, optical flow and vision transformers whose forward is not
plain fx-traceable, pruned by this project and by Torch-Pruning.

The models (random weights, nothing downloaded):

- torchvision's detectors in eval mode, called as users call them: a list of images in, a list of
  dicts of boxes, scores and labels out (``fasterrcnn_mobilenet_v3_large_fpn``,
  ``retinanet_resnet50_fpn``, ``ssdlite320_mobilenet_v3_large``, ``fcos_resnet50_fpn``,
  ``keypointrcnn_resnet50_fpn``);
- torchvision's ``raft_small`` (two images in, iterative refinement in a Python loop),
  ``vit_b_16``, ``swin_t`` and ``maxvit_t``;
- timm's ``efficientformer_l1``, ``levit_128s``, ``coat_lite_tiny`` and ``nf_resnet26``;
- Hugging Face's BERT-base (``BertForSequenceClassification``, 128 tokens) and ViT-base
  (``ViTForImageClassification``), built from their default configs.

The protocol is ``timm_zoo``'s (``timm_zoo.ours``): analyse (``ChannelGraph.build``, the state and
modes checked unchanged), remove a random 20% of every channel group, check masked equivalence and
the parameter count; Torch-Pruning 1.6 (``MetaPruner``, random importance, ratio 0.2, the
classifiers and detection heads' final layers protected) on the same model.

Where equivalence is compared: on every output tensor of the model, as the built-in surgery check
does. For the detectors that is after post-processing (score threshold, top-k, NMS), which the
tiny numeric differences between zeroed and removed channels can turn on random weights; so for
them the check compares the raw predictions of the heads in ``COMPARE_AT`` (before anchor
decoding, top-k and NMS; ``compare_at`` of the built-in check), and the reason says whether the
post-processed outputs matched as well. A detector is ``pruned and equivalent`` only where those
predictions match.

Each tool runs on each model in a subprocess of its own, stopped after ``LIMIT_S``. Run:
``python -m benchmarks.model_zoo [--models ...]`` (the ``bench`` extra). Writes
``benchmarks/results/model_zoo.csv`` and ``model_zoo.md``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pandas as pd
import torch
from torch import nn

from benchmarks import timm_zoo

LIMIT_S = 240.0  # per tool and model, the model's building and forward passes included
DETECTORS = {
    "fasterrcnn_mobilenet_v3_large_fpn": 160,
    "retinanet_resnet50_fpn": 160,
    "ssdlite320_mobilenet_v3_large": 160,
    "fcos_resnet50_fpn": 160,
    "keypointrcnn_resnet50_fpn": 160,
}
# The heads whose raw predictions (before anchor decoding, top-k and NMS) the check compares: their
# outputs keep every channel, and every pruned layer of the backbone and feature pyramid feeds them.
# The two-stage detectors' box and keypoint heads read the proposals, which post-processing picks.
COMPARE_AT = {
    "fasterrcnn_mobilenet_v3_large_fpn": ["rpn.head"],
    "retinanet_resnet50_fpn": ["head"],
    "ssdlite320_mobilenet_v3_large": ["head"],
    "fcos_resnet50_fpn": ["head"],
    "keypointrcnn_resnet50_fpn": ["rpn.head"],
}
TORCHVISION = {"raft_small": 128, "vit_b_16": 224, "swin_t": 64, "maxvit_t": 224}
TIMM = {"efficientformer_l1": 224, "levit_128s": 224, "coat_lite_tiny": 224, "nf_resnet26": 64}
HUGGING_FACE = {"bert_base": 128, "hf_vit_base": 224}
MODELS = [*DETECTORS, *TORCHVISION, *TIMM, *HUGGING_FACE]


def build(name: str) -> tuple[nn.Module, tuple]:
    """The model (eval mode, seeded random weights) and its example as positional arguments."""
    torch.manual_seed(0)
    if name in DETECTORS:
        from torchvision.models import detection

        classes = 2 if name.startswith("keypoint") else 5
        model = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=classes)
        size = DETECTORS[name]
        return model.eval(), ([torch.rand(3, size, size), torch.rand(3, size, size - 32)],)
    if name in TORCHVISION:
        import torchvision

        size = TORCHVISION[name]
        if name == "raft_small":
            model = torchvision.models.optical_flow.raft_small(weights=None)
            return model.eval(), (torch.rand(1, 3, size, size), torch.rand(1, 3, size, size))
        return getattr(torchvision.models, name)(weights=None, num_classes=10).eval(), (torch.rand(2, 3, size, size),)
    if name in HUGGING_FACE:
        import transformers

        size = HUGGING_FACE[name]
        if name == "bert_base":
            model = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=10))
            return model.eval(), (torch.randint(0, model.config.vocab_size, (2, size)),)
        model = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=10))
        return model.eval(), (torch.rand(2, 3, size, size),)
    import timm

    size = TIMM[name]
    return timm.create_model(name, pretrained=False, num_classes=10).eval(), (torch.rand(2, 3, size, size),)


def call(model: nn.Module, example):
    """``model`` on ``example``: a tensor, a tuple of positional arguments or a dict of keyword arguments."""
    if isinstance(example, dict):
        return model(**example)
    return model(*example) if isinstance(example, tuple) else model(example)


def torch_pruning(model: nn.Module, example) -> dict:
    """``timm_zoo.torch_pruning`` for any input and output structure (the example as ``call`` takes it; Torch-Pruning
    is given that call, and every tensor of the output, dataclasses included): the network runs and lost
    parameters."""
    import torch_pruning as tp

    from prune_core.channels import tensors_in

    pruned = copy.deepcopy(model)
    heads = [m for m in pruned.modules() if getattr(m, "out_features", None) == 10]
    heads += [m for name, m in pruned.named_modules() if name.endswith(("cls_logits", "bbox_pred", "cls_score"))]
    before = timm_zoo._params(pruned)
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        pruned,
        example,
        importance=tp.importance.RandomImportance(),
        pruning_ratio=timm_zoo.FRACTION,
        ignored_layers=heads,
        forward_fn=call,
        output_transform=tensors_in,
    )
    pruner.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        out = tensors_in(call(pruned.eval(), example))
    runs = bool(out) and timm_zoo._params(pruned) < before
    return {
        "tp_s": round(seconds, 3),
        "tp_params_after": timm_zoo._params(pruned),
        "tp": "pruned" if runs else "error",
        "tp_reason": "" if runs else "no parameters removed",
    }


def measure(model: nn.Module, example, tool: str, compare_at: list[str] | tuple[str, ...] = ()) -> None:
    """Prune ``model`` with ``tool`` ("ours" or "tp") on ``example`` (positional arguments as a tuple, or keyword
    arguments as a dict); prints the result as one JSON line (read by ``run_model``)."""
    runs: dict[str, Callable[[], dict]] = {
        "ours": lambda: timm_zoo.ours(model, example, compare_at),
        "tp": lambda: torch_pruning(model, example),
    }
    try:
        row = {"params": timm_zoo._params(model)} | runs[tool]()
    except Exception as exc:  # a tool failing on a model is a result, not a crash
        row = {tool: "error", f"{tool}_reason": f"{type(exc).__name__}: {str(exc)[:200]}"}
    print(json.dumps(row), flush=True)


def one(name: str, tool: str) -> None:
    """Measure one model with one tool, in this process (``run_model`` starts it)."""
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    model, example = build(name)
    measure(model, example, tool, COMPARE_AT.get(name, ()))


def run_model(name: str, benchmark: str = "benchmarks.model_zoo", limit_s: float = LIMIT_S) -> dict:
    """Each tool in a process of its own (``python -m <benchmark> --one <name> --tool <tool>``), stopped after
    ``limit_s``."""
    row = {"model": name}
    for tool in ("ours", "tp"):
        command = [sys.executable, "-m", benchmark, "--one", name, "--tool", tool]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s)
        except subprocess.TimeoutExpired:
            row |= {tool: f"over {limit_s:.0f} s", f"{tool}_reason": "stopped at the time limit"}
            continue
        found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if found:
            row |= found[-1]
        else:
            said = done.stderr.strip().splitlines() or [f"the process ended with code {done.returncode}"]
            killed = " (killed: out of memory on this 24 GiB machine)" if done.returncode in (-9, 137) else ""
            row |= {tool: "error", f"{tool}_reason": said[-1][:160] + killed}
    return row


def arguments(description: str, models: list[str], limit_s: float) -> argparse.Namespace:
    """The command line every model zoo takes: ``--models`` (a subset of ``models``), ``--limit`` (seconds per tool
    and model), ``--out``, and the hidden ``--one``/``--tool`` of the process measuring one model."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--tool", choices=("ours", "tp"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="*", choices=models, default=models, metavar="MODEL", help="default: all")
    parser.add_argument("--limit", type=float, default=limit_s, help=f"seconds per tool and model ({limit_s:.0f})")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    return parser.parse_args()


def header(benchmark: str, libraries: list[ModuleType], settings: str) -> str:
    """A zoo's results header: the libraries' versions, the machine, ``settings`` and the command that ran.

    >>> header("benchmarks.model_zoo", [torch], "random weights").startswith(f"torch {torch.__version__}, ")
    True
    """
    versions = ", ".join(f"{library.__name__.replace('_', '-')} {library.__version__}" for library in libraries)
    return (
        f"{versions}, {platform.processor() or platform.machine()}, 2 threads; {settings}. "
        f"Produced by `python -m {benchmark} {' '.join(sys.argv[1:])}`."
    )


def measure_built(build: Callable[[str], tuple[nn.Module, object]], name: str, tool: str) -> None:
    """``measure`` on ``build(name)`` (the model and its example), in this process with 2 threads and no warnings:
    what a zoo's ``--one`` process runs."""
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    model, example = build(name)
    measure(model, example, tool)


def zoo_main(
    description: str,
    benchmark: str,
    models: list[str],
    one: Callable[[str, str], None],
    libraries: tuple[str, ...],
    described: str,
    columns: tuple[str, ...] = ("model", "params"),
    annotate: Callable[[pd.DataFrame], None] | None = None,
) -> None:
    """A catalogue zoo's command line (``arguments``, 60 s per tool and model by default). ``--one`` runs
    ``one(name, tool)`` in this process; otherwise every model is measured (``run_models``), ``annotate(table)``
    adds the zoo's own columns, and ``<name>.csv`` and ``<name>.md`` are written in ``--out`` (``columns``, then
    the results) under a ``header`` naming ``libraries`` (imported only here: a ``--one`` process needs none of
    them) and the settings: ``described``, then the random 20% and the time limit."""
    args = arguments(description, models, 60.0)
    if args.one:
        one(args.one, args.tool)
        return
    table = run_models(args.models, benchmark, args.limit)
    if annotate is not None:
        annotate(table)
    settings = (
        f"{described}; {timm_zoo.FRACTION:.0%} of every group removed at random; each tool stopped after "
        f"{args.limit:.0f} s per model"
    )
    title = header(benchmark, [importlib.import_module(library) for library in libraries], settings)
    timm_zoo.write_tables(table, list(columns), Path(args.out), benchmark.rpartition(".")[2], title)


def run_models(names: list[str], benchmark: str, limit_s: float) -> pd.DataFrame:
    """``run_model`` on each model, a line printed as each ends."""
    rows = []
    for name in names:
        row = run_model(name, benchmark, limit_s)
        print({k: row.get(k) for k in ("model", "ours", "ours_analysis_s", "ours_reason", "tp", "tp_s")}, flush=True)
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    args = arguments(__doc__.splitlines()[0], MODELS, LIMIT_S)
    if args.one:
        one(args.one, args.tool)
        return
    import timm
    import torch_pruning as tp
    import torchvision

    table = run_models(args.models, "benchmarks.model_zoo", args.limit)
    settings = f"random weights; {timm_zoo.FRACTION:.0%} of every group removed at random"
    title = header("benchmarks.model_zoo", [torchvision, timm, torch, tp], settings)
    timm_zoo.write_tables(table, ["model", "params"], Path(args.out), "model_zoo", title)


if __name__ == "__main__":
    main()
