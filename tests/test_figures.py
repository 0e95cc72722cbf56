"""Figures: the confusion matrix counts what it shows."""

import torch

from transferlab.figures import confusion_counts, confusion_figure


def test_confusion_counts_rows_are_true_classes_columns_predictions():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion_counts(labels, predicted, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_confusion_figure_labels_its_axes_and_cells():
    labels, predicted = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2])
    figure = confusion_figure(labels, predicted, ["cat", "dog", "ship"], "m")
    (ax, _colorbar) = figure.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "ship"]
    assert ax.get_title() == "m\n75.0% of 4 test images"
    assert sorted(t.get_text() for t in ax.texts) == ["0"] * 5 + ["1"] * 4
