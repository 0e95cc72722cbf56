"""Benchmark: the pipeline's transfer grid against the course-style loop and the inference floors.

On the same data, params and machine, each in its own process (wall time and peak RSS from outside):
  pipeline  `dvc repro --no-run-cache evaluate` in a project copy from an empty machine-wide cache,
            then an epochs-only rerun (every epoch count + 1); after the last round a no-op repro;
  course    Bourke's chapter 07 loop: per experiment a fresh pretrained model, every epoch every
            train and test batch through the whole network (--course-bn frozen, the default, keeps
            the frozen backbone in eval mode as the pipeline does; train: model.train() semantics);
  floor     one bare PyTorch-eager pass of each backbone over each distinct image;
  floor_onnxruntime  the same on ONNX Runtime, each backbone exported first (as a cold cache makes
            the pipeline do).
Pipeline (with its rerun) and floors alternate for --rounds rounds; the fastest of each counts. Plus
feature extraction alone (FeatureCache on ONNX Runtime, features cold, against both bare loops, in
--extract-rounds alternating rounds), FLOPs per image, a rerun's fixed costs and a cProfile of
train_transfer.

  python bench/grid.py --source ../shared/data/cifar10-jpg.tar.gz               # BENCHMARKS.md's run
  python bench/grid.py --source DIR --models effnet_lite0 --train-sizes 6 --epochs 1 2 \\
      --test-size 6 --image-size 32 --tinyvgg-size 12                           # a smoke run
"""

