"""The subset stage's logic: seeded, class-balanced, nested index subsets.

Each class's indices are shuffled once with the seed; a subset of size n takes the first
quota(n) indices of every class. Larger subsets therefore contain the smaller ones, and a size
that does not divide by the class count gives the first n % C classes one image more.

The validation subset takes the last quota(n) indices of every class of the train split: disjoint
from every train subset (TinyVGG's and each `train_size`), whatever their sizes, and the same
images for every model. Every choice (epochs, every grid axis, the winner) is made on it; the test
subset, from the test split, is only reported.
"""

import json
from pathlib import Path

import numpy as np

from transferlab.errors import UserError
from transferlab.outputs import write_text

# One file each, so a stage depends only on the subsets it reads (a new train_size never
# invalidates TinyVGG).
SUBSET_NAMES = ("tinyvgg_train", "transfer_train", "val", "test")


def class_quotas(size: int, n_classes: int) -> list[int]:
    """Split `size` over classes as evenly as possible (earlier classes take the remainder)."""
    base, remainder = divmod(size, n_classes)
    return [base + (index < remainder) for index in range(n_classes)]


def max_balanced_size(labels: np.ndarray, n_classes: int) -> int:
    """The largest size whose class quotas the available images can fill."""
    counts = np.bincount(labels, minlength=n_classes)
    low, high = 0, int(counts.sum())
    while low < high:
        mid = (low + high + 1) // 2
        if all(q <= c for q, c in zip(class_quotas(mid, n_classes), counts, strict=True)):
            low = mid
        else:
            high = mid - 1
    return low


class NestedSampler:
    """Draws nested class-balanced subsets of one split from a single seeded shuffle per class."""

    def __init__(self, labels: np.ndarray, classes: list[str], seed: int, split: str):
        rng = np.random.default_rng(seed)
        self.classes, self.n_classes = classes, len(classes)
        self.split = split
        self.per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(self.n_classes)]
        self.maximum = max_balanced_size(labels, self.n_classes)

    def draw(self, size: int, key: str) -> list[int]:
        if size > self.maximum:
            need, have, cls = next(
                (q, len(indices), cls)
                for q, indices, cls in zip(
                    class_quotas(size, self.n_classes), self.per_class, self.classes, strict=True
                )
                if q > len(indices)
            )
            raise UserError(
                f"{key} is {size} but the {self.split} split allows at most {self.maximum} images in a "
                f"class-balanced subset: class {cls!r} has {have} {self.split} images and {size} takes {need}; "
                f"lower {key} or add images to {cls!r}"
            )
        quotas = class_quotas(size, self.n_classes)
        chosen = np.concatenate([indices[:q] for indices, q in zip(self.per_class, quotas, strict=True)])
        return sorted(int(i) for i in chosen)

    def draw_last(self, size: int, key: str, beside: int) -> list[int]:
        """`size` class-balanced indices from the end of each class's shuffle: disjoint from
        `draw(beside)` (and so from every smaller draw), or one UserError line when a class is short."""
        for index, (need, have, taken) in enumerate(
            zip(
                class_quotas(size, self.n_classes),
                map(len, self.per_class),
                class_quotas(beside, self.n_classes),
                strict=True,
            )
        ):
            if need + taken > have:
                raise UserError(
                    f"{key} is {size} but does not fit beside the largest train subset ({beside} images): class "
                    f"{self.classes[index]!r} of the {self.split} split has {have} images and they need "
                    f"{need + taken}; lower {key} or the train sizes"
                )
        quotas = class_quotas(size, self.n_classes)
        chosen = np.concatenate(
            [indices[len(indices) - q :] for indices, q in zip(self.per_class, quotas, strict=True)]
        )
        return sorted(int(i) for i in chosen)


def make_subsets(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    classes: list[str],
    seed: int,
    tinyvgg_train_size: int,
    transfer_train_sizes: tuple[int, ...],
    val_size: int,
    test_size: int,
) -> dict:
    """Index lists: the TinyVGG train set, each transfer train size, the shared validation set
    (train split, disjoint from them all) and the shared test set."""
    train = NestedSampler(train_labels, classes, seed, "train")
    test = NestedSampler(test_labels, classes, seed, "test")
    largest_train = max(tinyvgg_train_size, *transfer_train_sizes)
    return {
        "tinyvgg_train": train.draw(tinyvgg_train_size, "subset.tinyvgg_train_size"),
        "transfer_train": {str(n): train.draw(n, "train_size") for n in sorted(transfer_train_sizes)},
        "val": train.draw_last(val_size, "subset.val_size", beside=largest_train),
        "test": test.draw(test_size, "subset.test_size"),
    }


def save(chosen: dict, out_dir: str | Path) -> None:
    for name in SUBSET_NAMES:
        write_text(Path(out_dir) / f"{name}.json", json.dumps(chosen[name]) + "\n")


def load(subsets_dir: str | Path, *names: str) -> dict:
    """The named subsets written by `save`."""
    return {name: json.loads((Path(subsets_dir) / f"{name}.json").read_text()) for name in names}
