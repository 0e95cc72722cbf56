"""Benchmark: the pipeline's transfer grid against the course-style loop and the inference floors.

In one invocation, on the same data, params and machine:
  1. pipeline  - `dvc repro` of train_transfer + evaluate in a temporary copy of the project
                 (cold machine-wide cache: no features, no exported models), then an epochs-only
                 rerun; after the last round, a no-op `dvc repro`. Frozen features run on
                 params.yaml's `transfer.runtime` (auto: ONNX Runtime on this CPU);
  2. course    - Bourke's chapter 07 loop: per experiment a fresh pretrained model, and every epoch
                 passes every train and test batch through the whole network (`--course-bn frozen`,
                 the default, holds the frozen backbone in eval mode as the pipeline does, so both
                 train the same model; `train` lets `model.train()` put its BatchNorm layers in
                 batch-statistics mode, exactly as the course's code does);
  3. floor     - one bare PyTorch-eager `torch.inference_mode()` pass of each backbone over each
                 distinct image;
  4. floor_onnxruntime - the same on ONNX Runtime, each backbone exported first (as a cold cache
                 makes the pipeline do).
The pipeline (with its rerun) and the floors run in alternating rounds (`--rounds`); the fastest of
each counts, so a drift in this machine's speed hits all. Plus the pipeline's feature extraction
(FeatureCache on ONNX Runtime, features cold) against both bare loops (alternating rounds in one
process, the fastest of each compared), with FLOPs per image and GFLOP/s, and a cProfile of the
train_transfer stage. Each phase runs in its own process:
wall time and peak RSS (wait4's ru_maxrss, child processes included) are measured from outside.

  python bench/grid.py --source ../shared/data/cifar10-jpg.tar.gz            # BENCHMARKS.md's run
  python bench/grid.py --source DIR --models effnet_lite0 --train-sizes 6 --epochs 1 2 \\
      --test-size 6 --image-size 32 --tinyvgg-size 12                           # a smoke run

(`python -m bench.grid ...` is the same.) The approaches other than the pipeline are in
bench/phases.py, the printed report and its targets in bench/report.py.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as `python bench/grid.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from bench.project import Project, bench_params, fastest, finish

PIPELINE = ["dvc", "repro", "--no-run-cache", "evaluate"]  # no run cache: a round never restores another's


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="data.source for the run (ImageFolder dir or archive)")
    parser.add_argument("--models", nargs="+", default=["effnet_lite0", "effnet_lite2"])
    parser.add_argument("--train-sizes", nargs="+", type=int, default=[500, 1000])
    parser.add_argument("--epochs", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--test-size", type=int, default=250)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="transfer.image_size (crop) for every backbone (default: each backbone's own "
        "input size, lite0 224 px and lite2 260 px, as params.yaml's null; "
        "BENCHMARKS.md's run)",
    )
    parser.add_argument("--data-image-size", type=int, default=32)
    parser.add_argument("--tinyvgg-size", type=int, default=1000, help="TinyVGG subset (setup only, untimed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds of pipeline (cold, then epochs-only rerun) and floor; the fastest of each counts",
    )
    parser.add_argument(
        "--extract-rounds",
        type=int,
        default=3,
        help="alternating rounds of bare loop and feature cache; the fastest of each counts",
    )
    parser.add_argument(
        "--course-bn",
        choices=["frozen", "train"],
        default="frozen",
        help="the course loop's backbone BatchNorm: frozen (eval mode, as the pipeline) or "
        "train (what model.train() does in the course's code)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the project copy here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    return parser.parse_args(argv)


def grid_params(args: argparse.Namespace, epochs: list[int] | None = None) -> dict:
    """The project's params for the grid (`epochs` instead of --epochs for the rerun)."""
    return bench_params(
        args.source,
        models=args.models,
        train_sizes=args.train_sizes,
        epochs=epochs or args.epochs,
        test_size=args.test_size,
        tinyvgg_size=args.tinyvgg_size,
        image_size=args.image_size,
        data_image_size=args.data_image_size,
        batch_size=args.batch_size,
    )


