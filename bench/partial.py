"""Benchmark: the backbone's last stages fine-tuned on cached activations, against frozen heads and
against the same stages trained the naive way.

In one invocation, on the same data, params and machine:
  1. frozen        - train_transfer and evaluate of the grid with `trainable_stages: 0` (frozen
                     backbone, new head), each by a forced `dvc repro` without the run cache, from
                     an empty machine-wide cache;
  2. partial       - the same grid with `trainable_stages: N` (--stages, default 1): the frozen
                     part's activations computed once per image and cached, the last N stages, the
                     conv head and the new head trained on them; from an empty cache;
     (1 and 2 alternate for --rounds rounds; the fastest of each counts)
  3. partial_small - 2 again on --naive-models and a --naive-test-size test subset, from an empty cache;
  4. naive         - the same N stages trained on 3's exact data the naive way (bench.phases naive:
                     every epoch's train and test batches through the whole network, each
                     experiment afresh), the reference 3 is compared with.
Download, subset and TinyVGG are set up first (untimed), and again before 3 (its test subset is
another). The report compares accuracies and wall times against their targets and gives the size
of the cached activations per image and backbone, and the least time the grid's tail training can
take on this CPU: its FLOPs (bench.phases tail_flops) at the CPU's rough FP32 peak.

  python bench/partial.py --source ../shared/data/cifar10-jpg.tar.gz          # BENCHMARKS.md's run
  python bench/partial.py --source DIR --models effnet_lite0 --train-sizes 6 --epochs 1 2 \\
      --test-size 6 --naive-test-size 6 --image-size 64 --tinyvgg-size 12         # a smoke run
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as `python bench/partial.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from bench.project import Project, bench_params, fastest, finish

# Forced, without the run cache: every round trains and scores from scratch, whatever ran before
PIPELINE = [
    ["dvc", "repro", "--force", "--no-run-cache", "--single-item", stage] for stage in ("train_transfer", "evaluate")
]
SETUP = ["dvc", "repro", "train_tinyvgg"]  # data, subsets and TinyVGG: untimed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="data.source for the run (ImageFolder dir or archive)")
    parser.add_argument("--models", nargs="+", default=["effnet_lite0", "effnet_lite2"])
    parser.add_argument("--train-sizes", nargs="+", type=int, default=[500, 1000])
    parser.add_argument("--epochs", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--stages", type=int, default=1, help="trainable_stages of the partial runs")
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--naive-models", nargs="+", default=["effnet_lite0"], help="the naive reference's grid")
    parser.add_argument("--naive-test-size", type=int, default=500, help="the naive reference's test subset")
    parser.add_argument("--image-size", type=int, default=None, help="transfer.image_size (default: each backbone's)")
    parser.add_argument("--tinyvgg-size", type=int, default=1000, help="TinyVGG subset (setup only, untimed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of frozen and partial")
    parser.add_argument("--workdir", type=Path, help="keep the project copy here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    return parser.parse_args(argv)


def grid_params(args: argparse.Namespace, stages: int, models=None, test_size=None) -> dict:
    """The project's params for a grid with `stages` trainable stages (--models and --test-size
    unless given)."""
    params = bench_params(
        args.source,
        models=models or args.models,
        train_sizes=args.train_sizes,
        epochs=args.epochs,
        test_size=test_size or args.test_size,
        tinyvgg_size=args.tinyvgg_size,
        image_size=args.image_size,
        batch_size=args.batch_size,
    )
    params["trainable_stages"] = stages
    return params


def run_grid(project: Project, params: dict, cache_name: str) -> dict:
    """`params` set up (untimed), then the pipeline from an empty cache: its wall time, peak RSS,
    test accuracies and what its feature cache holds."""
    project.write_params(params)
    cache_dir = project.fresh_cache(cache_name)
    project.measure(SETUP, cache_dir)
    stages = [project.measure(command, cache_dir) for command in PIPELINE]
    result = {"wall_s": sum(s["wall_s"] for s in stages), "peak_rss_mib": max(s["peak_rss_mib"] for s in stages)}
    evaluation = json.loads((project.path / "metrics/evaluation.json").read_text())
    result["test_acc"] = {name: m["test_acc"] for name, m in evaluation.items() if name != "tinyvgg"}
    result["cache"] = cached_inputs(cache_dir)
    return result


def cached_inputs(cache_dir: Path) -> dict[str, dict]:
    """Per cached folder of features or activations (backbone, size, boundary, runtime): its bytes
    and image count (the image count from the shards' keys)."""
    from transferlab.torchfiles import load_torch

    folders = {}
    for shard in sorted(Path(cache_dir).glob("features/*/**/*.pt")):
        if "derived" in shard.parts:
            continue
        folder = str(shard.parent.relative_to(Path(cache_dir) / "features"))
        entry = folders.setdefault(folder, {"bytes": 0, "images": 0})
        entry["bytes"] += shard.stat().st_size
        entry["images"] += len(load_torch(shard)["keys"])
    return folders


def main(args: argparse.Namespace) -> dict:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-partial-"))
    project = Project.create(workdir, grid_params(args, 0))
    print(f"work directory: {workdir} (log: {project.log})", flush=True)
    rounds = {"frozen": [], "partial": []}
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}: frozen grid, partial grid ...", flush=True)
        rounds["frozen"].append(run_grid(project, grid_params(args, 0), "frozen"))
        rounds["partial"].append(run_grid(project, grid_params(args, args.stages), "partial"))
    print("partial grid on the naive reference's data, then the naive reference ...", flush=True)
    small = grid_params(args, args.stages, args.naive_models, args.naive_test_size)
    partial_small = run_grid(project, small, "partial_small")
    config = {
        "models": args.naive_models,
        "train_sizes": args.train_sizes,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "trainable_stages": args.stages,
        "seed": small["seed"],
        "optimizer": small["transfer"]["optimizer"],
        "lr": small["transfer"]["lr"],
    }
    naive = project.run_phase("naive", config, project.fresh_cache("naive"))
    tail_flops = project.run_phase("tail_flops", {**config, "models": args.models}, project.cache("naive"))
    results = {
        "config": {**config, "models": args.models, "naive_models": args.naive_models},
        "test_size": args.test_size,
        "naive_test_size": args.naive_test_size,
        "frozen": fastest(rounds["frozen"]),
        "partial": fastest(rounds["partial"]),
        "partial_small": partial_small,
        "naive": naive,
        "tail_flops": tail_flops,
        "rounds": rounds,
    }
    report.partial(results)
    return finish(results, args.json, workdir, keep=bool(args.workdir))


if __name__ == "__main__":
    main(parse_args())
