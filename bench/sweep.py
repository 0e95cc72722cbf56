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
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
from projects import commit_all, make_project, project_env, tiny_params  # noqa: E402

from transferlab.features import FeatureCache  # noqa: E402

QUEUE_TARGET = 1.3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="data.source (ImageFolder dir or archive)")
    parser.add_argument("--models", nargs="+", default=["effnet_lite0", "effnet_lite2"])
    parser.add_argument("--train-sizes", nargs="+", type=int, default=[500, 1000])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test-size", type=int, default=2000, help="the test subset (params.yaml's default)")
    parser.add_argument("--image-size", type=int, default=None, help="transfer.image_size (default: each backbone's own)")
    parser.add_argument("--tinyvgg-size", type=int, default=500, help="TinyVGG subset (baseline only, untimed)")
    parser.add_argument("--jobs", type=int, default=2, help="the queue's workers")
    parser.add_argument("--workdir", type=Path, help="keep the project here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    return parser.parse_args(argv)


def baseline_params(args: argparse.Namespace) -> dict:
    """A one-experiment baseline: the sweep's first model on half its smallest train size (a point
    outside the sweep, which DVC would otherwise skip as unchanged)."""
    params = tiny_params(Path(args.source))
    params["data"] = {"source": str(Path(args.source).resolve()), "image_size": 32}
    params["subset"] = {"tinyvgg_train_size": args.tinyvgg_size, "test_size": args.test_size}
    params["tinyvgg"].update(epochs=1, hidden_units=10, batch_size=32)
    params.update(model=args.models[0], train_size=min(args.train_sizes) // 2, epochs=args.epochs)
    params["transfer"].update(image_size=args.image_size, batch_size=32, freeze=True)
    return params


class Bench:
    """The project, its log, and commands timed in it with a given machine-wide cache."""

    def __init__(self, project: Path, log: Path):
        self.project, self.log = project, log

    def run(self, command: list[str], cache_dir: Path) -> float:
        """Run `command` in the project with `cache_dir` as the machine-wide cache; its wall time."""
        env = {**project_env(self.project), "TRANSFERLAB_CACHE_DIR": str(cache_dir)}
        with open(self.log, "a") as out:
            out.write(f"\n$ {' '.join(command)}\n")
            out.flush()
            start = time.perf_counter()
            code = subprocess.run(command, cwd=self.project, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            wall = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"{' '.join(command)} failed; see {self.log}")
        return wall

    def fresh_start(self, approach: str) -> Path:
        """Back to the committed baseline, with DVC's run cache cleared (nothing an earlier approach
        ran is restored); returns a new, empty machine-wide cache for `approach`."""
        subprocess.run(["git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock"], cwd=self.project, check=True)
        self.run(["dvc", "checkout", "--force"], self.project.parent / "cache_unused")
        shutil.rmtree(self.project / ".dvc/cache/runs", ignore_errors=True)
        cache_dir = self.project.parent / f"cache_{approach}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        return cache_dir

    def experiments(self) -> dict[str, dict]:
        """Every experiment's test accuracies from `dvc exp show --json`, by experiment name, and
        any that failed."""
        shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=self.project,
                                          env=project_env(self.project), capture_output=True, text=True,
                                          check=True).stdout)
        results = {}
        for commit in shown:
            for experiment in commit.get("experiments") or []:
                for revision in experiment["revs"]:
                    if revision.get("error"):
                        raise SystemExit(f"experiment {experiment['name']} failed; see {self.log}")
                    metrics = revision["data"]["metrics"]["metrics/transfer.json"]["data"]
                    results[experiment["name"]] = {name: m["test_acc"] for name, m in metrics.items()}
        return results


def cache_stats(cache_dir: Path, args: argparse.Namespace) -> dict[str, dict]:
    return {name: FeatureCache(name, args.image_size, cache_dir).stats() for name in args.models}


def as_list(values) -> str:
    return "[" + ",".join(map(str, values)) + "]"


def main(args: argparse.Namespace) -> dict:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    project = make_project(workdir / "project", baseline_params(args))
    bench = Bench(project, workdir / "bench.log")
    print(f"work directory: {workdir} (log: {bench.log})", flush=True)
    bench.run(["dvc", "repro"], workdir / "cache_baseline")  # setup, untimed: data, subsets, TinyVGG, baseline
    commit_all(project, "baseline")
    points = [(model, size) for model in args.models for size in args.train_sizes]
    results = {}

    print("in-stage grid ...", flush=True)
    cache_dir = bench.fresh_start("grid")
    wall = bench.run(["dvc", "exp", "run", "-S", f"model={as_list(args.models)}",
                      "-S", f"train_size={as_list(args.train_sizes)}"], cache_dir)
    accuracy = json.loads((project / "metrics/transfer.json").read_text())
    results["grid"] = {"wall_s": wall, "cache": cache_stats(cache_dir, args),
                       "test_acc": {name: m["test_acc"] for name, m in accuracy.items()}}

    print("sequential dvc exp run ...", flush=True)
    cache_dir = bench.fresh_start("sequential")
    before = set(bench.experiments())
    wall = sum(bench.run(["dvc", "exp", "run", "-S", f"model={model}", "-S", f"train_size={size}"], cache_dir)
               for model, size in points)
    results["sequential"] = {"wall_s": wall, "cache": cache_stats(cache_dir, args),
                             "test_acc": _merged(bench.experiments(), exclude=before)}

    print(f"queue, {args.jobs} workers ...", flush=True)
    cache_dir = bench.fresh_start("queue")
    before = set(bench.experiments())
    wall = bench.run(["dvc", "exp", "run", "--queue", "-S", f"model={','.join(args.models)}",
                      "-S", f"train_size={','.join(map(str, args.train_sizes))}"], cache_dir)
    wall += bench.run(["dvc", "exp", "run", "--run-all", "-j", str(args.jobs)], cache_dir)
    results["queue"] = {"wall_s": wall, "cache": cache_stats(cache_dir, args),
                        "test_acc": _merged(bench.experiments(), exclude=before)}

    results["config"] = {key: value for key, value in vars(args).items() if key not in ("workdir", "json")}
    results["config"]["source"] = str(args.source)
    report(results, len(points))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _merged(experiments: dict[str, dict], exclude: set[str]) -> dict[str, float]:
    """Test accuracy by grid-experiment name over the DVC experiments not in `exclude`."""
    merged = {}
    for name, accuracies in experiments.items():
        if name not in exclude:
            merged.update(accuracies)
    return merged


def report(r: dict, n_points: int) -> None:
    approaches = ("grid", "sequential", "queue")
    print(f"\n== {n_points} experiments, three ways (same data, params and machine; each with an empty cache) ==")
    print(f"{'approach':<11} {'wall s':>8} {'x grid':>7}   feature cache afterwards (images / stored entries)")
    for name in approaches:
        cache = ", ".join(f"{model} {s['images']:,} / {s['entries']:,}" for model, s in r[name]["cache"].items())
        print(f"{name:<11} {r[name]['wall_s']:>8.1f} {r[name]['wall_s'] / r['grid']['wall_s']:>6.2f}x   {cache}")

    print("\n== test accuracy per experiment ==")
    names = sorted(r["grid"]["test_acc"])
    for name in names:
        print(f"{name:<34} " + "   ".join(f"{a} {r[a]['test_acc'].get(name, float('nan')):7.2%}" for a in approaches))

    ratio = r["queue"]["wall_s"] / r["grid"]["wall_s"]
    same = all(r[a]["test_acc"] == r["grid"]["test_acc"] for a in approaches)
    once = all(s["images"] == s["entries"] for a in approaches for s in r[a]["cache"].values())
    print("\n== targets ==")
    for line, ok, target in [
        (f"queue (-j {r['config']['jobs']}) / in-stage grid   {ratio:6.2f}x", ratio <= QUEUE_TARGET, f"<= {QUEUE_TARGET}x"),
        ("every approach: the same test accuracy per experiment", same, "identical"),
        ("every approach: each image through each backbone once", once, "entries = images"),
    ]:
        print(f"{line:<58} target {target:<16} {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main(parse_args())
