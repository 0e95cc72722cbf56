"""The evaluate stage: every trained model scored on the shared test subset."""

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from transferlab import backbones, data, engine
from transferlab.classifier import Classifier
from transferlab.features import FeatureCache
from transferlab.models import uint8_to_float
from transferlab.modes import backbone_mode
from transferlab.outputs import atomic_dir, write_json
from transferlab.paths import EvaluatePaths
from transferlab.subsets import load as load_subsets

BATCH_SIZE = 64


def model_files(tinyvgg_file: Path, transfer_dir: Path) -> dict[str, Path]:
    """Every trained model by name: `tinyvgg` and one per grid experiment."""
    return {"tinyvgg": Path(tinyvgg_file), **{p.stem: p for p in sorted(Path(transfer_dir).glob("*.pt"))}}


def logits_on(classifier: Classifier, images: np.ndarray, cache_dir: Path | None, device: torch.device) -> torch.Tensor:
    """The classifier's logits for N x H x W x 3 uint8 images (from cached features, or cached
    activations of its frozen part, when its backbone is frozen)."""
    if classifier.kind == "tinyvgg":
        inputs, network = uint8_to_float(images), classifier.model
    else:
        cache = FeatureCache(
            classifier.config["backbone"],
            classifier.config["image_size"],
            cache_dir,
            load=lambda *_: classifier.backbone,
            runtime=classifier.config["runtime"],
            trainable_stages=classifier.trainable_stages,
        )
        mode = backbone_mode(classifier.frozen, classifier.trainable_stages)
        inputs, network = mode(cache, BATCH_SIZE, device).inputs(images), mode.scorer(classifier)
    loader = engine.batch_loader(TensorDataset(inputs, torch.zeros(len(inputs), dtype=torch.long)), BATCH_SIZE)
    return engine.predict(network.to(device), loader, device)[0]


def evaluate(paths: EvaluatePaths, cache_dir: Path | None = None) -> dict[str, dict]:
    """Accuracy, loss, per-class accuracy and a confusion plot for every model on the test subset."""
    dataset = data.load(paths.dataset_dir)
    test_idx = load_subsets(paths.subsets_dir, "test")["test"]
    images, labels = dataset.test.images[test_idx], torch.as_tensor(dataset.test.labels[test_idx])
    device = engine.select_device()
    load_backbone = functools.cache(backbones.load)  # at most one pretrained backbone per name and size
    results = {}
    with atomic_dir(paths.confusion_dir) as confusion_dir:
        for name, path in model_files(paths.tinyvgg_file, paths.transfer_dir).items():
            classifier = Classifier.from_file(path, load_backbone)
            logits = logits_on(classifier, images, cache_dir, device)
            predicted = logits.argmax(dim=1)
            correct = predicted == labels
            results[name] = {
                "test_acc": round(correct.float().mean().item(), 6),
                "test_loss": round(F.cross_entropy(logits, labels).item(), 6),
                **classifier.parameter_counts(),
                "per_class_acc": {
                    cls: round(correct[labels == i].float().mean().item(), 6)
                    for i, cls in enumerate(dataset.classes)
                    if (labels == i).any()
                },
            }
            write_json(
                confusion_dir / f"{name}.json",
                [
                    {"actual": dataset.classes[a], "predicted": dataset.classes[p]}
                    for a, p in zip(labels.tolist(), predicted.tolist(), strict=True)
                ],
            )
        write_json(paths.metrics_file, results)
    return results
