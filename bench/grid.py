"""Benchmark: the pipeline's transfer grid against the course-style loop and the inference floor.

In one invocation, on the same data, params and machine:
  1. pipeline  - `dvc repro` of train_transfer + evaluate in a temporary copy of the project
                 (cold feature cache), then an epochs-only rerun; after the last round, a no-op
                 `dvc repro`;
  2. course    - Bourke's chapter 07 loop: per experiment a fresh pretrained model, and every epoch
                 passes every train and test batch through the whole network (`--course-bn frozen`,
                 the default, holds the frozen backbone in eval mode as the pipeline does, so both
                 train the same model; `train` lets `model.train()` put its BatchNorm layers in
                 batch-statistics mode, exactly as the course's code does);
  3. floor     - one bare `torch.inference_mode()` pass of each backbone over each distinct image.
The pipeline (with its rerun) and the floor run in alternating rounds (`--rounds`); the fastest of
each counts, so a drift in this machine's speed hits both. Plus the pipeline's feature extraction
(FeatureCache, cold) against that bare loop (alternating rounds in one process, the fastest of
each compared), and a cProfile of the train_transfer stage. Each phase runs in its own process:
wall time and peak RSS (wait4's ru_maxrss, child processes included) are measured from outside.

  python bench/grid.py --source ../shared/data/cifar10-jpg.tar.gz            # BENCHMARKS.md's run
  python bench/grid.py --source DIR --models effnet_lite0 --train-sizes 6 --epochs 1 2 \\
      --test-size 6 --image-size 32 --tinyvgg-size 12                           # a smoke run
"""
import argparse
import cProfile
import itertools
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from projects import machine_cache, make_project, project_env, tiny_params, write_params  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="data.source for the run (ImageFolder dir or archive)")
    parser.add_argument("--models", nargs="+", default=["effnet_lite0", "effnet_lite2"])
    parser.add_argument("--train-sizes", nargs="+", type=int, default=[500, 1000])
    parser.add_argument("--epochs", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--test-size", type=int, default=250)
    parser.add_argument("--image-size", type=int, default=None,
                        help="transfer.image_size (crop) for every backbone (default: each backbone's own "
                             "input size, lite0 224 px and lite2 260 px, as params.yaml's null; "
                             "BENCHMARKS.md's run)")
    parser.add_argument("--data-image-size", type=int, default=32)
    parser.add_argument("--tinyvgg-size", type=int, default=1000, help="TinyVGG subset (setup only, untimed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of pipeline (cold, then epochs-only rerun) and floor; "
                             "the fastest of each counts")
    parser.add_argument("--extract-rounds", type=int, default=3,
                        help="alternating rounds of bare loop and feature cache; the fastest of each counts")
    parser.add_argument("--course-bn", choices=["frozen", "train"], default="frozen",
                        help="the course loop's backbone BatchNorm: frozen (eval mode, as the pipeline) or "
                             "train (what model.train() does in the course's code)")
    parser.add_argument("--workdir", type=Path, help="keep the project copy here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    return parser.parse_args(argv)


# --- measurement ----------------------------------------------------------------------------------

def measure(command: list[str], cwd: Path, log: Path) -> dict:
    """Run `command` in the project copy, on the copy's own code (edits to the checkout during a
    run change nothing); its wall time and peak RSS (largest process of its tree), in s / MiB."""
    env = {**project_env(cwd), "PYTHONPATH": str(cwd / "src")}
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def fastest(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["wall_s"])


def run_phase(phase: str, project: Path, config: dict, log: Path) -> dict:
    """Run one of this script's in-process phases in a child process and collect its JSON result."""
    result_file = project / f"bench_{phase}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, json.dumps(config)]
    stats = measure(command + [str(result_file)], project, log)
    return {**stats, **json.loads(result_file.read_text())}


# --- phases that run in a child process -----------------------------------------------------------

def load_grid_data(config: dict):
    """The images and labels the pipeline's grid used: the train subsets' union and the test subset."""
    import torch

    from transferlab import data, subsets as subset_files

    dataset = data.load("data/prepared")
    subsets = subset_files.load("data/subsets", "transfer_train", "test")
    union = sorted(set().union(*(subsets["transfer_train"][str(n)] for n in config["train_sizes"])))
    test = subsets["test"]
    as_tensor = lambda images: torch.as_tensor(images).permute(0, 3, 1, 2)  # noqa: E731
    return {
        "union": as_tensor(dataset.train.images[union]),
        "test": (as_tensor(dataset.test.images[test]), torch.as_tensor(dataset.test.labels[test])),
        "train": {n: (as_tensor(dataset.train.images[idx]), torch.as_tensor(dataset.train.labels[idx]))
                  for n, idx in ((n, subsets["transfer_train"][str(n)]) for n in config["train_sizes"])},
        "n_classes": len(dataset.classes),
    }


class EvalModeBackbone(nn.Module):
    """A frozen backbone that stays in eval mode when the model around it is put in train mode."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features.eval()

    def train(self, mode: bool = True) -> "EvalModeBackbone":
        return super().train(False)

    def forward(self, x):
        return self.features(x)


def phase_course(config: dict) -> dict:
    """Bourke ch. 07: a fresh model per experiment; every epoch runs every batch through it all."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from transferlab import backbones, engine, models

    grid = load_grid_data(config)
    device = engine.select_device()
    accuracies = {}
    for name, size, epochs in itertools.product(config["models"], config["train_sizes"], config["epochs"]):
        backbone = backbones.load(name, config["image_size"])
        models.freeze(backbone.features)
        features = EvalModeBackbone(backbone.features) if config["course_bn"] == "frozen" else backbone.features
        engine.seed_everything(config["seed"], device)  # the head starts as the pipeline's does
        head = models.make_head(backbone.num_features, grid["n_classes"], backbone.info.dropout)
        model = nn.Sequential(backbone.transform, models.TransferModel(features, head))
        train_loader = DataLoader(TensorDataset(*grid["train"][size]), batch_size=config["batch_size"],
                                  shuffle=True, generator=torch.Generator().manual_seed(config["seed"]))
        test_loader = DataLoader(TensorDataset(*grid["test"]), batch_size=config["batch_size"])
        optimizer = engine.make_optimizer(config["optimizer"], head.parameters(), config["lr"])
        history = engine.train(model, train_loader, test_loader, nn.CrossEntropyLoss(), optimizer, epochs,
                               device, desc=f"course {name} {size} {epochs}")
        accuracies[f"{size}_images-{name}-{epochs}_epochs"] = history["test_acc"][-1]
    return {"test_acc": accuracies}


def _distinct_images(config: dict):
    """Every distinct image the grid uses, laid out as the pipeline holds them (N x H x W x 3 uint8)."""
    import numpy as np
    import torch

    grid = load_grid_data(config)
    return np.ascontiguousarray(torch.cat([grid["union"], grid["test"][0]]).permute(0, 2, 3, 1).numpy())


def bare_pass(backbone, images, batch_size: int) -> None:
    """One bare inference pass over N x H x W x 3 uint8 images, batches fed as the pipeline feeds them."""
    import torch

    with torch.inference_mode():
        for first in range(0, len(images), batch_size):
            batch = torch.as_tensor(images[first:first + batch_size]).permute(0, 3, 1, 2)
            backbone.features(backbone.transform(batch))


def phase_floor(config: dict) -> dict:
    """The floor: one bare inference pass of each backbone over each distinct image."""
    from transferlab import backbones

    images = _distinct_images(config)
    for name in config["models"]:
        bare_pass(backbones.load(name, config["image_size"]), images, config["batch_size"])
    return {"images": len(images)}


def phase_extract(config: dict) -> dict:
    """The pipeline's feature extraction (FeatureCache, cold) against the bare loop on the same
    backbone, images and batch size; rounds alternate the two, so drifts in machine speed hit both."""
    import torch

    from transferlab import backbones
    from transferlab.features import FeatureCache

    images = _distinct_images(config)
    bare, cached = {}, {}
    for name in config["models"]:
        backbone = backbones.load(name, config["image_size"])
        bare[name], cached[name] = [], []
        for _ in range(config["extract_rounds"]):
            start = time.perf_counter()
            bare_pass(backbone, images, config["batch_size"])
            bare[name].append(time.perf_counter() - start)
            with tempfile.TemporaryDirectory() as cache_dir:
                start = time.perf_counter()
                cache = FeatureCache(name, config["image_size"], cache_dir, load=lambda *_: backbone)
                cache.get(images, config["batch_size"], torch.device("cpu"))
                cached[name].append(time.perf_counter() - start)
    return {"images": len(images), "bare_s": bare, "cache_s": cached}


def phase_profile(config: dict) -> dict:
    """cProfile of the train_transfer stage (cold feature cache): where the time goes."""
    shutil.rmtree("bench_features", ignore_errors=True)
    sys.argv = ["stages/train_transfer.py", "data/prepared", "data/subsets", "bench_models", "bench_metrics.json",
                "bench_plots", "bench_runs", "bench_summaries", "--cache-dir", "bench_features"]
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    import runpy

    runpy.run_path("stages/train_transfer.py", run_name="__main__")
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    wanted = {
        "backbone feature extraction": ("features.py", "compute"),
        "head training (engine.train, with per-epoch checkpoints)": ("engine.py", "train"),
        "TensorBoard graph tracing": ("tracking.py", "trace_graph"),
        "torchinfo summaries": ("experiments.py", "model_summaries"),
        "building backbones (timm/torchvision imports, weights)": ("backbones.py", "load"),
        "TensorBoard hparams/close": ("tracking.py", "log_hparams"),
    }
    breakdown = {}
    for label, (filename, function) in wanted.items():
        breakdown[label] = sum(row[3] for (file, _, func), row in stats.stats.items()
                               if file.endswith(filename) and func == function)
    breakdown["everything else (imports, data loading, ...)"] = max(0.0, total - sum(breakdown.values()))
    return {"total_s": total, "breakdown_s": breakdown}


PHASES = {"course": phase_course, "floor": phase_floor, "extract": phase_extract, "profile": phase_profile}


# --- orchestration --------------------------------------------------------------------------------

def grid_params(args: argparse.Namespace) -> dict:
    params = tiny_params(Path(args.source))
    params["data"] = {"source": str(Path(args.source).resolve()), "image_size": args.data_image_size}
    params["subset"] = {"tinyvgg_train_size": args.tinyvgg_size, "test_size": args.test_size}
    params["tinyvgg"].update(epochs=1, hidden_units=10, batch_size=32)
    params.update(model=args.models, train_size=args.train_sizes, epochs=args.epochs)
    params["transfer"].update(image_size=args.image_size, batch_size=args.batch_size, freeze=True)
    return params


def main(args: argparse.Namespace) -> dict:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-grid-"))
    project = make_project(workdir / "project", grid_params(args))
    log = workdir / "bench.log"
    params = json.loads(json.dumps(grid_params(args)))
    config = {"models": args.models, "train_sizes": args.train_sizes, "epochs": args.epochs,
              "image_size": args.image_size, "batch_size": args.batch_size, "seed": params["seed"],
              "optimizer": params["transfer"]["optimizer"], "lr": params["transfer"]["lr"],
              "course_bn": args.course_bn, "extract_rounds": args.extract_rounds}
    print(f"work directory: {workdir} (log: {log})", flush=True)

    measure(["dvc", "repro", "train_tinyvgg"], project, log)  # setup: data, subsets, TinyVGG (untimed)
    # Every round runs the same commands: params back to the grid, feature cache deleted, and DVC's
    # run cache bypassed (a later round would otherwise restore the first round's outputs).
    rounds = {"pipeline": [], "epochs_rerun": [], "floor": []}
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}: pipeline, epochs-only rerun, floor ...", flush=True)
        write_params(project, grid_params(args))
        shutil.rmtree(machine_cache(project), ignore_errors=True)
        rounds["pipeline"].append(measure(["dvc", "repro", "--no-run-cache", "evaluate"], project, log))
        evaluation = json.loads((project / "metrics/evaluation.json").read_text())
        rounds["pipeline"][-1]["test_acc"] = {name: m["test_acc"] for name, m in evaluation.items()
                                              if name != "tinyvgg"}
        write_params(project, {**grid_params(args), "epochs": [e + 1 for e in args.epochs]})
        rounds["epochs_rerun"].append(measure(["dvc", "repro", "--no-run-cache", "evaluate"], project, log))
        rounds["floor"].append(run_phase("floor", project, config, log))
    pipeline, epochs_rerun, floor = (fastest(runs) for runs in rounds.values())
    measure(["dvc", "repro"], project, log)  # select_best, so the next repro has nothing to do
    noop = measure(["dvc", "repro"], project, log)
    torch_import, dynamo_import = (fastest([measure([sys.executable, "-c", f"import {module}"], project, log)
                                            for _ in range(3)]) for module in ("torch", "torch._dynamo"))

    print("feature extraction, profile ...", flush=True)
    extract = run_phase("extract", project, config, log)
    profile = run_phase("profile", project, config, log)
    print("course reference ...", flush=True)
    course = run_phase("course", project, config, log)

    results = {"config": config, "test_size": args.test_size, "pipeline": pipeline, "course": course,
               "floor": floor, "extract": extract, "epochs_rerun": epochs_rerun, "noop": noop,
               "torch_import": torch_import, "dynamo_import": dynamo_import, "profile": profile,
               "rounds": rounds}
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(r: dict) -> None:
    config = r["config"]
    experiments = list(itertools.product(config["models"], config["train_sizes"], config["epochs"]))
    seen = sum(epochs * (size + r["test_size"]) for _, size, epochs in experiments)
    distinct = r["floor"]["images"] * len(config["models"])
    print(f"\n== approaches (same data, params and machine; fastest of {len(r['rounds']['pipeline'])} "
          f"alternating rounds for pipeline, rerun and floor) ==")
    print(f"{'approach':<10} {'wall s':>9} {'backbone passes':>16} {'passes/s':>9} {'exp. images/s':>14} {'peak RSS MiB':>13}")
    rows = {"pipeline": (r["pipeline"], distinct), "course": (r["course"], seen), "floor": (r["floor"], distinct)}
    for name, (stats, passes) in rows.items():
        print(f"{name:<10} {stats['wall_s']:>9.1f} {passes:>16,} {passes / stats['wall_s']:>9.1f} "
              f"{seen / stats['wall_s']:>14.1f} {stats['peak_rss_mib']:>13.0f}")
    print("(exp. images/s: images seen by all experiments over all epochs, train + test, per second)")

    print("\n== final test accuracy per experiment ==")
    gaps = []
    for name in sorted(r["pipeline"]["test_acc"]):
        ours, theirs = r["pipeline"]["test_acc"][name], r["course"]["test_acc"][name]
        gaps.append(abs(ours - theirs) * 100)
        print(f"{name:<36} pipeline {ours:7.2%}   course {theirs:7.2%}   gap {gaps[-1]:5.2f} pp")

    speedup = r["course"]["wall_s"] / r["pipeline"]["wall_s"]
    over_floor = r["pipeline"]["wall_s"] / r["floor"]["wall_s"]
    rerun_share = r["epochs_rerun"]["wall_s"] / r["pipeline"]["wall_s"]
    peak = max(run["peak_rss_mib"] for runs in (r["rounds"]["pipeline"], r["rounds"]["epochs_rerun"], [r["noop"]])
               for run in runs)
    accuracies = [run["test_acc"] for run in r["rounds"]["pipeline"]]
    print("\n== ratios and targets ==")
    checks = [
        (f"course / pipeline            {speedup:8.1f}x", speedup >= 15, ">= 15x"),
        (f"largest accuracy gap         {max(gaps):8.2f} pp", max(gaps) <= 1.5, "<= 1.5 pp"),
        (f"pipeline / floor             {over_floor:8.2f}x", over_floor <= 1.3, "<= 1.3x"),
        (f"epochs-only rerun / full     {rerun_share:8.1%} ({r['epochs_rerun']['wall_s']:.1f} s)", rerun_share <= 0.10, "<= 10 %"),
        (f"no-op dvc repro              {r['noop']['wall_s']:8.2f} s", r["noop"]["wall_s"] <= 3, "<= 3 s"),
        (f"pipeline peak RSS            {peak:8.0f} MiB", peak <= 4096, "<= 4096 MiB"),
        ("pipeline accuracies identical in every round", all(a == accuracies[0] for a in accuracies), "same"),
    ]
    for name in config["models"]:
        bare_rate = r["extract"]["images"] / min(r["extract"]["bare_s"][name])
        extract_rate = r["extract"]["images"] / min(r["extract"]["cache_s"][name])
        checks.append((f"extraction {name:<14}    {extract_rate / bare_rate:8.2f}x of bare loop "
                       f"({extract_rate:.1f} vs {bare_rate:.1f} images/s)", extract_rate >= 0.9 * bare_rate, ">= 0.9x"))
    for line, ok, target in checks:
        print(f"{line:<72} target {target:<12} {'met' if ok else 'MISSED'}")
    fixed = r["noop"]["wall_s"] + r["torch_import"]["wall_s"] + r["dynamo_import"]["wall_s"]
    walls = {phase: ", ".join(f"{run['wall_s']:.1f}" for run in runs) for phase, runs in r["rounds"].items()}
    print("(all rounds, wall s: " + "; ".join(f"{phase} {times}" for phase, times in walls.items()) + ")")
    rounds = "; ".join(f"{name}: bare {', '.join(f'{t:.2f}' for t in r['extract']['bare_s'][name])} s, "
                       f"cache {', '.join(f'{t:.2f}' for t in r['extract']['cache_s'][name])} s"
                       for name in config["models"])
    print(f"(extraction: fastest of {config['extract_rounds']} alternating rounds each; all rounds: {rounds})")
    print(f"(a rerun's fixed part: no-op dvc repro {r['noop']['wall_s']:.2f} s + evaluate's `import torch` "
          f"{r['torch_import']['wall_s']:.2f} s + train_transfer's `import torch` and the torch._dynamo that "
          f"torch.optim imports, {r['dynamo_import']['wall_s']:.2f} s = {fixed:.1f} s = "
          f"{fixed / r['pipeline']['wall_s']:.1%} of the full run)")

    print(f"\n== where the pipeline's train_transfer time goes (cProfile, {r['profile']['total_s']:.1f} s) ==")
    for label, seconds in r["profile"]["breakdown_s"].items():
        print(f"{label:<46} {seconds:8.1f} s  {seconds / r['profile']['total_s']:6.1%}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        _, _, phase, config_json, result_file = sys.argv
        Path(result_file).write_text(json.dumps(PHASES[phase](json.loads(config_json))))
    else:
        main(parse_args())
