"""Figures: test images titled with the model's predictions; a confusion matrix."""

import numpy as np
import torch


def _pyplot():
    """matplotlib's pyplot on the non-interactive backend (stages run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def predictions_figure(images: np.ndarray, labels: np.ndarray, probabilities: torch.Tensor, classes: list[str]):
    """A grid of N x H x W x 3 uint8 images titled with predicted class and probability; wrong
    predictions in red, marked ✗, with the true class."""
    plt = _pyplot()

    cols = 4
    rows = -(-len(images) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, probs in zip(axes.flat, images, labels, probabilities, strict=False):  # spare axes stay blank
        predicted = int(probs.argmax())
        wrong = predicted != int(label)
        title = f"{classes[predicted]} {probs[predicted]:.0%}"
        if wrong:
            title = f"✗ {title}\n(true: {classes[label]})"
        ax.imshow(image)
        ax.set_title(title, fontsize=9, color="red" if wrong else "green")
    figure.tight_layout()
    return figure


def confusion_counts(labels: torch.Tensor, predicted: torch.Tensor, n_classes: int) -> np.ndarray:
    """counts[true, predicted]: how many test images of each class got each prediction."""
    return np.bincount(labels.numpy() * n_classes + predicted.numpy(), minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def confusion_figure(labels: torch.Tensor, predicted: torch.Tensor, classes: list[str], title: str):
    """The confusion matrix as a heat map: rows the true class, columns the prediction, each cell
    its count, shaded by the share of its row (so classes of any size compare)."""
    plt = _pyplot()
    counts = confusion_counts(labels, predicted, len(classes))
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title}\n{accuracy:.1%} of {counts.sum():,} test images", fontsize=10)
    for (row, col), count in np.ndenumerate(counts):
        ax.text(
            col, row, count, ha="center", va="center", fontsize=7, color="white" if shares[row, col] > 0.5 else "black"
        )
    figure.colorbar(image, ax=ax, label="share of the true class")
    figure.tight_layout()
    return figure
