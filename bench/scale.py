"""Benchmark: a grid of hundreds of experiments against the default-shaped grid of 8, on the same images.

Two grids in one project copy, each from an empty machine-wide cache, its outputs removed first,
every stage timed alone in pipeline order (`dvc repro --force --no-run-cache --single-item STAGE`):
  small  the default-shaped grid: --models x --train-sizes x --epochs (params.yaml's lr and weight
         decay), then its epochs-only rerun (every epoch count + 1, as bench/grid.py's: `dvc repro
         --no-run-cache train_transfer`, then evaluate and select_best, each timed, features cached);
  large  --models x --big-train-sizes x --big-lrs x --big-weight-decays x --big-epochs (216 by
         default): the largest train size is the small grid's, so the same images go through the
         backbones and the difference is the per-experiment cost.
Both with the same validation (--val-size) and test (--test-size) subsets and the same TinyVGG
(params.yaml's unless --tinyvgg-size / --tinyvgg-epochs shrink it). Reported: wall time per stage
and in all, the outputs' size (models/, runs/, reports/, plots/, metrics/), the marginal cost of one
more experiment ((T_large - T_small) / (N_large - N_small), per stage too), T_large / T_small, and
how honest the large grid's headline is: the validation-chosen winner's test accuracy and 95 %
interval against the best test accuracy of any model (what choosing on test would have reported).

  python bench/scale.py --source ../shared/data/cifar10-jpg.tar.gz               # BENCHMARKS.md's run
  python bench/scale.py --source DIR --models effnet_lite0 --train-sizes 6 --epochs 1 2 \\
      --test-size 6 --val-size 6 --image-size 32 --tinyvgg-size 12 --tinyvgg-epochs 1 \\
      --big-train-sizes 3 6 --big-lrs 0.001 0.003 --big-weight-decays 0 --big-epochs 1 2  # a smoke run
"""

import json
import math
import os
import shutil
import sys
from pathlib import Path

import yaml

if not __package__:  # run as `python bench/scale.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.report import Table, Target, targets

STAGES = ("download", "subset", "train_tinyvgg", "train_transfer", "evaluate", "select_best")  # pipeline order
FORCED = ["dvc", "repro", "--force", "--no-run-cache", "--single-item"]  # each stage alone, from scratch
RERUN = {  # the epochs-only rerun: what changed reruns, the rest is checked and skipped
    "train_transfer (and the unchanged stages before it)": ["dvc", "repro", "--no-run-cache", "train_transfer"],
    "evaluate": ["dvc", "repro", "--no-run-cache", "--single-item", "evaluate"],
    "select_best": ["dvc", "repro", "--no-run-cache", "--single-item", "select_best"],
}
OUTPUTS = ("models", "runs", "reports", "plots", "metrics")
AXES = ("model", "trainable_stages", "train_size", "epochs", "lr", "weight_decay", "train_seed")
MB = 1e6
TARGETS = {
    "marginal": Target("marginal cost of one more experiment", "<=", 0.5, " s", ".3f"),
    "ratio": Target("large grid / small grid wall time", "<=", 2, "x"),
    "outputs": Target("outputs, {} grid", "<=", 100, " MB", ".1f"),
    "rerun": Target("epochs-only rerun / the small grid's full run", "<=", 10, " %", ".1f"),
}


def arguments(parser) -> None:
    parser.set_defaults(tinyvgg_size=None)  # params.yaml's
    parser.add_argument("--val-size", type=int, default=1000, help="subset.val_size")
    parser.add_argument("--tinyvgg-epochs", type=int, help="tinyvgg.epochs (default: params.yaml's)")
    parser.add_argument("--big-train-sizes", nargs="+", type=int, default=[250, 500, 750, 1000])
    parser.add_argument("--big-lrs", nargs="+", type=float, default=[0.0003, 0.001, 0.003])
    parser.add_argument("--big-weight-decays", nargs="+", type=float, default=[0, 0.0001, 0.001])
    parser.add_argument("--big-epochs", nargs="+", type=int, default=[3, 5, 10])


def params(args, grid: str = "small") -> dict:
    """params.yaml with the data, subsets and transfer options of the command line and one grid's
    axes; TinyVGG as params.yaml has it but what --tinyvgg-size and --tinyvgg-epochs shrink."""
    params = yaml.safe_load((harness.ROOT / "params.yaml").read_text())
    params["data"].update(source=str(Path(args.source).resolve()), image_size=args.data_image_size)
    tinyvgg_size = args.tinyvgg_size or params["subset"]["tinyvgg_train_size"]
    params["subset"] = {"tinyvgg_train_size": tinyvgg_size, "val_size": args.val_size, "test_size": args.test_size}
    if args.tinyvgg_epochs:
        params["tinyvgg"]["epochs"] = args.tinyvgg_epochs
    params["transfer"].update(image_size=args.image_size, batch_size=args.batch_size, freeze=True)
    params.update(model=args.models, trainable_stages=0)
    if grid == "small":
        params.update(train_size=args.train_sizes, epochs=args.epochs)
    elif grid == "rerun":  # bench/grid.py's epochs-only change
        params.update(train_size=args.train_sizes, epochs=[e + 1 for e in args.epochs])
    else:
        params.update(train_size=args.big_train_sizes, epochs=args.big_epochs)
        params.update(lr=args.big_lrs, weight_decay=args.big_weight_decays)
    return params


def experiments(params: dict) -> int:
    """How many transfer experiments the params' grid axes make (each a value or a list)."""
    return math.prod(len(v) if isinstance(v, list) else 1 for v in (params[axis] for axis in AXES))


