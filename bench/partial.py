"""Benchmark: the backbone's last stages fine-tuned on cached activations, against frozen heads and
against the same stages trained the naive way.

On the same data, params and machine; each from an empty machine-wide cache, timed as a forced
`dvc repro --no-run-cache --single-item` of train_transfer, then of evaluate (download, subsets and
TinyVGG set up first, untimed):
  frozen         the grid with `trainable_stages: 0` (frozen backbone, new head);
  partial        the same grid with `trainable_stages: N` (--stages): the frozen part's activations
                 computed once per image and cached, the last N stages and the head trained on them;
                 (frozen and partial alternate for --rounds rounds; the fastest of each counts)
  partial_small  partial on --naive-models with a --naive-test-size test subset;
  naive          the same stages trained on partial_small's data the naive way: every epoch's train
                 and test batches through the whole network, each experiment afresh.
Plus the cached activations' size, and the least time the tails' training takes at this CPU's
rough FP32 peak (their FLOPs: forward 1x, a training step 3x).

  python bench/partial.py --source ../shared/data/cifar10-jpg.tar.gz --rounds 2    # BENCHMARKS.md
  python bench/partial.py --source DIR --models effnet_lite0 --train-sizes 6 --epochs 1 2 \\
      --test-size 6 --naive-test-size 6 --image-size 64 --tinyvgg-size 12         # a smoke run
"""

import sys
from pathlib import Path

if not __package__:  # run as `python bench/partial.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.report import Table, Target, targets

STAGES = ["dvc", "repro", "--force", "--no-run-cache", "--single-item"]  # every run trains from scratch
TARGETS = {
    "gain": Target("gain over the frozen head, {}", ">=", 3, " pp", "+.2f"),
    "gap": Target("largest gap to the naive way", "<=", 0.5, " pp"),
    "speedup": Target("naive / cached wall time, the same grid", ">=", 10, "x", ".1f"),
    "over_frozen": Target("partial grid / frozen grid", "<=", 1.5, "x"),
}


def arguments(parser) -> None:
    parser.add_argument("--stages", type=int, default=1, help="trainable_stages of the partial runs")
    parser.add_argument("--naive-models", nargs="+", default=["effnet_lite0"], help="the naive reference's grid")
    parser.add_argument("--naive-test-size", type=int, default=500, help="the naive reference's test subset")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of frozen and partial")


def params(args, stages: int = 0, **grid) -> dict:
    return harness.bench_params(args, **grid) | {"trainable_stages": stages}


def run_grid(project: harness.Project, params: dict, cache_name: str) -> dict:
    """Set up `params` (untimed), then the pipeline from an empty cache: wall time, peak RSS, test
    accuracies and what the cache holds."""
    project.write_params(params)
    cache_dir = project.cache(cache_name, fresh=True)
    project.measure(["dvc", "repro", "train_tinyvgg"], cache_dir)
    runs = [project.measure([*STAGES, stage], cache_dir) for stage in ("train_transfer", "evaluate")]
    config = {"models": params["model"], "image_size": params["transfer"]["image_size"]}
    cache = project.run_phase("bench.reference:cache_stats", config | {"stages": params["trainable_stages"]}, cache_dir)
    cache.pop("wall_s"), cache.pop("peak_rss_mib")
    wall, rss = sum(run["wall_s"] for run in runs), max(run["peak_rss_mib"] for run in runs)
    return {"wall_s": wall, "peak_rss_mib": rss, "test_acc": project.stage_accuracies(), "cache": cache}


def run(project: harness.Project, args) -> dict:
    rounds = {"frozen": [], "partial": []}
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}: frozen grid, partial grid ...", flush=True)
        rounds["frozen"].append(run_grid(project, params(args), "frozen"))
        rounds["partial"].append(run_grid(project, params(args, args.stages), "partial"))
    print("partial grid on the naive reference's data, then the naive reference ...", flush=True)
    small = params(args, args.stages, models=args.naive_models, test_size=args.naive_test_size)
    results = {name: harness.fastest(runs) for name, runs in rounds.items()} | {"rounds": rounds}
    results["partial_small"] = run_grid(project, small, "partial_small")
    config = harness.phase_config(args, small, models=args.naive_models, trainable_stages=args.stages)
    results["naive"] = project.run_phase("bench.partial:naive", config, project.cache("naive", fresh=True))
    config["models"] = args.models
    results["tail_flops"] = project.run_phase("bench.partial:tail_flops", config, project.cache("naive"))
    return results | {"config": config}


# --- phases: in their own process in the copy --------------------------------------------------------


def naive(config: dict) -> dict:
    """The last `trainable_stages` stages trained through the whole network (the frozen part in
    eval mode), each experiment afresh: the pipeline's model, seed, batches and optimizer."""
    from torch import nn

    from bench import reference
    from transferlab import backbones, engine, networks

    stages = config["trainable_stages"]

    def build(name, n_classes, device):
        backbone = backbones.load(name, config["image_size"])
        frozen, tail = backbones.split(backbone.features, stages)
        networks.freeze(frozen)
        engine.seed_everything(config["seed"], device)
        head = networks.transfer_head(name, n_classes)
        network = nn.Sequential(backbone.transform, reference.EvalModeBackbone(frozen), networks.TailModel(tail, head))
        return network, [p for p in network.parameters() if p.requires_grad], f"{name}+{stages}_stages"

    return reference.naive_accuracies(config, build)


