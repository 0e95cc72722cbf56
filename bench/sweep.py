"""Benchmark: one sweep of transfer experiments run three ways on one machine-wide feature cache.

In one invocation, on the same data, params and machine, each approach from a committed baseline
with an empty feature cache of its own and DVC's run cache cleared (so nothing is restored):
  1. grid       - the in-stage grid: one `dvc exp run` with list-valued `model` and `train_size`;
  2. sequential - one `dvc exp run -S model=M -S train_size=N` per experiment, one after another;
  3. queue      - `dvc exp run --queue` of every point (comma sweep syntax), then
                  `dvc exp run --run-all -j 2`: DVC's workers in temporary workspaces, two at once.
It prints each approach's wall time, what the feature cache holds afterwards (distinct images, and
stored entries: more than images only if an image was computed twice), every experiment's test
accuracy in each approach, and the queue's cost relative to the grid's (target <= 1.3x).

  python bench/sweep.py --source ../shared/data/cifar10-jpg.tar.gz          # BENCHMARKS.md's run
  python bench/sweep.py --source DIR --models effnet_lite0 --train-sizes 6 9 --test-size 6 \\
      --image-size 32 --tinyvgg-size 12                                      # a smoke run

(`python -m bench.sweep ...` is the same.) The project copy and timing are bench/project.py's,
the printed report and its target bench/report.py's.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as `python bench/sweep.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from bench.project import Project, bench_params, finish


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="data.source (ImageFolder dir or archive)")
    parser.add_argument("--models", nargs="+", default=["effnet_lite0", "effnet_lite2"])
    parser.add_argument("--train-sizes", nargs="+", type=int, default=[500, 1000])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test-size", type=int, default=2000, help="the test subset (params.yaml's default)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="transfer.image_size (default: each backbone's own)"
    )
    parser.add_argument("--tinyvgg-size", type=int, default=500, help="TinyVGG subset (baseline only, untimed)")
    parser.add_argument("--jobs", type=int, default=2, help="the queue's workers")
    parser.add_argument("--workdir", type=Path, help="keep the project here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    return parser.parse_args(argv)


def baseline_params(args: argparse.Namespace) -> dict:
    """A one-experiment baseline: the sweep's first model on half its smallest train size (a point
    outside the sweep, which DVC would otherwise skip as unchanged)."""
    return bench_params(
        args.source,
        models=args.models[0],
        train_sizes=min(args.train_sizes) // 2,
        epochs=args.epochs,
        test_size=args.test_size,
        tinyvgg_size=args.tinyvgg_size,
        image_size=args.image_size,
    )


def as_list(values) -> str:
    """`-S` list syntax: one experiment over all values (the in-stage grid)."""
    return "[" + ",".join(map(str, values)) + "]"


def as_sweep(values) -> str:
    """`-S` comma syntax with `--queue`: one queued experiment per value."""
    return ",".join(map(str, values))


# --- the three approaches: each runs the sweep and returns its wall time ---------------------------


def axes(model: str, train_size: str) -> list[str]:
    """`dvc exp run`'s options that set the two swept params."""
    return ["-S", f"model={model}", "-S", f"train_size={train_size}"]


def run_grid(project: Project, args: argparse.Namespace, cache_dir: Path) -> float:
    command = ["dvc", "exp", "run", *axes(as_list(args.models), as_list(args.train_sizes))]
    return project.measure(command, cache_dir)["wall_s"]


def run_sequential(project: Project, args: argparse.Namespace, cache_dir: Path) -> float:
    return sum(
        project.measure(["dvc", "exp", "run", *axes(model, size)], cache_dir)["wall_s"]
        for model in args.models
        for size in args.train_sizes
    )


def run_queue(project: Project, args: argparse.Namespace, cache_dir: Path) -> float:
    queue = ["dvc", "exp", "run", "--queue", *axes(as_sweep(args.models), as_sweep(args.train_sizes))]
    run_all = ["dvc", "exp", "run", "--run-all", "-j", str(args.jobs)]
    return project.measure(queue, cache_dir)["wall_s"] + project.measure(run_all, cache_dir)["wall_s"]


APPROACHES = {
    "grid": ("in-stage grid", run_grid),
    "sequential": ("sequential dvc exp run", run_sequential),
    "queue": ("queue, {jobs} workers", run_queue),
}


# --- around each approach -------------------------------------------------------------------------


def fresh_start(project: Project, approach: str) -> Path:
    """Back to the committed baseline, with DVC's run cache cleared (nothing an earlier approach
    ran is restored); returns a new, empty machine-wide cache for `approach`."""
    project.git("checkout", "HEAD", "--", "params.yaml", "dvc.lock")
    project.measure(["dvc", "checkout", "--force"], project.cache("unused"))
    shutil.rmtree(project.path / ".dvc/cache/runs", ignore_errors=True)
    return project.fresh_cache(approach)


def experiments(project: Project) -> dict[str, dict[str, float]]:
    """Every DVC experiment's test accuracies (metrics/transfer.json, by grid-experiment name), by
    DVC experiment name, from `dvc exp show --json`; exits if one failed."""
    results = {}
    for commit in json.loads(project.output(["dvc", "exp", "show", "--json"])):
        for experiment in commit.get("experiments") or []:
            for revision in experiment["revs"]:
                if revision.get("error"):
                    raise SystemExit(f"experiment {experiment['name']} failed; see {project.log}")
                metrics = revision["data"]["metrics"]["metrics/transfer.json"]["data"]
                results[experiment["name"]] = {name: m["test_acc"] for name, m in metrics.items()}
    return results


def measure_approach(project: Project, args: argparse.Namespace, name: str) -> dict:
    """One approach from a fresh start: its wall time, what its cache holds afterwards, and the test
    accuracy of every grid experiment over the DVC experiments it made."""
    description, run = APPROACHES[name]
    print(f"{description.format(jobs=args.jobs)} ...", flush=True)
    cache_dir = fresh_start(project, name)
    before = set(experiments(project))
    wall = run(project, args, cache_dir)
    cache = project.run_phase("cache", {"models": args.models, "image_size": args.image_size}, cache_dir)["cache"]
    test_acc = {}
    for experiment, accuracies in experiments(project).items():
        if experiment not in before:
            test_acc.update(accuracies)
    return {"wall_s": wall, "cache": cache, "test_acc": test_acc}


def main(args: argparse.Namespace) -> dict:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    project = Project.create(workdir, baseline_params(args))
    print(f"work directory: {workdir} (log: {project.log})", flush=True)
    project.measure(["dvc", "repro"], project.cache("baseline"))  # setup, untimed: data, subsets, TinyVGG, baseline
    project.commit("baseline")

    results = {name: measure_approach(project, args, name) for name in APPROACHES}
    results["config"] = {key: value for key, value in vars(args).items() if key not in ("workdir", "json")}
    results["config"]["source"] = str(args.source)
    report.sweep(results, len(args.models) * len(args.train_sizes))
    return finish(results, args.json, workdir, keep=bool(args.workdir))


if __name__ == "__main__":
    main(parse_args())
