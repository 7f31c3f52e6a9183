"""Breadth: one model per convolutional family of timm, pruned by this project and by Torch-Pruning.

Each model is built by timm with random weights (``num_classes=10``, nothing downloaded) and
run at 64x64 (a few families need a larger input: ``INPUT_SIZE``). This project:

1. analyses it (``ChannelGraph.build``), and checks the model's ``state_dict`` and modes are
   bit-identical afterwards;
2. removes a random 20% of every channel group's removable units (``remove_units`` with the
   built-in check off, so that a wrong surgery shows here instead of being refused);
3. checks masked equivalence: the pruned outputs equal the original's with the removed
   channels zeroed at their consumers (``prune_core.channels.verify``), and the parameter count equals
   the analysis' prediction.

Each family is one of: ``pruned and equivalent``, ``refused`` (nothing prunable; the main
reason), ``error``, ``silently wrong`` (the check above fails) or ``over 60 s``. (Where a
LayerNorm over channels loses channels, the reference normalises over the kept ones: see
``prune_core.channels.verify``.) Torch-Pruning
(``MetaPruner``, random importance, ratio 0.2, the classifier protected) runs on the same model
in the same process; it has no equivalence check, so its outcome is ``pruned`` (the network
runs, keeps its output shape and lost parameters), ``error`` or ``over 60 s``.

``--set transformers`` runs one model per transformer or hybrid family instead, at its own input size;
Torch-Pruning then gets its ViT settings (``num_heads`` of every fused ``qkv``, whole heads pruned).

Every model runs in a subprocess of its own with a time limit. Run:
``python -m benchmarks.timm_zoo [--set transformers]`` (needs the ``bench`` extra: timm, torch-pruning).
Writes ``benchmarks/results/timm_zoo.csv`` and ``timm_zoo.md`` (``timm_zoo_transformers.*``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

# One small model per convolutional family (family: model).
FAMILIES = {
    "resnet": "resnet18",
    "resnet-d": "resnet18d",
    "resnet-t": "resnet10t",
    "resnet-aa": "resnetaa50",
    "resnet-rs": "resnetrs50",
    "resnetblur": "resnetblur18",
    "resnext": "resnext26ts",
    "wide-resnet": "wide_resnet50_2",
    "regnetx": "regnetx_002",
    "regnety": "regnety_002",
    "regnetz": "regnetz_b16",
    "regnetv": "regnetv_040",
    "efficientnet": "efficientnet_b0",
    "efficientnet-lite": "efficientnet_lite0",
    "efficientnetv2": "efficientnetv2_rw_t",
    "tinynet": "tinynet_e",
    "mobilenetv1": "mobilenetv1_100",
    "mobilenetv2": "mobilenetv2_050",
    "mobilenetv3": "mobilenetv3_small_050",
    "mobilenetv4": "mobilenetv4_conv_small",
    "mobilenet-edgetpu": "mobilenet_edgetpu_100",
    "ghostnet": "ghostnet_050",
    "ghostnetv2": "ghostnetv2_100",
    "repghostnet": "repghostnet_050",
    "rexnet": "rexnet_100",
    "mixnet": "mixnet_s",
    "mnasnet": "mnasnet_050",
    "semnasnet": "semnasnet_050",
    "spnasnet": "spnasnet_100",
    "fbnet": "fbnetc_100",
    "hardcorenas": "hardcorenas_a",
    "lcnet": "lcnet_050",
    "dla": "dla34",
    "dpn": "dpn68",
    "densenet": "densenet121",
    "densenetblur": "densenetblur121d",
    "cspnet": "cspresnet50",
    "cs3darknet": "cs3darknet_s",
    "cspdarknet": "cspdarknet53",
    "darknet": "darknet53",
    "res2net": "res2net50_14w_8s",
    "res2next": "res2next50",
    "resnest": "resnest14d",
    "hrnet": "hrnet_w18_small",
    "selecsls": "selecsls42",
    "vovnet": "ese_vovnet19b_dw",
    "tresnet": "tresnet_m",
    "convnext": "convnext_atto",
    "convnextv2": "convnextv2_atto",
    "inception-next": "inception_next_tiny",
    "nfnet": "nf_resnet26",
    "nf-regnet": "nf_regnet_b0",
    "repvgg": "repvgg_a0",
    "mobileone": "mobileone_s0",
    "gernet": "gernet_s",
    "resnetv2 (BiT)": "resnetv2_50",
    "xception": "xception41",
    "legacy-xception": "legacy_xception",
    "inception": "inception_v3",
    "senet": "legacy_seresnet18",
    "seresnext": "seresnext26d_32x4d",
    "skresnet": "skresnet18",
    "ecaresnet": "ecaresnet26t",
    "vgg": "vgg11_bn",
    "hgnet": "hgnet_tiny",
    "hgnetv2": "hgnetv2_b0",
    "starnet": "starnet_s1",
    "rdnet": "rdnet_tiny",
    "poolformer": "poolformer_s12",
    "repvit": "repvit_m0_9",
    "fasternet": "fasternet_t0",
    "mambaout": "mambaout_femto",
    "edgenext": "edgenext_xx_small",
}
# One small model per transformer or hybrid family (``--set transformers``), at its own input size.
TRANSFORMER_FAMILIES = {
    "vit": "vit_tiny_patch16_224",
    "deit": "deit_tiny_patch16_224",
    "deit3": "deit3_small_patch16_224",
    "flexivit": "flexivit_small",
    "vit-relpos": "vit_relpos_small_patch16_224",
    "eva02": "eva02_tiny_patch14_224",
    "beit": "beitv2_base_patch16_224",
    "cait": "cait_xxs24_224",
    "pit": "pit_ti_224",
    "twins": "twins_svt_small",
    "xcit": "xcit_nano_12_p16_224",
    "swin": "swin_tiny_patch4_window7_224",
    "maxvit": "maxvit_nano_rw_256",
    "coat": "coat_lite_tiny",
    "levit": "levit_128s",
    "efficientformer": "efficientformer_l1",
    "mobilevit": "mobilevit_xxs",
}
SETS = {"cnn": (FAMILIES, "timm_zoo"), "transformers": (TRANSFORMER_FAMILIES, "timm_zoo_transformers")}
INPUT_SIZE = {"inception_v3": 96, "tresnet_m": 96, "legacy_xception": 96, "hrnet_w18_small": 64}
LIMIT_S = 60.0
FRACTION = 0.2


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_share(graph, fraction: float, seed: int = 0) -> list[int]:
    """A random ``fraction`` of every channel group's removable units, every layer keeping one."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[int]] = {}
    for unit in graph.removable_units():
        groups.setdefault(unit.producers, []).append(unit.id)
    chosen = [uid for ids in groups.values() for uid in rng.permutation(ids)[: int(round(fraction * len(ids)))]]
    return graph.greedy_removal(chosen)


