"""The evaluate stage: every trained model scored on the shared validation subset (what choices are
made on) and, once, on the test subset (what is reported).

It writes every model's scores with its hyperparameters and every model's predicted class for each
validation and test image (select_best ranks, tests and draws from them, without rerunning a
model); in TensorBoard (`runs/evaluation`) every model as an HParams session with its validation
and test metrics, the HParams configuration, and the projector of the test images in each frozen
backbone's feature space (and in TinyVGG's penultimate layer); for DVC, accuracy against train size
per backbone. Its work per model is scoring; what depends only on the features (the projector) is
made once per machine and content, like the features.
"""

import functools
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from transferlab import backbones, cache, data, engine, model_files, registry
from transferlab.features import FeatureCaches
from transferlab.kinds import Model, TinyVGGModel
from transferlab.networks import uint8_to_float
from transferlab.outputs import write_json
from transferlab.paths import EvaluatePaths
from transferlab.subsets import load as load_subsets
from transferlab.torchfiles import save_torch
from transferlab.tracking import HPARAM_METRICS, TensorBoardRun, accuracy_by_train_size
from transferlab.transfer_kinds import FrozenHead

PROJECTOR_CONFIG = "projector_config.pbtxt"
# The projector draws every point as a thumbnail from one sprite image of them all: thumbnails of
# larger images are scaled down to this side, so the sprite of a 2,000-image test subset stays small
THUMBNAIL_SIDE = 64


def trained_model_paths(tinyvgg_file: Path, transfer_dir: Path) -> dict[str, Path]:
    """Every trained model by name: `tinyvgg` and one per grid experiment."""
    return {"tinyvgg": Path(tinyvgg_file), **{p.stem: p for p in sorted(Path(transfer_dir).glob("*.pt"))}}


def logits_on(model: Model, images: np.ndarray, caches: FeatureCaches, device: torch.device) -> torch.Tensor:
    """The model's logits for N x H x W x 3 uint8 images (from cached features, or cached
    activations of its frozen part, when its backbone is frozen)."""
    loader = engine.batch_loader(model.scoring_set(images, caches, device), engine.SCORING_BATCH)
    return engine.predict(model.scorer.to(device), loader, device)[0]


@dataclass(frozen=True)
class Split:
    """Images scored and their labels."""

    images: np.ndarray
    labels: torch.Tensor


def evaluate(paths: EvaluatePaths, cache_dir: Path | None = None) -> dict[str, dict]:
    """Validation and test accuracy and loss, per-class test accuracy and parameter counts for every
    model; every model's predicted classes; the TensorBoard run; the accuracy-by-train-size summary."""
    dataset = data.load(paths.dataset_dir)
    subsets = load_subsets(paths.subsets_dir, "val", "test")
    splits = {
        "val": Split(dataset.train.images[subsets["val"]], torch.as_tensor(dataset.train.labels[subsets["val"]])),
        "test": Split(dataset.test.images[subsets["test"]], torch.as_tensor(dataset.test.labels[subsets["test"]])),
    }
    device = engine.select_device()
    load_backbone = functools.cache(backbones.load)  # at most one pretrained backbone per name and size
    results, predicted, trained = {}, {"val": {}, "test": {}}, {}
    caches = FeatureCaches(cache_dir)
    for name, path in trained_model_paths(paths.tinyvgg_file, paths.transfer_dir).items():
        model = trained[name] = model_files.load(path, load_backbone)
        logits = {split: logits_on(model, s.images, caches, device) for split, s in splits.items()}
        results[name] = scores(logits, splits, model, dataset.classes)
        for split, split_logits in logits.items():
            predicted[split][name] = split_logits.argmax(dim=1).to(torch.uint8)
    log_tensorboard(paths.runs_dir, trained, results, splits["test"], dataset.classes, caches, device)
    baselines = {name for name, model in trained.items() if isinstance(model, TinyVGGModel)}
    write_json(paths.summary_file, accuracy_by_train_size(results, baselines))
    labels = {f"{split}_labels": s.labels for split, s in splits.items()}
    save_torch(paths.predicted_file, {"classes": dataset.classes, **labels, **predicted})
    write_json(paths.evaluation_file, results)
    return results


def scores(logits: dict[str, torch.Tensor], splits: dict[str, Split], model: Model, classes: list[str]) -> dict:
    """A model's metrics from its logits on each split: accuracy and loss, parameter counts,
    per-class test accuracy, and its hyperparameters."""
    correct = {split: logits[split].argmax(dim=1) == s.labels for split, s in splits.items()}
    test_labels = splits["test"].labels
    return {
        **{f"{split}_acc": round(c.float().mean().item(), 6) for split, c in correct.items()},
        **{f"{split}_loss": round(F.cross_entropy(logits[split], s.labels).item(), 6) for split, s in splits.items()},
        **model.parameter_counts(),
        "per_class_test_acc": {
            cls: round(correct["test"][test_labels == i].float().mean().item(), 6)
            for i, cls in enumerate(classes)
            if (test_labels == i).any()
        },
        "hparams": model.file.get("hparams", {}),  # models trained before model files carried them have none
    }


