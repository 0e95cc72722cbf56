"""In-process pieces the benchmarks' phases share, run inside the project copy after its `dvc repro`
(so data/prepared and data/subsets exist): the grid's data, bare inference passes, the naive
training loop the pipeline is compared with, FLOPs, this CPU's peak, and what a feature cache holds.
Built on the product's entry points: data, subsets, backbones, models, engine, runtimes, FeatureCache.
"""

import itertools
import os
from pathlib import Path

import torch
from torch import nn


def as_tensor(images) -> torch.Tensor:
    """N x H x W x 3 uint8 (the pipeline's layout) as N x 3 x H x W."""
    return torch.as_tensor(images).permute(0, 3, 1, 2)


def grid_data(config: dict) -> dict:
    """The pipeline's train subsets (by size), their union and its test subset."""
    from transferlab import data, subsets

    dataset = data.load("data/prepared")
    chosen = subsets.load("data/subsets", "transfer_train", "test")
    train = {n: chosen["transfer_train"][str(n)] for n in config["train_sizes"]}
    test = chosen["test"]

    def pair(split, idx):
        return as_tensor(split.images[idx]), torch.as_tensor(split.labels[idx])

    return {
        "union": as_tensor(dataset.train.images[sorted(set().union(*train.values()))]),
        "test": pair(dataset.test, test),
        "train": {n: pair(dataset.train, idx) for n, idx in train.items()},
        "n_classes": len(dataset.classes),
    }


def distinct_images(config: dict):
    """Every distinct image the grid uses, N x H x W x 3 uint8 as the pipeline holds them."""
    import numpy as np

    grid = grid_data(config)
    return np.ascontiguousarray(torch.cat([grid["union"], grid["test"][0]]).permute(0, 2, 3, 1).numpy())


def bare_pass(backbone, images, batch_size: int) -> None:
    """One bare PyTorch-eager inference pass, batches fed as the pipeline feeds them."""
    with torch.inference_mode():
        for first in range(0, len(images), batch_size):
            backbone.features(backbone.transform(as_tensor(images[first : first + batch_size])))


def bare_onnx_pass(extract, images, batch_size: int) -> None:
    """The same on ONNX Runtime (`extract`: `runtimes.onnx_features` of the export)."""
    for first in range(0, len(images), batch_size):
        extract(images[first : first + batch_size])


class EvalModeBackbone(nn.Module):
    """A frozen backbone that stays in eval mode when the model around it is put in train mode."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features.eval()

    def train(self, mode: bool = True) -> "EvalModeBackbone":
        return super().train(False)

    def forward(self, x):
        return self.features(x)


def naive_accuracies(config: dict, build) -> dict:
    """Each experiment trained afresh the naive way: every epoch, every train and test batch
    through the whole network `build(name, n_classes, device) -> (network, trainable, label)`
    returns, with the pipeline's seed, batches (the seeded shuffle a DataLoader draws), optimizer
    and batch size; the last epoch's test accuracy by experiment name."""
    from torch.utils.data import TensorDataset

    from transferlab import engine

    grid, device, accuracies = grid_data(config), engine.select_device(), {}
    for name, size, epochs in itertools.product(config["models"], config["train_sizes"], config["epochs"]):
        network, trainable, label = build(name, grid["n_classes"], device)
        history = engine.train(
            network,
            engine.batch_loader(
                TensorDataset(*grid["train"][size]), config["batch_size"], torch.Generator().manual_seed(config["seed"])
            ),
            engine.batch_loader(TensorDataset(*grid["test"]), config["batch_size"]),
            nn.CrossEntropyLoss(),
            engine.make_optimizer(config["optimizer"], trainable, config["lr"]),
            epochs,
            device,
            desc=f"{label} {size} {epochs}",
        )
        accuracies[f"{size}_images-{label}-{epochs}_epochs"] = history["val_acc"][-1]  # scored on the test images
    return {"test_acc": accuracies}


def flops(module, *inputs) -> int:
    """FLOPs of `module(*inputs)` (2 per multiply-add, convolutions and matrix products), counted
    by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*inputs)
    return counter.get_total_flops()


def cpu_peak() -> dict:
    """This CPU's rough FP32 peak: cores x clock x FLOPs per cycle (2 FMA units of 8 floats with
    AVX2, 16 with AVX-512, 2 FLOPs each)."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = set(next(line for line in lines if line.startswith("flags")).split())
    ghz = float(next(line for line in lines if line.startswith("cpu MHz")).split(":")[1]) / 1000
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    cores = len(os.sched_getaffinity(0))
    return {"cores": cores, "ghz": ghz, "flops_per_cycle": per_cycle, "gflops": cores * ghz * per_cycle}


def cache_stats(config: dict) -> dict:
    """What $TRANSFERLAB_CACHE_DIR holds per model (at `trainable_stages`, on the runtime the
    copy's params.yaml chose): FeatureCache.stats() and the shards' folder and bytes."""
    from transferlab import params, runtimes
    from transferlab.features import FeatureCache

    runtime = runtimes.resolve(params.load().transfer.runtime, torch.device("cpu"))
    result = {}
    for name in config["models"]:
        cache = FeatureCache(name, config["image_size"], runtime=runtime, trainable_stages=config.get("stages", 0))
        stats = cache.stats()
        stats["bytes"] = sum(shard.stat().st_size for shard in cache.shards_dir.glob("*.pt"))
        stats["folder"] = str(cache.shards_dir.relative_to(cache.directory.parent))
        result[name] = stats
    return result
