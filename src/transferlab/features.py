"""Frozen-backbone features, computed once per distinct image and backbone, then reused.

The cache is one file per backbone and input size under `data/features/` (not a DVC output;
delete it freely). Rows are keyed by the SHA-1 of the image's pixels, so every experiment and
every epoch count, and the evaluate and select_best stages, reuse the same forward passes.
"""
import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from transferlab.backbones import Backbone
from transferlab.outputs import load_torch, save_torch

DEFAULT_CACHE_DIR = Path("data/features")


def image_keys(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


@torch.inference_mode()
def compute(backbone: Backbone, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """Pooled features of N x H x W x 3 uint8 images, one backbone pass per image."""
    backbone.features.to(device).eval()
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=f"features {backbone.info.name}", unit="batch"):
        batch = torch.as_tensor(images[start:start + batch_size]).permute(0, 3, 1, 2).to(device)
        chunks.append(backbone.features(backbone.transform(batch)).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, backbone.num_features)


class FeatureCache:
    """Features of one backbone at one input size, keyed by image content."""

    def __init__(self, backbone: Backbone, cache_dir: str | Path = DEFAULT_CACHE_DIR):
        self.backbone = backbone
        size = backbone.transform.crop_size[0]
        self.path = Path(cache_dir) / f"{backbone.info.name}_{size}px.pt"

    def get(self, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
        """Features for `images` in order; only images never seen before go through the backbone."""
        keys = image_keys(images)
        stored = load_torch(self.path) if self.path.exists() else {"keys": [], "features": None}
        row_of = {key: row for row, key in enumerate(stored["keys"])}
        new_indices = []
        for index, key in enumerate(keys):
            if key not in row_of:
                row_of[key] = len(stored["keys"]) + len(new_indices)
                new_indices.append(index)
        if new_indices:
            new = compute(self.backbone, images[new_indices], batch_size, device)
            features = new if stored["features"] is None else torch.cat([stored["features"], new])
            stored = {"keys": stored["keys"] + [keys[i] for i in new_indices], "features": features}
            save_torch(self.path, stored)
        if not keys:
            return torch.empty(0, self.backbone.num_features)
        return stored["features"][[row_of[key] for key in keys]]
