"""What the benchmarks run in a child process inside the project copy, on the copy's own code.

Entry point (`Project.run_phase` calls it; cwd: the project copy, after its `dvc repro`):

  python -m bench.phases PHASE CONFIG_JSON RESULT_JSON

runs PHASES[PHASE] on the JSON object CONFIG_JSON and writes what it returns, as JSON, to the file
RESULT_JSON. Each phase is its own process so that its wall time and peak memory are measured from
outside, like the pipeline's commands. The grid benchmark's in-process approaches:
  course   - Bourke's chapter 07 loop, the reference the pipeline is compared with;
  floor    - one bare PyTorch-eager inference pass of each backbone over each distinct image;
  floor_onnxruntime - the same on ONNX Runtime: build, export, load the export, one bare pass;
  extract  - the pipeline's feature extraction (FeatureCache on ONNX Runtime, features cold)
             against both bare loops, with each backbone's export time and FLOPs per image;
  profile  - a cProfile of the train_transfer stage (cold machine-wide cache: the caller gives it
             an empty TRANSFERLAB_CACHE_DIR).
The partial fine-tuning benchmark's reference:
  naive    - the backbone's last stages trained the naive way: per experiment a fresh pretrained
             model whose frozen part stays in eval mode, and every epoch passes every train and
             test batch through the whole network (the pipeline's seed, batches and head);
And the sweep benchmark's count of what a machine-wide cache holds:
  cache    - FeatureCache.stats() of each model in $TRANSFERLAB_CACHE_DIR (the features of the
             runtime the project's params.yaml chose).

CONFIG_JSON keys: models, train_sizes, epochs, image_size, batch_size, seed, optimizer, lr,
course_bn, extract_rounds (grid phases); the same and trainable_stages (naive); models,
image_size (cache).
"""

import cProfile
import itertools
import json
import os
import pstats
import runpy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

# The train_transfer profile, by (file, function): where a cold run's time goes.
PROFILED = {
    "backbone feature extraction": ("features.py", "compute"),
    "ONNX export (once per backbone, then cached)": ("runtimes.py", "export_onnx"),
    "head training (engine.train, with per-epoch checkpoints)": ("engine.py", "train"),
    "TensorBoard graph tracing": ("tracking.py", "trace_graph"),
    "torchinfo summaries": ("transfer.py", "model_summaries"),
    "building backbones (timm/torchvision imports, weights)": ("backbones.py", "load"),
    "TensorBoard hparams/close": ("tracking.py", "log_hparams"),
}
TRAIN_TRANSFER = [
    "stages/train_transfer.py",
    "data/prepared",
    "data/subsets",
    "bench_models",
    "bench_metrics.json",
    "bench_plots",
    "bench_runs",
    "bench_summaries",
]


# --- the grid's data ------------------------------------------------------------------------------


def as_tensor(images) -> torch.Tensor:
    """N x H x W x 3 uint8 (the pipeline's layout) as N x 3 x H x W."""
    return torch.as_tensor(images).permute(0, 3, 1, 2)


def load_grid_data(config: dict) -> dict:
    """The images and labels the pipeline's grid used (from the copy's `dvc repro`): the train
    subsets, their union, and the test subset."""
    from transferlab import data
    from transferlab import subsets as subset_files

    dataset = data.load("data/prepared")
    subsets = subset_files.load("data/subsets", "transfer_train", "test")
    train = {n: subsets["transfer_train"][str(n)] for n in config["train_sizes"]}
    union = sorted(set().union(*train.values()))
    test = subsets["test"]
    return {
        "union": as_tensor(dataset.train.images[union]),
        "test": (as_tensor(dataset.test.images[test]), torch.as_tensor(dataset.test.labels[test])),
        "train": {
            n: (as_tensor(dataset.train.images[idx]), torch.as_tensor(dataset.train.labels[idx]))
            for n, idx in train.items()
        },
        "n_classes": len(dataset.classes),
    }


def distinct_images(config: dict):
    """Every distinct image the grid uses, laid out as the pipeline holds them (N x H x W x 3 uint8)."""
    import numpy as np

    grid = load_grid_data(config)
    return np.ascontiguousarray(torch.cat([grid["union"], grid["test"][0]]).permute(0, 2, 3, 1).numpy())