def _state_unchanged(model: nn.Module, state: dict, modes: list[bool]) -> bool:
    now = model.state_dict()
    return (
        now.keys() == state.keys()
        and all(torch.equal(now[k], v) for k, v in state.items())
        and [m.training for m in model.modules()] == modes
    )


def ours(model: nn.Module, x, compare_at: Sequence[str] = ()) -> dict:
    """This project's protocol on ``model`` with example ``x``; with ``compare_at`` (module names, as in
    ``ChannelGraph.build``) equivalence is checked on those modules' outputs, and whether the network's
    own (post-processed) outputs matched as well goes into the reason."""
    from prune_core import ChannelGraph, remove_units
    from prune_core.channels import NETWORK_OUTPUT, SurgeryMismatch, check_equivalent, reference_outputs

    state, modes = copy.deepcopy(model.state_dict()), [m.training for m in model.modules()]
    start = time.perf_counter()
    graph = ChannelGraph.build(model, x, compare_at=compare_at)
    analysis_s = time.perf_counter() - start
    row = {
        "ours_analysis_s": round(analysis_s, 3),
        "ours_max_reduction": round(graph.learnables_removed(graph.max_removal()) / graph.total_learnables, 3),
        "ours_unchanged": _state_unchanged(model, state, modes),
        "ours_units": len(graph.units),
        "ours_removable": len(graph.removable_units()),
    }
    chosen = random_share(graph, FRACTION)
    if not chosen:
        inner = [u for u in graph.units if u.reasons != (NETWORK_OUTPUT,)]  # not just the network's outputs
        reasons = pd.Series([r for u in inner for r in u.reasons]).value_counts()
        why = reasons.index[0][:120] if len(reasons) else f"no filters seen; not understood: {graph.unsupported[:3]}"
        return row | {"ours": "refused", "ours_reason": why}
    reference = reference_outputs(model, graph, chosen)
    pruned = copy.deepcopy(model)
    start = time.perf_counter()
    remove_units(pruned, graph, chosen, verify=False)
    row["ours_surgery_s"] = round(time.perf_counter() - start, 3)
    row["ours_params_after"] = _params(pruned)
    try:
        check_equivalent(pruned, graph, chosen, reference)
        exact = _params(pruned) == graph.total_learnables - graph.learnables_removed(chosen)
        outcome = "pruned and equivalent" if exact else "silently wrong"
        reason = "" if exact else "parameter count differs from the analysis"
    except SurgeryMismatch as exc:
        outcome, reason = "silently wrong", str(exc)[:160]
    if compare_at:  # the post-processed outputs too, for the record: they may pick other boxes
        outputs = dataclasses.replace(graph, compare_at=())
        try:
            check_equivalent(pruned, outputs, chosen, reference_outputs(model, outputs, chosen))
            after = "outputs equal"
        except SurgeryMismatch as exc:
            after = f"outputs after post-processing differ ({str(exc)[:90]})"
        reason = f"{reason or 'equal'} at {', '.join(compare_at)}; {after}"
    return row | {"ours": outcome, "ours_reason": reason}