def log_tensorboard(
    runs_dir: Path,
    models: dict[str, Model],
    results: dict[str, dict],
    test: Split,
    classes: list[str],
    caches: FeatureCaches,
    device: torch.device,
) -> None:
    """Every model as an HParams session (`hparams/<name>`) with its validation and test metrics,
    the HParams configuration, and the projector."""
    board = TensorBoardRun(runs_dir)
    for name, result in results.items():
        session = TensorBoardRun(runs_dir / "hparams" / name)
        session.log_hparams(result["hparams"], {key: result[key] for key in HPARAM_METRICS})
        session.close()
    board.log_hparams_config([result["hparams"] for result in results.values()])
    board.close()
    names = [classes[i] for i in test.labels.tolist()]
    for tag, features in projector_embeddings(models, test.images, caches, device):
        log_cached_embedding(runs_dir, Path(caches.cache_dir or cache.root()), tag, features, names, test.images)


def projector_embeddings(
    models: dict[str, Model], images: np.ndarray, caches: FeatureCaches, device: torch.device
) -> list[tuple[str, torch.Tensor]]:
    """What the projector shows the test images in: each frozen backbone's cached pooled features
    (what every head of that backbone learns from; models whose last stages trained learn from
    other features, their own), once per backbone, and each TinyVGG's penultimate layer (what its
    last linear layer separates)."""
    embeddings = {}
    for name, model in models.items():
        if isinstance(model, TinyVGGModel):
            embeddings[f"{name}_penultimate"] = model.penultimate(images)
        elif type(model) is FrozenHead:  # the pretrained backbone's features
            features = model.feature_cache(caches)
            tag = f"{features.name}_{registry.input_size(features.name, features.image_size)}px"
            if tag not in embeddings:
                embeddings[tag] = features.get(images, engine.SCORING_BATCH, device)
    return list(embeddings.items())


def log_cached_embedding(
    runs_dir: Path, cache_root: Path, tag: str, features: torch.Tensor, names: list[str], images: np.ndarray
) -> None:
    """Points for the projector in `runs_dir` (`TensorBoardRun.log_embedding`: labelled by class,
    each shown as its image). Its files are made once per content, in the machine-wide cache, and
    copied: writing them (the features as text, the sprite) is most of what evaluate would
    otherwise redo on every run (`cache_root`: the machine-wide cache)."""
    digest = hashlib.sha1(np.ascontiguousarray(features.numpy()))  # the arrays' bytes, hashed in place
    for part in (tag, *names, np.ascontiguousarray(images)):
        digest.update(part.encode() if isinstance(part, str) else part)
    entry = cache_root / "projector" / f"{digest.hexdigest()}.pt"
    if (files := cache.read(entry, _is_files)) is None:
        files = embedding_files(tag, features, names, images)
        save_torch(entry, files)
    for relative, content in files.items():
        target = runs_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab" if relative == PROJECTOR_CONFIG else "wb") as file:  # one config lists them all
            file.write(content)


def _is_files(content: object) -> bool:
    """A projector cache entry: file contents by relative path."""
    return isinstance(content, dict) and all(isinstance(v, bytes) for v in content.values())


def thumbnails(images: np.ndarray) -> torch.Tensor:
    """The projector's picture of each N x H x W x 3 uint8 image: N x 3 x s x s floats in [0, 1], s
    at most THUMBNAIL_SIDE, made a batch at a time."""
    side = min(images.shape[1], THUMBNAIL_SIDE)

    def thumbnail_batch(batch: np.ndarray) -> torch.Tensor:
        floats = uint8_to_float(batch)
        return floats if side == batch.shape[1] else F.interpolate(floats, size=side, mode="area")

    return engine.in_batches(thumbnail_batch, images, engine.SCORING_BATCH)


def embedding_files(tag: str, features: torch.Tensor, names: list[str], images: np.ndarray) -> dict[str, bytes]:
    """The files an embedding adds to a TensorBoard run (its projector config entry, features,
    labels and sprite), by path relative to the run."""
    with tempfile.TemporaryDirectory() as tmp:
        board = TensorBoardRun(tmp)
        board.log_embedding(tag, features, names, thumbnails(images))
        board.close()
        return {
            str(path.relative_to(tmp)): path.read_bytes()
            for path in sorted(Path(tmp).rglob("*"))
            if path.is_file() and not path.name.startswith("events.out.tfevents")
        }