def outputs_size(project: harness.Project) -> dict[str, int]:
    """Bytes under each of OUTPUTS (files and links as they are, not followed)."""
    sizes = {}
    for name in OUTPUTS:
        sizes[name] = 0
        for folder, _, files in os.walk(project.path / name):
            sizes[name] += sum(os.lstat(Path(folder) / file).st_size for file in files)
    return sizes


def run_grid(project: harness.Project, params: dict, name: str) -> dict:
    """The whole pipeline on `params` from an empty cache and no outputs, stage by stage, timed."""
    print(f"{name} grid: {experiments(params)} experiments ...", flush=True)
    project.write_params(params)
    for output in OUTPUTS:
        shutil.rmtree(project.path / output, ignore_errors=True)
    cache_dir = project.cache(name, fresh=True)
    stages = {stage: project.measure([*FORCED, stage], cache_dir) for stage in STAGES}
    return {"experiments": experiments(params), "stages": stages, "outputs": outputs_size(project)}


def run(project: harness.Project, args) -> dict:
    small = run_grid(project, params(args, "small"), "small")
    print("small grid: epochs-only rerun ...", flush=True)
    project.write_params(params(args, "rerun"))
    rerun = {part: project.measure(command, project.cache("small")) for part, command in RERUN.items()}
    large = run_grid(project, params(args, "large"), "large")
    evaluation = json.loads((project.path / "reports/evaluation.json").read_text())
    best = json.loads((project.path / "metrics/best.json").read_text())
    test_acc = {model: result["test_acc"] for model, result in evaluation.items()}
    return {"small": small, "rerun": rerun, "large": large, "honesty": {"best": best, "test_acc": test_acc}}


# --- report ------------------------------------------------------------------------------------------


def total(runs: dict) -> float:
    return sum(run["wall_s"] for run in runs.values())


def honesty(h: dict) -> dict:
    """The validation-chosen winner against choosing on test: the best test accuracy of any model,
    the gap, the models whose test accuracy lies in the winner's 95 % interval."""
    best, test_acc = h["best"], h["test_acc"]
    top = max(test_acc, key=test_acc.get)
    low, high = best["test_acc_low"], best["test_acc_high"]
    return {
        "winner": best["name"],
        "winner_test_acc": best["test_acc"],
        "interval": (low, high),
        "top": top,
        "top_test_acc": test_acc[top],
        "gap_pp": 100 * (test_acc[top] - best["test_acc"]),
        "inside": sum(low <= acc <= high for acc in test_acc.values()),
        "tied": best["tied"],
        "models": len(test_acc),
    }


def report(r: dict) -> list[Table]:
    small, large, rerun = r["small"], r["large"], r["rerun"]
    n_small, n_large = small["experiments"], large["experiments"]
    t_small, t_large = total(small["stages"]), total(large["stages"])
    added = n_large - n_small
    stages = []
    for stage in STAGES:
        s, big = small["stages"][stage], large["stages"][stage]
        peak = max(s["peak_rss_mib"], big["peak_rss_mib"])
        stages.append((stage, s["wall_s"], big["wall_s"], (big["wall_s"] - s["wall_s"]) / added, peak))
    stages.append(("total", t_small, t_large, (t_large - t_small) / added, None))
    sizes = [(name, small["outputs"][name] / MB, large["outputs"][name] / MB) for name in OUTPUTS]
    sizes.append(("total", sum(small["outputs"].values()) / MB, sum(large["outputs"].values()) / MB))
    t_rerun = total(rerun)
    parts = [(part, run["wall_s"], 100 * run["wall_s"] / t_rerun) for part, run in rerun.items()]
    parts.append(("total", t_rerun, 100.0))
    h = honesty(r["honesty"])
    low, high = h["interval"]
    interval = f"{100 * low:.2f}–{100 * high:.2f} %"
    honest = [
        ("validation-chosen winner", h["winner"]),
        ("its test accuracy (95 % interval)", f"{100 * h['winner_test_acc']:.2f} % ({interval})"),
        ("best test accuracy of any model (choosing on test)", f"{100 * h['top_test_acc']:.2f} % ({h['top']})"),
        ("gap, pp", f"{h['gap_pp']:.2f}"),
        ("models whose test accuracy is inside the winner's interval", f"{h['inside']} of {h['models']}"),
        ("tied: validation cannot tell them from the winner (McNemar p >= 0.05)", f"{h['tied']} of {h['models']}"),
    ]
    checks = [
        (TARGETS["marginal"], (t_large - t_small) / added, f"{t_large:.1f} s - {t_small:.1f} s over {added}"),
        (TARGETS["ratio"], t_large / t_small, f"{t_large:.1f} s / {t_small:.1f} s"),
        (TARGETS["outputs"].named(f"{n_small}-experiment"), sizes[-1][1]),
        (TARGETS["outputs"].named(f"{n_large}-experiment"), sizes[-1][2]),
        (TARGETS["rerun"], 100 * t_rerun / t_small, f"{t_rerun:.1f} s"),
    ]
    grids = {f"{n_small} experiments": ".1f", f"{n_large} experiments": ".1f"}
    note = f"each grid from an empty machine-wide cache; marginal: ({n_large} - {n_small}) experiments' difference"
    return [
        Table(
            "wall time per stage, s",
            {"stage": "", **grids, "marginal s/experiment": ".3f", "peak RSS MiB": ".0f"},
            stages,
            [note],
        ),
        Table("outputs, MB", {"folder": "", **grids}, sizes),
        Table(
            f"epochs-only rerun of the {n_small}-experiment grid (epochs + 1), features cached",
            {"part": "", "s": ".1f", "% of the rerun": ".1f"},
            parts,
        ),
        Table(f"choosing on validation, {n_large}-experiment grid (+ TinyVGG)", {"measure": "", "value": ""}, honest),
        targets(checks),
    ]


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
