"""The evaluate stage: every trained model scored on the shared test subset.

Beside the metrics and DVC's confusion plots it writes what shows why one model beats another:
in TensorBoard (`runs/evaluation`) each model's per-class precision-recall curves and confusion
matrix figure, the projector of the test images in each frozen backbone's feature space (and in
TinyVGG's penultimate layer), and the HParams configuration of every trained model; for DVC, test
accuracy against train size per backbone.
"""

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from transferlab import backbones, data, engine, figures
from transferlab.classifier import Classifier
from transferlab.features import FeatureCache
from transferlab.models import uint8_to_float
from transferlab.modes import backbone_mode
from transferlab.outputs import atomic_dir, write_json
from transferlab.paths import EvaluatePaths
from transferlab.subsets import load as load_subsets
from transferlab.tracking import TensorBoardRun, accuracy_by_train_size

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
        mode = backbone_mode(classifier.frozen, classifier.trainable_stages)
        inputs = mode(feature_cache(classifier, cache_dir), BATCH_SIZE, device).inputs(images)
        network = mode.scorer(classifier)
    loader = engine.batch_loader(TensorDataset(inputs, torch.zeros(len(inputs), dtype=torch.long)), BATCH_SIZE)
    return engine.predict(network.to(device), loader, device)[0]


def feature_cache(classifier: Classifier, cache_dir: Path | None) -> FeatureCache:
    """The feature cache of a transfer classifier's backbone, at its input size and runtime (the
    activations entering its trained last stages, when it has some)."""
    return FeatureCache(
        classifier.config["backbone"],
        classifier.config["image_size"],
        cache_dir,
        load=lambda *_: classifier.backbone,
        runtime=classifier.config["runtime"],
        trainable_stages=classifier.trainable_stages,
    )


def evaluate(paths: EvaluatePaths, cache_dir: Path | None = None) -> dict[str, dict]:
    """Accuracy, loss, per-class accuracy and a confusion plot for every model on the test subset;
    its TensorBoard run and the accuracy-by-train-size summary."""
    dataset = data.load(paths.dataset_dir)
    test_idx = load_subsets(paths.subsets_dir, "test")["test"]
    images, labels = dataset.test.images[test_idx], torch.as_tensor(dataset.test.labels[test_idx])
    device = engine.select_device()
    load_backbone = functools.cache(backbones.load)  # at most one pretrained backbone per name and size
    board = TensorBoardRun(paths.runs_dir)
    results, hparams, classifiers = {}, {}, {}
    with atomic_dir(paths.confusion_dir) as confusion_dir:
        for name, path in model_files(paths.tinyvgg_file, paths.transfer_dir).items():
            classifier = classifiers[name] = Classifier.from_file(path, load_backbone)
            logits = logits_on(classifier, images, cache_dir, device)
            results[name] = scores(logits, labels, classifier, dataset.classes)
            predicted = logits.argmax(dim=1)
            write_json(
                confusion_dir / f"{name}.json",
                [
                    {"actual": dataset.classes[a], "predicted": dataset.classes[p]}
                    for a, p in zip(labels.tolist(), predicted.tolist(), strict=True)
                ],
            )
            board.log_pr_curves(name, logits.softmax(dim=1), labels, dataset.classes)
            board.log_figure(f"confusion/{name}", figures.confusion_figure(labels, predicted, dataset.classes, name))
            if "hparams" in classifier.checkpoint:  # models trained before checkpoints carried them have none
                hparams[name] = classifier.checkpoint["hparams"]
        log_projector(board, classifiers, images, labels, dataset.classes, cache_dir, device)
        board.log_hparams_config(list(hparams.values()))
        board.close()
        baselines = {name for name, c in classifiers.items() if c.kind == "tinyvgg"}
        write_json(paths.summary_file, accuracy_by_train_size(results, hparams, baselines))
        write_json(paths.metrics_file, results)
    return results


def scores(logits: torch.Tensor, labels: torch.Tensor, classifier: Classifier, classes: list[str]) -> dict:
    """A model's test metrics from its logits: accuracy, loss, parameter counts, per-class accuracy."""
    correct = logits.argmax(dim=1) == labels
    return {
        "test_acc": round(correct.float().mean().item(), 6),
        "test_loss": round(F.cross_entropy(logits, labels).item(), 6),
        **classifier.parameter_counts(),
        "per_class_acc": {
            cls: round(correct[labels == i].float().mean().item(), 6)
            for i, cls in enumerate(classes)
            if (labels == i).any()
        },
    }


def log_projector(
    board: TensorBoardRun,
    classifiers: dict[str, Classifier],
    images: np.ndarray,
    labels: torch.Tensor,
    classes: list[str],
    cache_dir: Path | None,
    device: torch.device,
) -> None:
    """The test images in the projector, once per frozen backbone (its cached pooled features,
    what every head of that backbone learns from; models whose last stages trained learn from
    other features, their own) and once per TinyVGG (its penultimate layer,
    what its last linear layer separates), labelled by class, each point its image."""
    names = [classes[i] for i in labels.tolist()]
    thumbnails = uint8_to_float(images)
    embedded = set()
    for name, classifier in classifiers.items():
        if classifier.kind == "tinyvgg":
            model = classifier.model.cpu()  # scoring may have moved it to an accelerator
            with torch.no_grad():
                features = model.block_2(model.block_1(thumbnails)).flatten(1)
            board.log_embedding(f"{name}_penultimate", features, names, thumbnails)
        elif classifier.frozen and not classifier.trainable_stages:  # the pretrained backbone's features
            cache = feature_cache(classifier, cache_dir)
            tag = f"{cache.name}_{backbones.input_size(cache.name, cache.image_size)}px"
            if tag not in embedded:
                embedded.add(tag)
                board.log_embedding(tag, cache.get(images, BATCH_SIZE, device), names, thumbnails)