def bare_pass(backbone, images, batch_size: int) -> None:
    """One bare PyTorch-eager inference pass over N x H x W x 3 uint8 images, batches fed as the
    pipeline feeds them."""
    with torch.inference_mode():
        for first in range(0, len(images), batch_size):
            backbone.features(backbone.transform(as_tensor(images[first : first + batch_size])))


def bare_onnx_pass(extract, images, batch_size: int) -> None:
    """The same on ONNX Runtime: `extract` is `runtimes.onnx_features` of the exported backbone."""
    for first in range(0, len(images), batch_size):
        extract(images[first : first + batch_size])


# --- course ---------------------------------------------------------------------------------------


class EvalModeBackbone(nn.Module):
    """A frozen backbone that stays in eval mode when the model around it is put in train mode."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features.eval()

    def train(self, mode: bool = True) -> "EvalModeBackbone":
        return super().train(False)

    def forward(self, x):
        return self.features(x)


def course_model(name: str, n_classes: int, config: dict, device) -> tuple[nn.Module, nn.Module]:
    """A fresh pretrained model as the course builds it: frozen backbone, new head (seeded as the
    pipeline's is); `course_bn` frozen keeps the backbone in eval mode, train lets model.train()
    switch its BatchNorm layers to batch statistics. Returns (model, head)."""
    from transferlab import backbones, engine, networks

    backbone = backbones.load(name, config["image_size"])
    networks.freeze(backbone.features)
    features = EvalModeBackbone(backbone.features) if config["course_bn"] == "frozen" else backbone.features
    engine.seed_everything(config["seed"], device)
    head = networks.make_head(backbone.num_features, n_classes, backbone.info.dropout)
    return nn.Sequential(backbone.transform, networks.TransferModel(features, head)), head


def final_test_accuracy(network: nn.Module, trainable, grid: dict, size: int, epochs: int, config: dict, desc: str):
    """Train `network`'s `trainable` parameters on the grid's `size` train images for `epochs`
    epochs, every batch through the whole network, with the config's seed, batch size and
    optimizer (the seeded shuffle a DataLoader would draw); its last epoch's test accuracy."""
    from torch.utils.data import TensorDataset

    from transferlab import engine

    generator = torch.Generator().manual_seed(config["seed"])
    history = engine.train(
        network,
        engine.batch_loader(TensorDataset(*grid["train"][size]), config["batch_size"], generator),
        engine.batch_loader(TensorDataset(*grid["test"]), config["batch_size"]),
        nn.CrossEntropyLoss(),
        engine.make_optimizer(config["optimizer"], trainable, config["lr"]),
        epochs,
        engine.select_device(),
        desc=desc,
    )
    return history["test_acc"][-1]


def experiments(config: dict):
    """Every (model, train size, epochs) of the grid, each trained afresh by the reference loops."""
    return itertools.product(config["models"], config["train_sizes"], config["epochs"])


def phase_course(config: dict) -> dict:
    """Bourke ch. 07: a fresh model per experiment; every epoch runs every batch through it all."""
    from transferlab import engine

    grid, device = load_grid_data(config), engine.select_device()
    accuracies = {}
    for name, size, epochs in experiments(config):
        model, head = course_model(name, grid["n_classes"], config, device)
        desc = f"course {name} {size} {epochs}"
        accuracies[f"{size}_images-{name}-{epochs}_epochs"] = final_test_accuracy(
            model, head.parameters(), grid, size, epochs, config, desc
        )
    return {"test_acc": accuracies}


def phase_naive(config: dict) -> dict:
    """The last `trainable_stages` stages trained through the whole network, each experiment afresh:
    the same model, seed, batches and optimizer as the pipeline's, without its cached activations."""
    from transferlab import backbones, engine, networks

    grid, device, stages = load_grid_data(config), engine.select_device(), config["trainable_stages"]
    accuracies = {}
    for name, size, epochs in experiments(config):
        backbone = backbones.load(name, config["image_size"])
        frozen, tail = backbones.split(backbone.features, stages)
        networks.freeze(frozen)
        engine.seed_everything(config["seed"], device)
        head = networks.transfer_head(name, grid["n_classes"])
        network = nn.Sequential(backbone.transform, EvalModeBackbone(frozen), networks.TailModel(tail, head))
        trainable = [p for p in network.parameters() if p.requires_grad]
        desc = f"naive {name}+{stages} {size} {epochs}"
        accuracies[f"{size}_images-{name}+{stages}_stages-{epochs}_epochs"] = final_test_accuracy(
            network, trainable, grid, size, epochs, config, desc
        )
    return {"test_acc": accuracies}


def phase_tail_flops(config: dict) -> dict:
    """Per backbone, the FLOPs per image (2 per multiply-add, counted by torch's FlopCounterMode) of
    a forward pass of its last `trainable_stages` stages with the head, and this CPU's rough FP32
    peak. (FlopCounterMode's count of a backward pass ignores a convolution's groups, so it counts
    a depthwise convolution's backward as a dense one's: the report takes the usual 3 forward passes
    for a training step instead.)"""
    from torch.utils.flop_counter import FlopCounterMode

    from transferlab import backbones, networks

    n_classes = len(json.loads(Path("data/prepared/classes.json").read_text()))
    result = {"cpu": cpu_peak(), "forward_flops_per_image": {}}
    for name in config["models"]:
        backbone = backbones.load(name, config["image_size"])
        frozen, tail = backbones.split(backbone.features, config["trainable_stages"])
        size = backbone.transform.crop_size[0]
        counter = FlopCounterMode(display=False)
        with torch.inference_mode():
            activations = frozen(torch.zeros(2, 3, size, size))
            with counter:
                networks.TailModel(tail, networks.transfer_head(name, n_classes))(activations)
        result["forward_flops_per_image"][name] = counter.get_total_flops() / len(activations)
    return result


# --- floor and extraction -------------------------------------------------------------------------


def phase_floor(config: dict) -> dict:
    """The PyTorch-eager floor: one bare inference pass of each backbone over each distinct image."""
    from transferlab import backbones

    images = distinct_images(config)
    for name in config["models"]:
        bare_pass(backbones.load(name, config["image_size"]), images, config["batch_size"])
    return {"images": len(images)}


def phase_floor_onnxruntime(config: dict) -> dict:
    """The ONNX Runtime floor: per backbone, build it, export it, load the export, one bare pass
    over each distinct image (what a cold cache makes the pipeline do, minus the pipeline)."""
    from transferlab import backbones, runtimes

    images = distinct_images(config)
    for name in config["models"]:
        model = runtimes.export_onnx(backbones.load(name, config["image_size"]), *images.shape[1:3])
        bare_onnx_pass(runtimes.onnx_features(model, name), images, config["batch_size"])
    return {"images": len(images)}


def timed(function, *args) -> float:
    """The wall time of `function(*args)`, in seconds."""
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def cold_extraction(cache, images, config: dict) -> None:
    """The pipeline's FeatureCache.get with no features cached (the export is: it stays in `cache`'s
    directory), on a new instance as a new process would have."""
    from transferlab.features import FeatureCache

    shutil.rmtree(cache.shards_dir, ignore_errors=True)
    fresh = FeatureCache(cache.name, cache.image_size, cache.directory.parents[1], runtime=cache.runtime)
    fresh.get(images, config["batch_size"], torch.device("cpu"))


def flops_per_image(backbone, image) -> int:
    """FLOPs (2 per multiply-add, convolutions and matrix products) of one image through the
    preprocessing and feature network, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    from transferlab.runtimes import ImagesToFeatures

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        ImagesToFeatures(backbone)(torch.as_tensor(image[None]))
    return counter.get_total_flops()


def cpu_peak() -> dict:
    """This CPU's rough FP32 peak: cores x clock x FLOPs per cycle (2 FMA units of 8 floats with
    AVX2, 16 with AVX-512, 2 FLOPs each)."""
    info = Path("/proc/cpuinfo").read_text()
    flags = set(next(line for line in info.splitlines() if line.startswith("flags")).split())
    mhz = float(next(line for line in info.splitlines() if line.startswith("cpu MHz")).split(":")[1])
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    cores = len(os.sched_getaffinity(0))
    return {"cores": cores, "ghz": mhz / 1000, "flops_per_cycle": per_cycle, "gflops": cores * mhz / 1000 * per_cycle}


def extraction_rounds(backbone, images, config: dict) -> dict:
    """One backbone's export time and its alternating rounds of the three extraction loops."""
    from transferlab import runtimes
    from transferlab.features import FeatureCache

    name = backbone.info.name
    result = {"bare_s": [], "onnx_bare_s": [], "cache_s": []}
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = FeatureCache(name, config["image_size"], cache_dir, load=lambda *_: backbone, runtime="onnxruntime")
        result["export_s"] = timed(cache.onnx_model, *images.shape[1:3])
        extract = runtimes.onnx_features(cache.onnx_model(*images.shape[1:3]), name)
        for _ in range(config["extract_rounds"]):
            result["bare_s"].append(timed(bare_pass, backbone, images, config["batch_size"]))
            result["onnx_bare_s"].append(timed(bare_onnx_pass, extract, images, config["batch_size"]))
            result["cache_s"].append(timed(cold_extraction, cache, images, config))
    return result


