"""Everything a frozen backbone produces, computed once per machine, backbone and input size.

Each backbone at each input size has a directory in the machine-wide cache (`cache.root()`):
`features/<backbone>_<size>px/`. Pooled features live in a folder per runtime and version that
computed them (`onnxruntime-1.32.0/`, `torch-2.14.1/`: see `runtimes`), keyed by the SHA-1 of
each image's pixels and stored in shards: every run that meets new images adds one shard file
holding just those, so no writer ever rewrites (or loses) another's entries. When the backbone's
last N stages train (`trainable_stages`), what is cached is the output of its frozen part, the
activations entering those stages (C x H x W per image), in `before_last_<N>_stages/<runtime>-<version>/`.
They are kept in full precision, as features are: in half precision the tails trained on them
drift from those trained through the whole network (BENCHMARKS.md). Beside them,
`derived/` holds artefacts made from the backbone (its TensorBoard graph, torchinfo summary and
exported ONNX model), so a run whose images are all cached never builds the backbone at all.

Computing takes that folder's lock and first rereads its shards: when two workers need the same
images at once, one computes them and the other waits, then finds them cached. In PyTorch, with
`processes` > 1, the new images are split over that many worker processes (`distributed`: one GPU
each), and this process stores what they computed. (ONNX Runtime already uses every CPU core.)
"""

import functools
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from transferlab import backbones, cache, distributed, engine, registry, runtimes
from transferlab.backbones import Backbone
from transferlab.torchfiles import save_torch


