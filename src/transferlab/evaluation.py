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

from transferlab import backbones, data, engine, figures, model_files, registry
from transferlab.kinds import Model, TinyVGGModel
from transferlab.networks import uint8_to_float
from transferlab.outputs import atomic_dir, write_json
from transferlab.paths import EvaluatePaths
from transferlab.subsets import load as load_subsets
from transferlab.tracking import TensorBoardRun, accuracy_by_train_size
from transferlab.transfer_kinds import FrozenHead

BATCH_SIZE = 64


def trained_model_paths(tinyvgg_file: Path, transfer_dir: Path) -> dict[str, Path]:
    """Every trained model by name: `tinyvgg` and one per grid experiment."""
    return {"tinyvgg": Path(tinyvgg_file), **{p.stem: p for p in sorted(Path(transfer_dir).glob("*.pt"))}}


def logits_on(model: Model, images: np.ndarray, cache_dir: Path | None, device: torch.device) -> torch.Tensor:
    """The model's logits for N x H x W x 3 uint8 images (from cached features, or cached
    activations of its frozen part, when its backbone is frozen)."""
    inputs = model.inputs(images, cache_dir, device)
    loader = engine.batch_loader(TensorDataset(inputs, torch.zeros(len(inputs), dtype=torch.long)), BATCH_SIZE)
    return engine.predict(model.scorer.to(device), loader, device)[0]


def evaluate(paths: EvaluatePaths, cache_dir: Path | None = None) -> dict[str, dict]:
    """Accuracy, loss, per-class accuracy and a confusion plot for every model on the test subset;
    its TensorBoard run and the accuracy-by-train-size summary."""
    dataset = data.load(paths.dataset_dir)
    test_idx = load_subsets(paths.subsets_dir, "test")["test"]
    images, labels = dataset.test.images[test_idx], torch.as_tensor(dataset.test.labels[test_idx])
    device = engine.select_device()
    load_backbone = functools.cache(backbones.load)  # at most one pretrained backbone per name and size
    board = TensorBoardRun(paths.runs_dir)
    results, hparams, trained = {}, {}, {}
    with atomic_dir(paths.confusion_dir) as confusion_dir:
        for name, path in trained_model_paths(paths.tinyvgg_file, paths.transfer_dir).items():
            model = trained[name] = model_files.load(path, load_backbone)
            logits = logits_on(model, images, cache_dir, device)
            results[name] = scores(logits, labels, model, dataset.classes)
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
            if "hparams" in model.file:  # models trained before model files carried them have none
                hparams[name] = model.file["hparams"]
        log_projector(board, trained, images, labels, dataset.classes, cache_dir, device)
        board.log_hparams_config(list(hparams.values()))
        board.close()
        baselines = {name for name, model in trained.items() if isinstance(model, TinyVGGModel)}
        write_json(paths.summary_file, accuracy_by_train_size(results, hparams, baselines))
        write_json(paths.metrics_file, results)
    return results


def scores(logits: torch.Tensor, labels: torch.Tensor, model: Model, classes: list[str]) -> dict:
    """A model's test metrics from its logits: accuracy, loss, parameter counts, per-class accuracy."""
    correct = logits.argmax(dim=1) == labels
    return {
        "test_acc": round(correct.float().mean().item(), 6),
        "test_loss": round(F.cross_entropy(logits, labels).item(), 6),
        **model.parameter_counts(),
        "per_class_acc": {
            cls: round(correct[labels == i].float().mean().item(), 6)
            for i, cls in enumerate(classes)
            if (labels == i).any()
        },
    }


def log_projector(
    board: TensorBoardRun,
    models: dict[str, Model],
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
    for name, model in models.items():
        if isinstance(model, TinyVGGModel):
            board.log_embedding(f"{name}_penultimate", model.penultimate(images), names, thumbnails)
        elif type(model) is FrozenHead:  # the pretrained backbone's features
            cache = model.feature_cache(cache_dir)
            tag = f"{cache.name}_{registry.input_size(cache.name, cache.image_size)}px"
            if tag not in embedded:
                embedded.add(tag)
                board.log_embedding(tag, cache.get(images, BATCH_SIZE, device), names, thumbnails)