def phase_extract(config: dict) -> dict:
    """Per backbone, on the same images and batch size, in alternating rounds (so drifts in machine
    speed hit all three): the bare PyTorch-eager loop, the bare ONNX Runtime loop, and the
    pipeline's extraction (FeatureCache on ONNX Runtime, features cold, export cached). Plus the
    export's time, the FLOPs per image and this CPU's rough peak."""
    from transferlab import backbones

    images = distinct_images(config)
    result = {"images": len(images), "cpu": cpu_peak(), "flops_per_image": {}}
    for name in config["models"]:
        backbone = backbones.load(name, config["image_size"])
        result["flops_per_image"][name] = flops_per_image(backbone, images[0])
        for key, value in extraction_rounds(backbone, images, config).items():
            result.setdefault(key, {})[name] = value
    return result


# --- profile --------------------------------------------------------------------------------------


def phase_profile(config: dict) -> dict:
    """cProfile of the train_transfer stage, run as DVC runs it (its outputs go to bench_* paths):
    its total time and the part of it spent in each of PROFILED's functions."""
    sys.argv = list(TRAIN_TRANSFER)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    runpy.run_path(TRAIN_TRANSFER[0], run_name="__main__")
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats
    breakdown = {
        label: sum(row[3] for (file, _, func), row in stats.items() if file.endswith(filename) and func == function)
        for label, (filename, function) in PROFILED.items()
    }
    breakdown["everything else (imports, data loading, ...)"] = max(0.0, total - sum(breakdown.values()))
    return {"total_s": total, "breakdown_s": breakdown}