def phase_config(args: argparse.Namespace) -> dict:
    """What bench/phases.py's approaches need: the grid, and the pipeline's seed and optimizer."""
    params = grid_params(args)
    return {
        "models": args.models,
        "train_sizes": args.train_sizes,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "seed": params["seed"],
        "optimizer": params["transfer"]["optimizer"],
        "lr": params["transfer"]["lr"],
        "course_bn": args.course_bn,
        "extract_rounds": args.extract_rounds,
    }


def pipeline_round(project: Project, args: argparse.Namespace) -> tuple[dict, dict]:
    """The grid's params and an empty feature cache, the pipeline (with its test accuracies), then
    the epochs-only rerun (every epoch count + 1) on what the pipeline cached."""
    project.write_params(grid_params(args))
    cache_dir = project.fresh_cache("pipeline")
    pipeline = project.measure(PIPELINE, cache_dir)
    evaluation = json.loads((project.path / "metrics/evaluation.json").read_text())
    pipeline["test_acc"] = {name: m["test_acc"] for name, m in evaluation.items() if name != "tinyvgg"}
    project.write_params(grid_params(args, epochs=[e + 1 for e in args.epochs]))
    return pipeline, project.measure(PIPELINE, cache_dir)


def alternating_rounds(project: Project, args: argparse.Namespace, config: dict) -> dict[str, list[dict]]:
    """--rounds rounds of pipeline, epochs-only rerun and the two floors: every run of each."""
    rounds = {"pipeline": [], "epochs_rerun": [], "floor": [], "floor_onnxruntime": []}
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}: pipeline, epochs-only rerun, floors ...", flush=True)
        pipeline, rerun = pipeline_round(project, args)
        rounds["pipeline"].append(pipeline)
        rounds["epochs_rerun"].append(rerun)
        for floor in ("floor", "floor_onnxruntime"):
            rounds[floor].append(project.run_phase(floor, config, project.fresh_cache(floor)))
    return rounds


def fixed_costs(project: Project) -> dict[str, dict]:
    """What every rerun pays: a no-op `dvc repro` (after the last round's select_best), and the
    imports of torch and of the torch._dynamo that torch.optim imports (fastest of 3 each)."""
    cache_dir = project.cache("pipeline")  # the last round's
    project.measure(["dvc", "repro"], cache_dir)  # select_best, so the next repro has nothing to do
    costs = {"noop": project.measure(["dvc", "repro"], cache_dir)}
    for key, module in (("torch_import", "torch"), ("dynamo_import", "torch._dynamo")):
        costs[key] = fastest([project.measure([sys.executable, "-c", f"import {module}"], cache_dir) for _ in range(3)])
    return costs


def main(args: argparse.Namespace) -> dict:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-grid-"))
    project = Project.create(workdir, grid_params(args))
    config = phase_config(args)
    print(f"work directory: {workdir} (log: {project.log})", flush=True)

    project.measure(["dvc", "repro", "train_tinyvgg"], project.cache("setup"))  # data, subsets, TinyVGG: untimed
    rounds = alternating_rounds(project, args, config)
    pipeline, epochs_rerun, floor, floor_onnxruntime = (fastest(runs) for runs in rounds.values())
    costs = fixed_costs(project)

    print("feature extraction, profile ...", flush=True)
    extract = project.run_phase("extract", config, project.fresh_cache("extract"))
    profile = project.run_phase("profile", config, project.fresh_cache("profile"))  # cold: features and heads
    print("course reference ...", flush=True)
    course = project.run_phase("course", config, project.fresh_cache("course"))

    results = {
        "config": config,
        "test_size": args.test_size,
        "pipeline": pipeline,
        "course": course,
        "floor": floor,
        "floor_onnxruntime": floor_onnxruntime,
        "extract": extract,
        "epochs_rerun": epochs_rerun,
        **costs,
        "profile": profile,
        "rounds": rounds,
    }
    report.grid(results)
    return finish(results, args.json, workdir, keep=bool(args.workdir))


if __name__ == "__main__":
    main(parse_args())
