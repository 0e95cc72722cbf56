"""Everything a frozen backbone produces, computed once per backbone and input size, then reused.

The cache is one file per backbone and input size under `data/features/` (not a DVC output;
delete it freely). It holds pooled features keyed by the SHA-1 of each image's pixels, so every
experiment and epoch count, and the evaluate and select_best stages, reuse the same forward
passes; and named artefacts derived from the backbone (its TensorBoard graph and torchinfo
summary), so a rerun whose images are all cached never builds the backbone at all. (train_transfer
keeps its heads' training states beside it, in `data/features/heads/`.)
"""
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from transferlab import backbones
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
    return torch.cat(chunks) if chunks else torch.empty(0, backbone.info.num_features)


class FeatureCache:
    """Features and derived artefacts of one backbone at one input size. The backbone is built
    (`load(name, image_size)`) only when something asked for is not cached yet."""

    def __init__(self, name: str, image_size: int | None = None, cache_dir: str | Path = DEFAULT_CACHE_DIR,
                 load: Callable[[str, int | None], Backbone] = backbones.load):
        self.name, self.image_size, self._load = name, image_size, load
        self.num_features = backbones.info(name).num_features
        self.path = Path(cache_dir) / f"{name}_{backbones.input_size(name, image_size)}px.pt"

    @functools.cached_property
    def backbone(self) -> Backbone:
        return self._load(self.name, self.image_size)

    @functools.cached_property
    def _stored(self) -> dict:
        """The cache file's content, read once per instance and kept in step with what it writes."""
        stored = load_torch(self.path) if self.path.exists() else {}
        return {"keys": [], "features": None, "derived": {}, **stored}

    def get(self, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
        """Features for `images` in order; only images never seen before go through the backbone."""
        keys = image_keys(images)
        stored = self._stored
        row_of = {key: row for row, key in enumerate(stored["keys"])}
        new_indices = []
        for index, key in enumerate(keys):
            if key not in row_of:
                row_of[key] = len(stored["keys"]) + len(new_indices)
                new_indices.append(index)
        if new_indices:
            new = compute(self.backbone, images[new_indices], batch_size, device)
            features = new if stored["features"] is None else torch.cat([stored["features"], new])
            stored.update(keys=stored["keys"] + [keys[i] for i in new_indices], features=features)
            save_torch(self.path, stored)
        if not keys:
            return torch.empty(0, self.num_features)
        return stored["features"][[row_of[key] for key in keys]]

    def derived(self, key: str, make: Callable[[Backbone], object]) -> object:
        """The artefact `key`, made from the backbone by `make` the first time, then read from the
        cache (tensors, strings, bytes and plain containers)."""
        derived = self._stored["derived"]
        if key not in derived:
            derived[key] = make(self.backbone)
            save_torch(self.path, self._stored)
        return derived[key]
