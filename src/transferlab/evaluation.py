"""The evaluate and select_best stages: every model on the shared test subset, then the best."""
import functools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from transferlab import backbones, data, engine
from transferlab.features import FeatureCache
from transferlab.models import Classifier
from transferlab.outputs import atomic_dir, atomic_path, save_torch, write_json, write_text
from transferlab.subsets import load as load_subsets
from transferlab.tracking import TensorBoardRun

BATCH_SIZE = 64


def model_files(tinyvgg_file: Path, transfer_dir: Path) -> dict[str, Path]:
    """Every trained model by name: `tinyvgg` and one per grid experiment."""
    return {"tinyvgg": Path(tinyvgg_file), **{p.stem: p for p in sorted(Path(transfer_dir).glob("*.pt"))}}


def logits_on(classifier: Classifier, images: np.ndarray, cache_dir: Path, device: torch.device) -> torch.Tensor:
    """The classifier's logits for N x H x W x 3 uint8 images (cached features when frozen)."""
    if classifier.frozen:
        cache = FeatureCache(classifier.config["backbone"], classifier.config["image_size"], cache_dir,
                             load=lambda *_: classifier.backbone)
        inputs = cache.get(images, BATCH_SIZE, device)
        model = classifier.head
    else:
        inputs = torch.as_tensor(images)
        model = torch.nn.Sequential(_Preprocess(classifier), classifier.model)
    loader = engine.batch_loader(TensorDataset(inputs, torch.zeros(len(inputs), dtype=torch.long)), BATCH_SIZE)
    return engine.predict(model.to(device), loader, device)[0]


class _Preprocess(torch.nn.Module):
    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.preprocess(images)


def evaluate(data_dir: Path, subsets_dir: Path, tinyvgg_file: Path, transfer_dir: Path,
             metrics_file: Path, confusion_dir: Path, cache_dir: Path | None = None) -> dict:
    """Accuracy, loss, per-class accuracy and a confusion plot for every model on the test subset."""
    dataset = data.load(data_dir)
    test_idx = load_subsets(subsets_dir, "test")["test"]
    images, labels = dataset.test.images[test_idx], torch.as_tensor(dataset.test.labels[test_idx])
    device = engine.select_device()
    load_backbone = functools.cache(backbones.load)  # at most one pretrained backbone per name and size
    results = {}
    with atomic_dir(confusion_dir) as confusion_tmp:
        for name, path in model_files(tinyvgg_file, transfer_dir).items():
            classifier = Classifier.from_file(path, load_backbone)
            logits = logits_on(classifier, images, cache_dir, device)
            predicted = logits.argmax(dim=1)
            correct = predicted == labels
            results[name] = {
                "test_acc": round(correct.float().mean().item(), 6),
                "test_loss": round(F.cross_entropy(logits, labels).item(), 6),
                **classifier.parameter_counts(),
                "per_class_acc": {cls: round(correct[labels == i].float().mean().item(), 6)
                                  for i, cls in enumerate(dataset.classes) if (labels == i).any()},
            }
            write_json(confusion_tmp / f"{name}.json", [
                {"actual": dataset.classes[a], "predicted": dataset.classes[p]}
                for a, p in zip(labels.tolist(), predicted.tolist())
            ])
        write_json(metrics_file, results)
    return results


def ranking_key(metric: str):
    """Sort key: the chosen metric first, ties broken by lower loss, then fewer parameters."""
    def key(item: tuple[str, dict]):
        m = item[1]
        primary = -m["test_acc"] if metric == "test_acc" else m["test_loss"]
        return (primary, m["test_loss"], m["total_params"], item[0])
    return key


def rank(results: dict[str, dict], metric: str) -> list[tuple[str, dict]]:
    return sorted(results.items(), key=ranking_key(metric))


def leaderboard_markdown(ranked: list[tuple[str, dict]], metric: str) -> str:
    lines = [f"# Leaderboard (sorted by {metric}; ties: lower loss, then fewer parameters)", "",
             "| rank | experiment | test acc | test loss | trainable params | total params |",
             "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {i} | {name} | {m['test_acc']:.2%} | {m['test_loss']:.4f} | {m['trainable_params']:,} "
              f"| {m['total_params']:,} |" for i, (name, m) in enumerate(ranked, start=1)]
    return "\n".join(lines) + "\n"


def select_best(metric: str, seed: int, n_examples: int, data_dir: Path, subsets_dir: Path,
                evaluation_file: Path, tinyvgg_file: Path, transfer_dir: Path, best_metrics_file: Path,
                leaderboard_file: Path, best_model_file: Path, predictions_file: Path, runs_dir: Path,
                cache_dir: Path | None = None) -> dict:
    """Pick the best model, export it, write the leaderboard and a predictions figure."""
    results = json.loads(Path(evaluation_file).read_text())
    ranked = rank(results, metric)
    best_name, best_metrics = ranked[0]
    classifier = Classifier.from_file(model_files(tinyvgg_file, transfer_dir)[best_name])
    exported = {**classifier.checkpoint, "name": best_name,
                "transform": repr(classifier.backbone.transform) if classifier.backbone else "uint8 / 255"}
    figure = predictions_figure(classifier, data_dir, subsets_dir, seed, n_examples, cache_dir)
    with atomic_path(predictions_file) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    run = TensorBoardRun(runs_dir)
    run.log_figure(f"predictions/{best_name}", figure)
    run.close()
    save_torch(best_model_file, exported)
    write_text(leaderboard_file, leaderboard_markdown(ranked, metric))
    # flat, with names that do not depend on the grid: `dvc exp show --sort-by` ranks a sweep by them
    best = {"name": best_name, "selected_by": metric,
            **{k: v for k, v in best_metrics.items() if k != "per_class_acc"},
            "tinyvgg_test_acc": results["tinyvgg"]["test_acc"]}
    write_json(best_metrics_file, best)
    return best


def predictions_figure(classifier: Classifier, data_dir: Path, subsets_dir: Path, seed: int,
                       n_examples: int, cache_dir: Path):
    """A grid of random test images titled with predicted class and probability; wrong ones in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset = data.load(data_dir)
    test_idx = load_subsets(subsets_dir, "test")["test"]
    chosen = sorted(np.random.default_rng(seed).choice(test_idx, size=min(n_examples, len(test_idx)), replace=False))
    images, labels = dataset.test.images[chosen], dataset.test.labels[chosen]
    probabilities = logits_on(classifier, images, cache_dir, engine.select_device()).softmax(dim=1)
    cols = 4
    rows = -(-len(chosen) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, probs in zip(axes.flat, images, labels, probabilities):
        predicted = int(probs.argmax())
        wrong = predicted != int(label)
        title = f"{classifier.classes[predicted]} {probs[predicted]:.0%}"
        if wrong:
            title = f"✗ {title}\n(true: {classifier.classes[label]})"
        ax.imshow(image)
        ax.set_title(title, fontsize=9, color="red" if wrong else "green")
    figure.tight_layout()
    return figure