import cProfile
import itertools
import pstats
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as `python bench/grid.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.report import Table, Target, targets

PIPELINE = ["dvc", "repro", "--no-run-cache", "evaluate"]  # no run cache: a round never restores another's
FLOORS = ("floor", "floor_onnxruntime")
LOOPS = {"bare_s": "eager loop", "onnx_bare_s": "ONNX Runtime loop", "cache_s": "FeatureCache (ORT)"}
TARGETS = {
    "speedup": Target("course / pipeline wall time", ">=", 15, "x", ".1f"),
    # the pipeline's features come from ONNX Runtime, the course loop's from PyTorch eager
    "gap": Target("largest accuracy gap, pipeline vs course", "<=", 0.2, " pp"),
    "over_eager": Target("pipeline / PyTorch-eager floor", "<=", 0.55, "x"),
    "over_onnx": Target("pipeline / ONNX Runtime floor", "<=", 1.15, "x"),
    "rerun": Target("epochs-only rerun / full run", "<=", 10, " %", ".1f"),
    "noop": Target("no-op dvc repro", "<=", 3, " s"),
    "rss": Target("pipeline peak RSS, all rounds", "<=", 4096, " MiB", ".0f"),
    "same": Target("pipeline accuracies identical in every round", "==", True),
    "vs_eager": Target("extraction {} / the eager loop", ">=", 2.2, "x"),
    "vs_onnx": Target("extraction {} / the bare ONNX Runtime loop", ">=", 0.9, "x"),
}
PROFILED = {  # label: (file, function) of train_transfer's cProfile
    "backbone feature extraction": ("features.py", "compute"),
    "ONNX export (once per backbone, then cached)": ("runtimes.py", "export_onnx"),
    "head training (engine.train, with per-epoch checkpoints)": ("engine.py", "train"),
    "TensorBoard graph tracing": ("tracking.py", "trace_graph"),
    "torchinfo summaries": ("transfer.py", "model_summaries"),
    "building backbones (timm/torchvision imports, weights)": ("backbones.py", "load"),
    "TensorBoard hparams/close": ("tracking.py", "log_hparams"),
}


def arguments(parser) -> None:
    parser.set_defaults(test_size=250)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of pipeline (+ rerun) and floors")
    parser.add_argument("--extract-rounds", type=int, default=3, help="alternating rounds of the extraction loops")
    parser.add_argument("--course-bn", choices=["frozen", "train"], default="frozen", help="the course's BatchNorm")


def params(args, epochs=None) -> dict:
    return harness.bench_params(args, **({"epochs": epochs} if epochs else {}))


def run(project: harness.Project, args) -> dict:
    config = harness.phase_config(args, params(args), course_bn=args.course_bn, extract_rounds=args.extract_rounds)
    project.measure(["dvc", "repro", "train_tinyvgg"], project.cache("setup"))  # data, subsets, TinyVGG: untimed
    rounds = {"pipeline": [], "epochs_rerun": [], **{floor: [] for floor in FLOORS}}
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}: pipeline, epochs-only rerun, floors ...", flush=True)
        project.write_params(params(args))
        cache_dir = project.cache("pipeline", fresh=True)
        rounds["pipeline"].append({**project.measure(PIPELINE, cache_dir), "test_acc": project.stage_accuracies()})
        project.write_params(params(args, epochs=[e + 1 for e in args.epochs]))
        rounds["epochs_rerun"].append(project.measure(PIPELINE, cache_dir))
        for floor in FLOORS:
            rounds[floor].append(project.run_phase(f"bench.grid:{floor}", config, project.cache(floor, fresh=True)))
    project.measure(["dvc", "repro"], cache_dir)  # select_best, so the next repro has nothing to do
    results = {name: harness.fastest(runs) for name, runs in rounds.items()}
    results |= {"config": config, "rounds": rounds, "noop": project.measure(["dvc", "repro"], cache_dir)}
    for key, module in (("torch_import", "torch"), ("dynamo_import", "torch._dynamo")):
        imports = [project.measure([sys.executable, "-c", f"import {module}"], cache_dir) for _ in range(3)]
        results[key] = harness.fastest(imports)
    print("feature extraction, profile, course reference ...", flush=True)
    for phase in ("extract", "profile", "course"):  # each cold: an empty machine-wide cache
        results[phase] = project.run_phase(f"bench.grid:{phase}", config, project.cache(phase, fresh=True))
    return results


# --- phases: in their own process in the copy --------------------------------------------------------


def course(config: dict) -> dict:
    from torch import nn

    from bench import reference
    from transferlab import backbones, engine, networks

    def build(name, n_classes, device):
        backbone = backbones.load(name, config["image_size"])
        networks.freeze(backbone.features)
        features = backbone.features
        if config["course_bn"] == "frozen":
            features = reference.EvalModeBackbone(features)
        engine.seed_everything(config["seed"], device)
        head = networks.make_head(backbone.num_features, n_classes, backbone.info.dropout)
        return nn.Sequential(backbone.transform, networks.TransferModel(features, head)), head.parameters(), name

    return reference.naive_accuracies(config, build)


def floor(config: dict) -> dict:
    from bench import reference
    from transferlab import backbones

    images = reference.distinct_images(config)
    for name in config["models"]:
        reference.bare_pass(backbones.load(name, config["image_size"]), images, config["batch_size"])
    return {"images": len(images)}


def floor_onnxruntime(config: dict) -> dict:
    from bench import reference
    from transferlab import backbones, runtimes

    images = reference.distinct_images(config)
    for name in config["models"]:
        model = runtimes.export_onnx(backbones.load(name, config["image_size"]), *images.shape[1:3])
        reference.bare_onnx_pass(runtimes.onnx_features(model, name), images, config["batch_size"])
    return {"images": len(images)}


def extract(config: dict) -> dict:
    """Per backbone, alternating rounds of the bare eager loop, the bare ONNX Runtime loop and
    FeatureCache.get (ONNX Runtime, features cold, export cached: a new instance each round, as a
    new process would have); the export's time; FLOPs per image, preprocessing included."""
    import torch

    from bench import reference
    from transferlab import backbones, runtimes
    from transferlab.runtimes import ImagesToFeatures

    images, batch = reference.distinct_images(config), config["batch_size"]
    shape = images.shape[1:3]
    result = {"images": len(images), "cpu": reference.cpu_peak(), "flops_per_image": {}, "export_s": {}}
    result |= {loop: {} for loop in LOOPS}
    for name in config["models"]:
        backbone = backbones.load(name, config["image_size"])
        result["flops_per_image"][name] = reference.flops(ImagesToFeatures(backbone), torch.as_tensor(images[:1]))
        with tempfile.TemporaryDirectory() as cache_dir:
            result["export_s"][name] = harness.timed(cold_cache(name, config, cache_dir, backbone).onnx_model, *shape)
            onnx = runtimes.onnx_features(cold_cache(name, config, cache_dir, backbone).onnx_model(*shape), name)
            loops = {
                "bare_s": (reference.bare_pass, backbone, images, batch),
                "onnx_bare_s": (reference.bare_onnx_pass, onnx, images, batch),
                "cache_s": (cold_get, name, config, cache_dir, backbone, images),
            }
            for _ in range(config["extract_rounds"]):
                for loop, (function, *args) in loops.items():
                    result[loop].setdefault(name, []).append(harness.timed(function, *args))
    return result


def cold_cache(name: str, config: dict, cache_dir: str, backbone):
    """A new FeatureCache on ONNX Runtime (as a new process has) with no features cached."""
    from transferlab.features import FeatureCache

    cache = FeatureCache(name, config["image_size"], cache_dir, load=lambda *_: backbone, runtime="onnxruntime")
    shutil.rmtree(cache.shards_dir, ignore_errors=True)
    return cache


def cold_get(name: str, config: dict, cache_dir: str, backbone, images) -> None:
    import torch

    cold_cache(name, config, cache_dir, backbone).get(images, config["batch_size"], torch.device("cpu"))


def profile(config: dict) -> dict:
    """cProfile of train_transfer run as DVC runs it (outputs to bench_* paths): its total time and
    the part spent in each of PROFILED's functions."""
    sys.argv = ["stages/train_transfer.py", "data/prepared", "data/subsets"]
    sys.argv += ["bench_models", "bench_metrics.json", "bench_plots", "bench_runs", "bench_summaries"]
    profiler = cProfile.Profile()
    total = harness.timed(profiler.runcall, runpy.run_path, sys.argv[0], None, "__main__")
    stats = pstats.Stats(profiler).stats
    parts = {
        label: sum(row[3] for (file, _, func), row in stats.items() if file.endswith(filename) and func == function)
        for label, (filename, function) in PROFILED.items()
    }
    parts["everything else (imports, data loading, ...)"] = max(0.0, total - sum(parts.values()))
    return {"total_s": total, "breakdown_s": parts}


# --- report ------------------------------------------------------------------------------------------


def report(r: dict) -> list[Table]:
    config, extract, pipeline, course, rounds = r["config"], r["extract"], r["pipeline"], r["course"], r["rounds"]
    axes = itertools.product(config["models"], config["train_sizes"], config["epochs"])
    seen = sum(epochs * (size + r["args"]["test_size"]) for _, size, epochs in axes)  # every epoch's images
    approaches = []
    for name in ("pipeline", "course", *FLOORS):
        wall, passes = r[name]["wall_s"], seen if name == "course" else r["floor"]["images"] * len(config["models"])
        approaches.append((name, wall, passes, passes / wall, seen / wall, r[name]["peak_rss_mib"]))
    accuracy = [(n, 100 * a, 100 * course["test_acc"][n]) for n, a in sorted(pipeline["test_acc"].items())]
    accuracy = [(*row, abs(row[1] - row[2])) for row in accuracy]
    peak = max(run["peak_rss_mib"] for run in [*rounds["pipeline"], *rounds["epochs_rerun"], r["noop"]])
    rerun = r["epochs_rerun"]["wall_s"]
    checks = [
        (TARGETS["speedup"], course["wall_s"] / pipeline["wall_s"]),
        (TARGETS["gap"], max(row[3] for row in accuracy)),
        (TARGETS["over_eager"], pipeline["wall_s"] / r["floor"]["wall_s"]),
        (TARGETS["over_onnx"], pipeline["wall_s"] / r["floor_onnxruntime"]["wall_s"]),
        (TARGETS["rerun"], 100 * rerun / pipeline["wall_s"], f"{rerun:.1f} s"),
        (TARGETS["noop"], r["noop"]["wall_s"]),
        (TARGETS["rss"], peak),
        (TARGETS["same"], all(run["test_acc"] == pipeline["test_acc"] for run in rounds["pipeline"])),
    ]
    extraction, walls = [], [(name, [run["wall_s"] for run in runs]) for name, runs in rounds.items()]
    for name in config["models"]:
        rate = {loop: extract["images"] / min(extract[loop][name]) for loop in LOOPS}
        checks.append((TARGETS["vs_eager"].named(name), rate["cache_s"] / rate["bare_s"]))
        checks.append((TARGETS["vs_onnx"].named(name), rate["cache_s"] / rate["onnx_bare_s"]))
        gflop = extract["flops_per_image"][name] / 1e9
        cells = [f"{rate[loop]:.1f} img/s, {rate[loop] * gflop:.1f} GFLOP/s" for loop in LOOPS]
        extraction.append((name, gflop, extract["export_s"][name], *cells))
        walls += [(f"{name} {label}", extract[loop][name]) for loop, label in LOOPS.items()]
    walls = [(name, ", ".join(f"{s:.2f}" for s in seconds)) for name, seconds in walls]
    fixed = [(part, r[key]["wall_s"], None) for key, part in FIXED.items()]
    fixed.append(("sum", sum(row[1] for row in fixed), 100 * sum(row[1] for row in fixed) / pipeline["wall_s"]))
    profiled = r["profile"]["total_s"]
    profile = [(part, s, 100 * s / profiled) for part, s in r["profile"]["breakdown_s"].items()]
    cpu = extract["cpu"]
    peak_note = f"this CPU's rough FP32 peak: {cpu['cores']} cores x {cpu['ghz']:.2f} GHz x "
    peak_note += f"{cpu['flops_per_cycle']} FLOPs/cycle = {cpu['gflops']:.0f} GFLOP/s; FLOPs: 2 per multiply-add"
    return [
        Table("approaches", APPROACH_COLUMNS, approaches, [f"fastest of {len(rounds['pipeline'])} alternating rounds"]),
        Table(
            "final test accuracy, %", {"experiment": "", "pipeline": ".2f", "course": ".2f", "gap pp": ".2f"}, accuracy
        ),
        targets(checks),
        Table(
            f"feature extraction, fastest of {config['extract_rounds']} rounds",
            EXTRACT_COLUMNS,
            extraction,
            [peak_note],
        ),
        Table("all rounds, wall s", {"what": "", "rounds": ""}, walls),
        Table("a rerun's fixed part", {"part": "", "s": ".2f", "% of the full run": ".1f"}, fixed),
        Table(
            f"where train_transfer's time goes (cProfile, {profiled:.1f} s)",
            {"part": "", "s": ".1f", "%": ".1f"},
            profile,
        ),
    ]


FIXED = {
    "noop": "no-op dvc repro",
    "torch_import": "evaluate's `import torch`",
    "dynamo_import": "train_transfer's `import torch._dynamo` (torch.optim's)",
}
APPROACH_COLUMNS = {"approach": "", "wall s": ".1f", "backbone passes": ",", "passes/s": ".1f"}
APPROACH_COLUMNS |= {"experiment images/s": ".1f", "peak RSS MiB": ".0f"}
EXTRACT_COLUMNS = {"backbone": "", "GFLOP/image": ".3f", "export s": ".1f", **{label: "" for label in LOOPS.values()}}


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
