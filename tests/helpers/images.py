"""Tiny ImageFolder trees: one well-separated colour per class, a little seeded noise per image."""

from pathlib import Path

import numpy as np
from PIL import Image

# Well-separated base colours, one per class (by position in `classes`); cycles past the end.
PALETTE = [
    (220, 30, 30),
    (30, 200, 40),
    (40, 50, 220),
    (230, 220, 40),
    (200, 40, 210),
    (40, 210, 210),
    (240, 140, 20),
    (120, 120, 120),
    (250, 250, 250),
    (10, 10, 10),
]
NOISE = 12  # per-pixel jitter (+-), so images differ but classes stay far apart


def class_colour(index: int) -> tuple[int, int, int]:
    """The base RGB colour `make_image_folder` uses for the class at `index`."""
    return PALETTE[index % len(PALETTE)]


def make_image(colour, size=12, seed=0) -> Image.Image:
    """An RGB image of `colour` with a little seeded noise; `size` is an int or (width, height)."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    noise = rng.integers(-NOISE, NOISE + 1, size=(height, width, 3))
    pixels = np.clip(np.asarray(colour, dtype=np.int64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def make_image_folder(root, classes=("a", "b", "c"), n_train=6, n_test=3, size=12, fmt="png") -> Path:
    """Write train/<class>/*.<fmt> and test/<class>/*.<fmt> with class-distinct colours; return root."""
    root = Path(root)
    for split, count in (("train", n_train), ("test", n_test)):
        for index, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed = (index * 1000 + i) * 2 + (split == "test")
                make_image(class_colour(index), size, seed).save(folder / f"img_{i:03d}.{fmt}")
    return root