# --- the sweep's cache count ----------------------------------------------------------------------


def phase_cache(config: dict) -> dict:
    """What the machine-wide cache ($TRANSFERLAB_CACHE_DIR) holds, per model: distinct images,
    stored entries and shards (FeatureCache.stats)."""
    from transferlab import params, runtimes
    from transferlab.features import FeatureCache

    runtime = runtimes.resolve(params.load().transfer.runtime, torch.device("cpu"))  # as the pipeline ran
    caches = {name: FeatureCache(name, config["image_size"], runtime=runtime) for name in config["models"]}
    return {"cache": {name: cache.stats() for name, cache in caches.items()}}


PHASES = {
    "course": phase_course,
    "naive": phase_naive,
    "tail_flops": phase_tail_flops,
    "floor": phase_floor,
    "floor_onnxruntime": phase_floor_onnxruntime,
    "extract": phase_extract,
    "profile": phase_profile,
    "cache": phase_cache,
}


def main(argv: list[str]) -> None:
    """`PHASE CONFIG_JSON RESULT_JSON`: run the phase, write its result."""
    if len(argv) != 3 or argv[0] not in PHASES:
        raise SystemExit(f"usage: python -m bench.phases {{{','.join(PHASES)}}} CONFIG_JSON RESULT_JSON")
    phase, config_json, result_file = argv
    Path(result_file).write_text(json.dumps(PHASES[phase](json.loads(config_json))))


if __name__ == "__main__":
    main(sys.argv[1:])
