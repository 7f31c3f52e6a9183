"""python -m sweeps.demo -- train a small 1-D CNN on MNIST-1D, then compress it with Taylor pruning.

Trains the reference example's kind of network, prints ``analyze_compression``'s report, and
runs ``compress_network`` (5% of the learnables per iteration, one fine-tuning epoch each,
validation on the test split) until the goal, stopping early if validation accuracy falls
below the threshold. Checkpoints, the pruning-progress plot, the history tables and the
final model (safe format) go to ``outputs/demo/``; the final model is reloaded to check it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from prune_core import TrainingOptions, analyze_compression, compress_network, load_pruned, save_pruned
from prune_core.data import as_source
from prune_core.losses import resolve_loss
from prune_core.training import TrainingLog, evaluate, fine_tune
from sweeps.datasets import mnist1d_tensors
from sweeps.models import reference_cnn1d


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo", help="folder for checkpoints, plot, tables, final model")
    parser.add_argument("--goal", type=float, default=0.8, help="learnables reduction to reach, in (0, 1]")
    parser.add_argument("--threshold", type=float, default=90.0, help="stop below this validation accuracy (%%)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.goal <= 1:
        parser.error(f"--goal must be in (0, 1], got {args.goal}")
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = mnist1d_tensors(seed=42)
    loss = resolve_loss("crossentropy")
    model = reference_cnn1d()
    base = TrainingOptions("adam", initial_learn_rate=3e-3, max_epochs=15, mini_batch_size=64, seed=args.seed)
    fine_tune(model, as_source(data["x_train"], data["y_train"]), loss, base, TrainingLog())
    test = as_source(data["x_test"], data["y_test"])
    metrics = TrainingOptions(metrics=["accuracy"]).resolved_metrics
    accuracy = evaluate(model, test, loss, metrics, 500, torch.device("cpu"))["accuracy"]
    print(f"Trained the network: test accuracy {accuracy:.1f}%\n")
    analyze_compression(model, data["x_train"][:8])
    options = TrainingOptions("adam", initial_learn_rate=1e-3, max_epochs=1, mini_batch_size=64,
                              shuffle="every-epoch", metrics=["accuracy"], objective_metric_name="accuracy",
                              validation_data=(data["x_test"], data["y_test"]), validation_frequency=20,
                              seed=args.seed)
    print(f"\nCompressing: 5% of the learnables per iteration up to {100 * args.goal:.0f}%, "
          f"stopping below {args.threshold:.0f}% validation accuracy")
    pruned, info = compress_network(model, data["x_train"], data["y_train"], "crossentropy", options,
                                    goal=args.goal, increment=0.05, validation_threshold=args.threshold,
                                    checkpoint_path=out / "checkpoints", verbosity="pruning",
                                    plots="pruning-progress", plots_path=out / "pruning_progress.png")
    for name in ("pruning_history", "training_history", "validation_history"):
        getattr(info, name).to_csv(out / f"{name}.csv", index=False)
    save_pruned(pruned, out / "pruned.pt", extra={"stop_reason": info.stop_reason})
    reloaded = load_pruned(out / "pruned.pt", reference_cnn1d)
    reloaded_accuracy = evaluate(reloaded, test, loss, metrics, 500, torch.device("cpu"))["accuracy"]
    print(f"\nSaved {out / 'pruned.pt'}: reloaded test accuracy {reloaded_accuracy:.1f}% (unpruned {accuracy:.1f}%). "
          f"Plot, history tables and {len(info.checkpoints)} checkpoints are in {out}/.")


if __name__ == "__main__":
    main()
