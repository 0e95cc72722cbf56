"""Benchmark: one sweep of transfer experiments run three ways on one machine-wide feature cache.

From a committed one-experiment baseline, each approach with an empty feature cache of its own and
DVC's run cache cleared (nothing is restored):
  grid        the in-stage grid: one `dvc exp run` with list-valued `model` and `train_size`;
  sequential  one `dvc exp run -S model=M -S train_size=N` per experiment;
  queue       `dvc exp run --queue` of every point, then `dvc exp run --run-all -j JOBS`.
Reported: wall times, what the cache holds afterwards (distinct images and stored entries: more
entries than images only if an image was computed twice), every experiment's validation accuracy.

  python bench/sweep.py --source ../shared/data/cifar10-jpg.tar.gz          # BENCHMARKS.md's run
  python bench/sweep.py --source DIR --models effnet_lite0 --train-sizes 6 9 --test-size 6 \\
      --image-size 32 --tinyvgg-size 12                                      # a smoke run
"""

import json
import shutil
import sys
from pathlib import Path

if not __package__:  # run as `python bench/sweep.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from bench import harness
from bench.report import Table, Target, targets

TARGETS = {
    "queue": Target("queue / in-stage grid wall time", "<=", 1.3, "x"),
    "same": Target("every approach: the same validation accuracy per experiment", "==", True),
    "once": Target("every approach: each image through each backbone once", "==", True),
}


def arguments(parser) -> None:
    parser.set_defaults(epochs=[5], tinyvgg_size=500)
    parser.add_argument("--jobs", type=int, default=2, help="the queue's workers")


def params(args) -> dict:
    """The baseline: the first model on half the smallest train size (a point outside the sweep)."""
    return harness.bench_params(args, models=args.models[0], train_sizes=min(args.train_sizes) // 2)


def axes(models: str, sizes: str) -> list[str]:
    """`-S` options of the two swept params."""
    return ["-S", f"model={models}", "-S", f"train_size={sizes}"]


def joined(values) -> str:
    return ",".join(map(str, values))


def commands(args, approach: str) -> list[list[str]]:
    """`[a,b]` is one experiment over all values (the in-stage grid); `a,b` with --queue one queued
    experiment per value."""
    run = ["dvc", "exp", "run"]
    if approach == "grid":
        return [[*run, *axes(f"[{joined(args.models)}]", f"[{joined(args.train_sizes)}]")]]
    if approach == "sequential":
        return [[*run, *axes(model, size)] for model in args.models for size in args.train_sizes]
    queue = [*run, "--queue", *axes(joined(args.models), joined(args.train_sizes))]
    return [queue, [*run, "--run-all", "-j", str(args.jobs)]]


def experiments(project: harness.Project) -> dict[str, dict[str, float]]:
    """Each DVC experiment's final validation accuracies (its commit's reports/transfer.json);
    exits if one failed."""
    results = {}
    for commit in json.loads(project.output(["dvc", "exp", "show", "--json"])):
        for experiment in commit.get("experiments") or []:
            for revision in experiment["revs"]:
                if revision.get("error"):
                    raise SystemExit(f"experiment {experiment['name']} failed; see {project.log}")
                metrics = json.loads(cached_output(project, revision["rev"], "reports/transfer.json"))
                results[experiment["name"]] = {name: m["val_acc"] for name, m in metrics.items()}
    return results


def cached_output(project: harness.Project, rev: str, path: str) -> str:
    """A DVC-cached output of commit `rev` (found by its md5 in that commit's dvc.lock), read from
    the project's DVC cache, which every queued workspace shares."""
    lock = yaml.safe_load(project.output(["git", "show", f"{rev}:dvc.lock"]))
    (md5,) = {out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", []) if out["path"] == path}
    return (project.path / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_text()


def run(project: harness.Project, args) -> dict:
    project.measure(["dvc", "repro"], project.cache("baseline"))  # setup, untimed
    project.commit("baseline")
    results = {}
    for approach in ("grid", "sequential", "queue"):
        print(f"{approach} ...", flush=True)
        project.git("checkout", "HEAD", "--", "params.yaml", "dvc.lock")  # back to the baseline
        project.measure(["dvc", "checkout", "--force"], project.cache("unused"))
        shutil.rmtree(project.path / ".dvc/cache/runs", ignore_errors=True)  # nothing is restored
        cache_dir, before = project.cache(approach, fresh=True), set(experiments(project))
        wall = sum(project.measure(command, cache_dir)["wall_s"] for command in commands(args, approach))
        config = {"models": args.models, "image_size": args.image_size}
        cache = project.run_phase("bench.reference:cache_stats", config, cache_dir)
        val_acc = {}
        for name, accuracies in experiments(project).items():
            if name not in before:
                val_acc |= accuracies
        results[approach] = {"wall_s": wall, "cache": {m: cache[m] for m in args.models}, "val_acc": val_acc}
    return results


def report(r: dict) -> list[Table]:
    rows, approaches = [], ("grid", "sequential", "queue")
    for name in approaches:
        cache = "; ".join(f"{m} {s['images']:,} / {s['entries']:,}" for m, s in r[name]["cache"].items())
        rows.append((name, r[name]["wall_s"], r[name]["wall_s"] / r["grid"]["wall_s"], cache))
    nan = float("nan")
    accuracy = [(n, *(100 * r[a]["val_acc"].get(n, nan) for a in approaches)) for n in sorted(r["grid"]["val_acc"])]
    checks = [
        (TARGETS["queue"], r["queue"]["wall_s"] / r["grid"]["wall_s"], f"-j {r['args']['jobs']}"),
        (TARGETS["same"], all(r[a]["val_acc"] == r["grid"]["val_acc"] for a in approaches)),
        (TARGETS["once"], all(s["images"] == s["entries"] for a in approaches for s in r[a]["cache"].values())),
    ]
    n = len(r["args"]["models"]) * len(r["args"]["train_sizes"])
    columns = {"approach": "", "wall s": ".1f", "x grid": ".2f", "feature cache afterwards: images / entries": ""}
    return [
        Table(f"{n} experiments, three ways (each with an empty cache)", columns, rows),
        Table(
            "validation accuracy per experiment, %", {"experiment": "", **dict.fromkeys(approaches, ".2f")}, accuracy
        ),
        targets(checks, "targets"),
    ]


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
