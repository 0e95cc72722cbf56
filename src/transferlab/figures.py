"""Figures: test images titled with the model's predictions."""

import numpy as np
import torch


def predictions_figure(images: np.ndarray, labels: np.ndarray, probabilities: torch.Tensor, classes: list[str]):
    """A grid of N x H x W x 3 uint8 images titled with predicted class and probability; wrong
    predictions in red, marked ✗, with the true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
