"""The canonical dataset: what the download stage writes and every later stage memory-maps.

A directory of five files, which DVC hashes in milliseconds: `{train,test}_images.npy` (uint8,
N x S x S x 3, S = data.image_size), `{train,test}_labels.npy` (int64) and `classes.json`. Images
are ordered by class, then by source path, so the order a source lists them in never matters.

`Writer` fills the image files row by row, at any row in any order, as images are decoded: writing
holds one image at a time, not the dataset. `load` memory-maps them read-only: a stage reads only the
pages of the images its subsets index.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
COPY_ROWS = 256  # rows per read when dropping the rows of skipped images


@dataclass
class Split:
    images: np.ndarray  # uint8, N x S x S x 3
    labels: np.ndarray  # int64, N


@dataclass
class Dataset:
    classes: list[str]
    train: Split
    test: Split


@dataclass(frozen=True)
class Summary:
    """What the download stage read: the classes, each split's image count, the layout and how many
    images were skipped as unreadable."""

    classes: list[str]
    counts: dict[str, int]
    layout: str
    skipped: int = 0


def load(data_dir: str | Path) -> Dataset:
    """Read the canonical form. Images are memory-mapped read-only."""
    data_dir = Path(data_dir)
    splits = {
        name: Split(np.load(data_dir / f"{name}_images.npy", mmap_mode="r"), np.load(data_dir / f"{name}_labels.npy"))
        for name in SPLITS
    }
    return Dataset(json.loads((data_dir / "classes.json").read_text()), **splits)


def save(dataset: Dataset, out_dir: str | Path) -> None:
    """Write an in-memory `dataset` in the canonical form to `out_dir` (made if missing)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        split = getattr(dataset, name)
        rows = ImageRows(Path(out_dir) / f"{name}_images.npy", len(split.labels), split.images.shape[1])
        rows.put_all(split.images)
        rows.close()
    write_labels(out_dir, dataset.classes, {name: getattr(dataset, name).labels for name in SPLITS})


def write_labels(out_dir: str | Path, classes: list[str], labels: dict[str, np.ndarray]) -> None:
    """The labels of each split and the class names."""
    for name in SPLITS:
        np.save(Path(out_dir) / f"{name}_labels.npy", labels[name].astype(np.int64))
    (Path(out_dir) / "classes.json").write_text(json.dumps(classes, indent=2) + "\n")


class ImageRows:
    """One split's image file (`.npy`, what `np.save` writes for an N x S x S x 3 uint8 array),
    allocated for `count` rows and written row by row with positional writes (no memory map: the
    pages written are the kernel's to flush, never this process's memory)."""

    def __init__(self, path: Path, count: int, image_size: int):
        self.path, self.count, self.image_shape = path, count, (image_size, image_size, 3)
        self.row_bytes = image_size * image_size * 3
        with open(path, "wb") as file:
            self.offset = _write_header(file, (count, *self.image_shape))
            file.truncate(self.offset + count * self.row_bytes)
        self._fd = os.open(path, os.O_RDWR)

    def put(self, row: int, image: np.ndarray) -> None:
        os.pwrite(self._fd, np.ascontiguousarray(image, dtype=np.uint8).data, self.offset + row * self.row_bytes)

    def put_all(self, images: np.ndarray) -> None:
        """Rows 0 .. len(images) - 1, in chunks (`images` may be a memory map)."""
        for start in range(0, len(images), COPY_ROWS):
            os.pwrite(
                self._fd,
                np.ascontiguousarray(images[start : start + COPY_ROWS], dtype=np.uint8).data,
                self.offset + start * self.row_bytes,
            )

    def close(self, kept: np.ndarray | None = None) -> None:
        """Finish the file; with `kept` (sorted row numbers), only those rows remain, in order (the
        rest belonged to images that turned out unreadable)."""
        if kept is not None and len(kept) < self.count:
            self._keep_only(kept)
        os.close(self._fd)

    def _keep_only(self, kept: np.ndarray) -> None:
        """Keep the `kept` rows: each moves down to its new place (row i of the result comes from
        row kept[i] >= i, so no row is overwritten before it is read), the header says the new
        count, and the file is cut."""
        for new_row, old_row in enumerate(int(row) for row in kept):
            if new_row != old_row:
                block = os.pread(self._fd, self.row_bytes, self.offset + old_row * self.row_bytes)
                os.pwrite(self._fd, block, self.offset + new_row * self.row_bytes)
        with open(self.path, "r+b") as file:
            _write_header(file, (len(kept), *self.image_shape))
        os.truncate(self.path, self.offset + len(kept) * self.row_bytes)


def _write_header(file, shape: tuple[int, ...]) -> int:
    """Write the `.npy` header of a uint8 C-order array of `shape` (the one np.save writes); its
    length. numpy pads it so that the first dimension can grow or shrink without changing that
    length, so a smaller count can be written over a larger one."""
    np.lib.format.write_array_header_1_0(file, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return file.tell()