def tail_flops(config: dict) -> dict:
    """Per backbone, the FLOPs per image of a forward pass of its last stages and head, and this
    CPU's rough peak. (FlopCounterMode counts a depthwise convolution's backward as a dense one's,
    so the report takes 3 forward passes for a training step instead.)"""
    import json

    import torch

    from bench import reference
    from transferlab import backbones, networks

    n_classes = len(json.loads(Path("data/prepared/classes.json").read_text()))
    result = {"cpu": reference.cpu_peak(), "forward_flops_per_image": {}}
    for name in config["models"]:
        backbone = backbones.load(name, config["image_size"])
        frozen, tail = backbones.split(backbone.features, config["trainable_stages"])
        size = backbone.transform.crop_size[0]
        with torch.inference_mode():
            activations = frozen(torch.zeros(2, 3, size, size))
        network = networks.TailModel(tail, networks.transfer_head(name, n_classes))
        result["forward_flops_per_image"][name] = reference.flops(network, activations) / len(activations)
    return result


# --- report ------------------------------------------------------------------------------------------


def report(r: dict) -> list[Table]:
    config, stages, test_size = r["config"], r["config"]["trainable_stages"], r["args"]["test_size"]
    frozen, partial, small, naive_run = r["frozen"], r["partial"], r["partial_small"], r["naive"]
    accuracy, checks = [], []
    for name, acc in frozen["test_acc"].items():
        size, model, epochs = name.split("-")
        tuned = partial["test_acc"][f"{size}-{model}+{stages}_stages-{epochs}"]
        accuracy.append((name, 100 * acc, 100 * tuned, 100 * (tuned - acc)))
        if name.startswith(f"{min(config['train_sizes'])}_images-effnet_lite0-"):
            checks.append((TARGETS["gain"].named(name), accuracy[-1][3]))
    versus = [(n, 100 * small["test_acc"][n], 100 * a) for n, a in sorted(naive_run["test_acc"].items())]
    versus = [(*row, abs(row[1] - row[2])) for row in versus]
    walls = []
    for name in ("frozen", "partial", "partial_small", "naive"):
        runs = ", ".join(f"{run['wall_s']:.1f}" for run in r["rounds"].get(name, []))
        walls.append((name, r[name]["wall_s"], runs, r[name]["peak_rss_mib"]))
    cached = [
        (s["folder"], s["images"], s["bytes"] / 2**20, s["bytes"] / max(s["images"], 1) / 1024)
        for s in partial["cache"].values()
    ]
    flops, peak = r["tail_flops"]["forward_flops_per_image"], r["tail_flops"]["cpu"]["gflops"]
    epochs = max(config["epochs"])  # a grid's epoch counts share one run per backbone and train size
    tail_s = sum(epochs * (3 * n + test_size) * flops[m] for m in config["models"] for n in config["train_sizes"]) / (
        peak * 1e9
    )
    floor = [("tails' training at the CPU's FP32 peak, s", tail_s)]
    floor.append(("partial / frozen grid, at least (x)", (frozen["wall_s"] + tail_s) / frozen["wall_s"]))
    floor.append(("partial grid / (frozen grid + tails at peak) (x)", partial["wall_s"] / (frozen["wall_s"] + tail_s)))
    floor += [(f"{name} tail: forward GFLOP/image", f / 1e9) for name, f in flops.items()]
    checks += [
        (TARGETS["gap"], max(row[3] for row in versus)),
        (TARGETS["speedup"], naive_run["wall_s"] / small["wall_s"]),
        (TARGETS["over_frozen"], partial["wall_s"] / frozen["wall_s"]),
    ]
    naive_images = r["args"]["naive_test_size"]
    return [
        Table(
            f"test accuracy, %, frozen head vs last {stages} stage(s) ({test_size:,} test images)", ACCURACY, accuracy
        ),
        Table(f"cached activations vs the naive way, % ({naive_images:,} test images)", VERSUS, versus),
        Table(
            "wall time (train_transfer + evaluate)",
            {"approach": "", "wall s": ".1f", "rounds": "", "peak RSS MiB": ",.0f"},
            walls,
        ),
        Table("cached inputs (partial grid)", {"folder": "", "images": ",", "MiB": ".1f", "KiB/image": ".1f"}, cached),
        Table(f"arithmetic floor (this CPU's FP32 peak: {peak:.0f} GFLOP/s)", {"measure": "", "value": ".3f"}, floor),
        targets(checks),
    ]


ACCURACY = {"experiment": "", "frozen": ".2f", "partial": ".2f", "gain pp": "+.2f"}
VERSUS = {"experiment": "", "cached": ".2f", "naive": ".2f", "gap pp": ".2f"}


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