def image_keys(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def compute(
    extract: Callable[[np.ndarray], torch.Tensor], images: np.ndarray, batch_size: int, desc: str, progress: bool = True
) -> torch.Tensor:
    """Features of N x H x W x 3 uint8 images (N > 0), one `extract` call per batch."""
    bar = functools.partial(tqdm, desc=desc, unit="batch", disable=not progress)
    return engine.in_batches(extract, images, batch_size, bar)


def _compute_part(
    group: distributed.Group, backbone: Backbone, trainable_stages: int, images: np.ndarray, batch_size: int, desc: str
):
    """A worker's part of `compute` in PyTorch: the features of its contiguous share of `images`."""
    extract = runtimes.torch_features(backbone, group.device, trainable_stages)
    return compute(extract, images[group.part(len(images))], batch_size, desc, progress=group.leader)


class FeatureCache:
    """Features (computed by `runtime`: see `runtimes`) and derived artefacts of one backbone at one
    input size; with `trainable_stages` > 0, the activations entering its last that many stages
    instead of its pooled features. The backbone is built (`load(name, image_size)`) only when
    something asked for is not cached yet."""

    def __init__(
        self,
        name: str,
        image_size: int | None = None,
        cache_dir: str | Path | None = None,
        load: Callable[[str, int | None], Backbone] = backbones.load,
        runtime: str = runtimes.TORCH,
        processes: int = 1,
        trainable_stages: int = 0,
    ):
        self.name, self.image_size, self._load, self.runtime = name, image_size, load, runtime
        self.processes = processes if runtime == runtimes.TORCH else 1
        self.trainable_stages = trainable_stages
        self.num_features = registry.info(name).num_features
        self.directory = (
            Path(cache_dir or cache.root()) / "features" / f"{name}_{registry.input_size(name, image_size)}px"
        )
        self.boundary = f"_before_last_{trainable_stages}_stages" if trainable_stages else ""
        self.shards_dir = self.directory / self.boundary.lstrip("_") / runtimes.tag(runtime)
        self._row_of: dict[str, int] = {}
        self._chunks: list[torch.Tensor] = []
        self._shards_read: set[str] = set()
        self._concatenated: torch.Tensor | None = None

    @functools.cached_property
    def backbone(self) -> Backbone:
        return self._load(self.name, self.image_size)

    def get(self, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
        """Features for `images` in order; only images this machine never saw go through the backbone."""
        keys = image_keys(images)
        if self._missing(keys):
            with cache.exclusive(self.shards_dir / ".lock", f"computing {self.name} features on {self.runtime}"):
                if new_keys := self._missing(keys):  # rereads what others wrote while we waited
                    self._compute(images, keys, new_keys, batch_size, device)
        if not keys:
            return torch.empty(0, *self._entry_shape())
        return self._features()[[self._row_of[key] for key in keys]]

    def stats(self) -> dict[str, int]:
        """What the cache holds on disk: distinct `images`, stored `entries` (more than `images`
        only if an image was ever computed twice) and `shards`."""
        self._read_new_shards()
        return {"images": len(self._row_of), "entries": sum(map(len, self._chunks)), "shards": len(self._chunks)}

    def _missing(self, keys: list[str]) -> list[str]:
        """Distinct keys among `keys` that no shard holds, in first-seen order."""
        self._read_new_shards()
        return [key for key in dict.fromkeys(keys) if key not in self._row_of]

    def _compute(
        self, images: np.ndarray, keys: list[str], new_keys: list[str], batch_size: int, device: torch.device
    ) -> None:
        print(
            f"features {self.directory.name}{self.boundary}: computing {len(new_keys)} new images "
            f"({len(set(keys)) - len(new_keys)} cached) on {self.runtime} in {self.shards_dir}",
            file=sys.stderr,
        )
        if len(new_keys) == len(keys):  # every image new and distinct: no copy of the subset
            new_images = images
        else:
            first_index = {key: index for index, key in reversed(list(enumerate(keys)))}
            new_images = images[[first_index[key] for key in new_keys]]
        desc = f"features {self.name} ({self.runtime})"
        if (processes := min(self.processes, len(new_images))) > 1:
            parts = distributed.launch(
                processes, device, _compute_part, self.backbone, self.trainable_stages, new_images, batch_size, desc
            )
            features = torch.cat(parts)
        else:
            # the ONNX export takes batches of EXPORT_BATCH: fed another size, it would pad every batch
            batch_size = runtimes.EXPORT_BATCH if self.runtime == runtimes.ONNX_RUNTIME else batch_size
            features = compute(self._extractor(images.shape[1:3], device), new_images, batch_size, desc)
        name = hashlib.sha1("".join(new_keys).encode()).hexdigest()[:20]
        save_torch(self.shards_dir / f"{name}.pt", {"keys": new_keys, "features": features})
        self._shards_read.add(f"{name}.pt")
        self._add(new_keys, features)

    def _extractor(self, image_shape: tuple[int, int], device: torch.device) -> Callable[[np.ndarray], torch.Tensor]:
        """Images -> features on this cache's runtime (for ONNX Runtime, from the cached export)."""
        if self.runtime == runtimes.TORCH:
            return runtimes.torch_features(self.backbone, device, self.trainable_stages)
        return runtimes.onnx_features(self.onnx_model(*image_shape), self.name)

    def onnx_model(self, height: int, width: int) -> bytes:
        """The backbone (its frozen part) exported for H x W images (`runtimes.export_onnx`): once
        per machine and torch version, then read from the cache."""
        return self.derived(
            f"onnx_{height}x{width}_batch{runtimes.EXPORT_BATCH}_{runtimes.tag('torch')}{self.boundary}",
            lambda backbone: runtimes.export_onnx(backbone, height, width, self.trainable_stages),
            valid=runtimes.is_onnx_model,
        )

    def _read_new_shards(self) -> None:
        for path in sorted(self.shards_dir.glob("*.pt")):
            if path.name not in self._shards_read:
                self._shards_read.add(path.name)
                if shard := cache.read(path, self._is_shard):
                    self._add(shard["keys"], shard["features"])

    def _is_shard(self, content: object) -> bool:
        return (
            isinstance(content, dict)
            and isinstance(content.get("keys"), list)
            and isinstance(content.get("features"), torch.Tensor)
            and content["features"].dtype == torch.float32
            and len(content["features"]) == len(content["keys"])
            and content["features"].shape[1:] == self._entry_shape(content["features"].shape[1:])
        )

    def _entry_shape(self, default: tuple[int, ...] = ()) -> tuple[int, ...]:
        """One image's entry: a pooled feature vector, or the C x H x W activations that the shards
        read so far hold (`default` before any: the first shard sets them)."""
        if not self.trainable_stages:
            return (self.num_features,)
        return tuple(self._chunks[0].shape[1:]) if self._chunks else tuple(default)

    def _add(self, keys: list[str], features: torch.Tensor) -> None:
        offset = sum(map(len, self._chunks))
        for row, key in enumerate(keys):
            self._row_of.setdefault(key, offset + row)
        self._chunks.append(features)
        self._concatenated = None

    def _features(self) -> torch.Tensor:
        """All rows read so far, concatenated once per change."""
        if self._concatenated is None:
            self._concatenated = torch.cat(self._chunks)
        return self._concatenated

    def derived(
        self, key: str, make: Callable[[Backbone], object], valid: Callable[[object], bool] = lambda value: True
    ) -> object:
        """The artefact `key`, made from the backbone by `make` the first time, then read from the
        cache (tensors, strings, bytes and plain containers); a stored one that is not `valid` is
        made again."""
        path = self.directory / "derived" / f"{key}.pt"

        def is_valid(content: object) -> bool:
            return isinstance(content, dict) and "value" in content and valid(content["value"])

        if (stored := cache.read(path, is_valid)) is None:
            with cache.exclusive(self.directory / ".lock", f"making {self.name} {key}"):
                if (stored := cache.read(path, is_valid)) is None:
                    stored = {"value": make(self.backbone)}
                    save_torch(path, stored)
        return stored["value"]


class FeatureCaches:
    """One `FeatureCache` per backbone, input size, runtime and depth, shared by every model a
    process scores: each reads the cache's shards once, not once per model."""

    def __init__(self, cache_dir: str | Path | None = None):
        self.cache_dir = cache_dir
        self._caches: dict[tuple, FeatureCache] = {}

    def get(
        self, name: str, image_size: int | None, runtime: str, trainable_stages: int, load: Callable
    ) -> FeatureCache:
        """The shared cache; `load` builds the backbone if an image is not cached yet."""
        key = (name, image_size, runtime, trainable_stages)
        if key not in self._caches:
            self._caches[key] = FeatureCache(
                name, image_size, self.cache_dir, load=load, runtime=runtime, trainable_stages=trainable_stages
            )
        return self._caches[key]
