"""Predict with the exported best model: class and probability for each image file."""

from pathlib import Path

import numpy as np
import torch

from transferlab import model_files
from transferlab.decoding import UNREADABLE_IMAGE_ERRORS, decode_image
from transferlab.errors import UserError
from transferlab.params import Resize

DEFAULT_MODEL = Path("models/best.pt")


def load_images(paths: list[Path], image_size: int, resize: Resize = "crop") -> np.ndarray:
    """Decode image files like the download stage does (upright RGB, fitted to image_size x
    image_size by `resize`)."""
    arrays = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        try:
            arrays.append(decode_image(path.read_bytes(), image_size, resize))
        except UNREADABLE_IMAGE_ERRORS as err:
            raise UserError(f"{path}: not a readable image ({err})") from None
    return np.stack(arrays)


@torch.inference_mode()
def predict(paths: list[Path], model_file: Path = DEFAULT_MODEL) -> list[tuple[str, float]]:
    """(class, probability) for each image, from the exported model."""
    if not model_file.is_file():
        raise UserError(f"no exported model at {model_file}; run `dvc repro` first (select_best writes it)")
    model = model_files.load(model_file)
    images = load_images(paths, model.data_image_size, model.file.get("resize", "crop"))  # older exports: crop
    probabilities = model.network(model.preprocess(images)).softmax(dim=1)
    confidence, index = probabilities.max(dim=1)
    return [(model.classes[i], p) for i, p in zip(index.tolist(), confidence.tolist(), strict=True)]