def torch_pruning(model: nn.Module, x: torch.Tensor, shape) -> dict:
    import torch_pruning as tp

    from benchmarks.criteria import tp_attention_settings

    pruned = copy.deepcopy(model)
    classifier = pruned.get_classifier() if hasattr(pruned, "get_classifier") else None
    ignored = [
        m for m in pruned.modules() if getattr(m, "out_features", None) == 10 or getattr(m, "out_channels", None) == 10
    ]
    if isinstance(classifier, nn.Module):
        ignored.append(classifier)
    before = _params(pruned)
    settings, put_back = tp_attention_settings(pruned, FRACTION)  # its ViT settings, where it has attention
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        pruned,
        x,
        importance=tp.importance.RandomImportance(),
        pruning_ratio=FRACTION,
        ignored_layers=ignored,
        **settings,
    )
    pruner.step()
    put_back(pruner)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        out = pruned.eval()(x)
    runs = tuple(out.shape) == tuple(shape) and _params(pruned) < before
    return {
        "tp_s": round(seconds, 3),
        "tp_params_after": _params(pruned),
        "tp": "pruned" if runs else "error",
        "tp_reason": "" if runs else "no parameters removed or shape changed",
    }


def one(name: str) -> None:
    """Measure one model; prints one JSON line per tool as it finishes (read by ``main``)."""
    import timm

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    # transformers at the size their patch grid and position embeddings are built for
    size = model.pretrained_cfg["input_size"][-1] if name in TRANSFORMER_FAMILIES.values() else INPUT_SIZE.get(name, 64)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        shape = model(x).shape
    print(json.dumps({"params": _params(model), "input": size}), flush=True)
    for tool, run in (("ours", lambda: ours(model, x)), ("tp", lambda: torch_pruning(model, x, shape))):
        try:
            row = run()
        except Exception as exc:  # a tool failing on a model is a result, not a crash
            row = {tool: "error", f"{tool}_reason": f"{type(exc).__name__}: {str(exc)[:140]}"}
        print(json.dumps(row), flush=True)


