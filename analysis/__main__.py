"""python -m analysis --experiment NAME [--tracking-uri URI] [--out DIR] [--max-drop 1.0]

Writes the four figures (PNG), with a fifth (``fronts.png``: accuracy against reduction and
against measured latency) when the runs measured latency, the experiment table and its Pareto
front (CSV) to ``--out``
and prints the chosen level: the highest learnables reduction within ``--max-drop`` points
of validation accuracy of the unpruned network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import choose, load_experiment, pareto_front
from analysis.plots import front_figure, fronts_figure, hyperparameters_figure, progress_figure, trajectories_figure
from prune_core.channels import atomic_path


def write(path: Path, content) -> None:
    """A figure (PNG) or a table (CSV), through a temporary name: nothing half-written."""
    with atomic_path(path) as tmp:
        if hasattr(content, "savefig"):
            content.savefig(tmp, dpi=110)
        else:
            content.to_csv(tmp, index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment name")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    parser.add_argument("--out", default="analysis_out", help="folder for the figures and tables")
    parser.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the chosen level may lose")
    parser.add_argument("--metric", default="validation_accuracy", help="validation column to maximise")
    parser.add_argument("--hue", default=None, help="hyperparameter colouring the front figure")
    args = parser.parse_args(argv)
    try:
        experiment = load_experiment(args.experiment, args.tracking_uri)
        table = experiment.table
        chosen = choose(table, max_drop=args.max_drop, metric=args.metric)
        front = pareto_front(table, y=args.metric)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hue = args.hue or (experiment.hyperparameters[0] if experiment.hyperparameters else None)
    write(out / "table.csv", table)
    write(out / "pareto_front.csv", front)
    write(out / "front.png", front_figure(table, front, chosen, hue=hue, metric=args.metric))
    write(out / "trajectories.png", trajectories_figure(table, metric=args.metric))
    if experiment.hyperparameters:
        write(
            out / "hyperparameters.png",
            hyperparameters_figure(table, experiment.hyperparameters, (args.metric, "reduction")),
        )
    write(out / "progress.png", progress_figure(table, chosen["run_id"], metric=args.metric))
    if "latency_ms" in table and table["latency_ms"].notna().any():
        write(out / "fronts.png", fronts_figure(table, metric=args.metric))
    left_out = f"; left out: {experiment.unfinished}" if experiment.unfinished else ""
    for run_id, why in experiment.left_out.items():
        print(f"left out run {run_id}: {why}", file=sys.stderr)
    print(
        f"{table['run_id'].nunique()} runs, {len(table)} candidate levels, {len(front)} on the Pareto front"
        f"{left_out}. Written to {out}/"
    )
    print(
        f"Chosen (at most {args.max_drop} points below the unpruned network): trial {int(chosen['trial'])}, "
        f"iteration {int(chosen['iteration'])}, reduction {100 * chosen['reduction']:.1f}%, "
        f"{args.metric} {chosen[args.metric]:.2f}, checkpoint runs:/{chosen['run_id']}/{chosen['checkpoint']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
