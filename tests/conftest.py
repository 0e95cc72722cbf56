"""Shared test helpers: tiny ImageFolder trees and the repository's params.yaml as a dict."""
import copy
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PARAMS_YAML = ROOT / "params.yaml"

# Well-separated base colours, one per class (by position in `classes`); cycles past the end.
PALETTE = [
    (220, 30, 30), (30, 200, 40), (40, 50, 220), (230, 220, 40), (200, 40, 210),
    (40, 210, 210), (240, 140, 20), (120, 120, 120), (250, 250, 250), (10, 10, 10),
]
NOISE = 12  # per-pixel jitter (+-), so images differ but classes stay far apart


def events(run_dir):
    """A TensorBoard run directory's events, loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


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


@pytest.fixture(scope="session", autouse=True)
def _test_machine_cache(tmp_path_factory):
    """No test touches the user's machine-wide cache: the session has its own."""
    os.environ["TRANSFERLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("machine_cache"))


@pytest.fixture
def image_folder_factory():
    """`make_image_folder` as a fixture: image_folder_factory(tmp_path / "ds", classes=(...), ...)."""
    return make_image_folder


@pytest.fixture(scope="session")
def _params_yaml_dict() -> dict:
    return yaml.safe_load(PARAMS_YAML.read_text())


@pytest.fixture
def params_dict(_params_yaml_dict) -> dict:
    """The repository's params.yaml, parsed; a deep copy each test may modify freely."""
    return copy.deepcopy(_params_yaml_dict)