def run_family(family: str, name: str) -> dict:
    row = {"family": family, "model": name}
    command = [sys.executable, "-m", "benchmarks.timm_zoo", "--one", name]
    timed_out, stderr = False, ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3 * LIMIT_S + 60)
        lines, stderr = done.stdout.splitlines(), done.stderr
    except subprocess.TimeoutExpired as exc:
        timed_out, out = True, exc.stdout or b""
        lines = (out.decode() if isinstance(out, bytes) else out).splitlines()
    for line in lines:
        if line.startswith("{"):
            row |= json.loads(line)
    spent = {"ours": row.get("ours_analysis_s", 0) + row.get("ours_surgery_s", 0), "tp": row.get("tp_s", 0)}
    for tool, seconds in spent.items():
        if seconds > LIMIT_S or (tool not in row and timed_out):
            row[tool] = "over 60 s"
        elif tool not in row:
            row |= {tool: "error", f"{tool}_reason": (stderr.strip().splitlines() or ["process died"])[-1][:160]}
    return row


def summary(table: pd.DataFrame) -> str:
    counts = pd.DataFrame({"ours": table["ours"].value_counts(), "Torch-Pruning": table["tp"].value_counts()})
    return counts.fillna(0).astype(int).to_markdown()


# Every zoo's result columns after the ones that name the model.
RESULT_COLUMNS = [
    "ours",
    "ours_max_reduction",
    "ours_analysis_s",
    "ours_surgery_s",
    "ours_params_after",
    "ours_unchanged",
    "ours_reason",
    "tp",
    "tp_s",
    "tp_params_after",
    "tp_reason",
]


def write_tables(table: pd.DataFrame, names: list[str], out: Path, name: str, header: str) -> None:
    """``<name>.csv`` and ``<name>.md`` (the outcomes counted, then every row) in ``out``; prints the counts."""
    table = table.reindex(columns=[*names, *RESULT_COLUMNS])
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{name}.csv", index=False)
    text = (
        f"# {name}\n\n{header}\n\n## Outcomes\n\n{summary(table)}\n\n## Every row\n\n{table.to_markdown(index=False)}\n"
    )
    (out / f"{name}.md").write_text(text)
    print(header)
    print(summary(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--set", choices=list(SETS), default="cnn", help="convolutional or transformer families")
    parser.add_argument("--families", nargs="*", help="a subset of the set's families")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.one:
        one(args.one)
        return
    import timm
    import torch_pruning as tp

    families, name = SETS[args.set]
    rows = []
    for family in args.families or list(families):
        row = run_family(family, families[family])
        print({k: row.get(k) for k in ("family", "model", "ours", "ours_analysis_s", "ours_reason", "tp")}, flush=True)
        rows.append(row)
    header = (
        f"timm {timm.__version__}, torch {torch.__version__}, torch-pruning {tp.__version__}, "
        f"{platform.processor() or platform.machine()}, 2 threads; random weights, num_classes=10, batch 2 at "
        f"{'64x64' if args.set == 'cnn' else 'its own size'} unless `input` says otherwise; "
        f"{FRACTION:.0%} of every group removed at random (Torch-Pruning: ratio {FRACTION}, attention heads "
        "pruned whole where it knows the module's num_heads); `ours_max_reduction`: the most learnables "
        f"the analysis can remove. Produced by `python -m benchmarks.timm_zoo --set {args.set}`."
    )
    write_tables(pd.DataFrame(rows), ["family", "model", "params", "input"], Path(args.out), name, header)


if __name__ == "__main__":
    main()
