"""The kinds of model built on a pretrained backbone (`kinds.Model` is what all kinds share). How
much of the backbone trains is decoded once, here (`kind_of`).

- `FrozenHead` (`transfer.freeze: true`, `trainable_stages: 0`): its inputs are the backbone's
  pooled features, computed once per image on this machine (`features.FeatureCache`); the new head
  alone trains and is saved. Heads are small, so every epoch's training state is kept in the
  machine-wide cache, where a later run that changes only `epochs`, in any workspace, finds it.
- `LastStages` (`freeze: true`, `trainable_stages` N > 0): its inputs are the activations entering
  the backbone's last N stages, its frozen part run once per image (the feature cache again);
  those stages, the conv head and the new head train (BatchNorm in training mode) and are saved
  (`networks.TailModel`). Their states, megabytes each, are kept in the machine-wide cache
  (`tails/`): the newest and those at the grid's epoch counts.
- `FineTuned` (`freeze: false`): its inputs are the images, transformed on the fly every epoch;
  the whole network trains and is saved. Its newest state, and those at the grid's epoch counts,
  are kept under `checkpoints/train_transfer/` as resume points until the stage completes.
"""

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from transferlab import backbones, engine, registry
from transferlab.cache import root as machine_cache
from transferlab.checkpoints import Checkpoints
from transferlab.features import FeatureCache, FeatureCaches
from transferlab.kinds import Model
from transferlab.networks import (
    TailModel,
    TransferModel,
    count_parameters,
    freeze,
    frozen_transfer_parameters,
    transfer_head,
)

FINE_TUNING_CHECKPOINTS = Path("checkpoints/train_transfer")
LoadBackbone = Callable[[str, int | None], backbones.Backbone]


class TransferKind(Model):
    """A pretrained backbone with a new head. Training makes one per experiment (`new`, after the
    experiment's seed), from its backbone's feature cache (`prepare`d before any seeding);
    `from_config` rebuilds one from its model file, loading the pretrained backbone with
    `load_backbone(name, image_size)` (which may share one between models)."""

    # Whether every model copies the pretrained backbone (built in `prepare`), or needs only its inputs
    copies_backbone: ClassVar[bool] = False

    def __init__(self, classes: list[str], config: dict, load_backbone: LoadBackbone = backbones.load):
        super().__init__(classes, config)
        self._load_backbone = load_backbone
        self.head = transfer_head(config["backbone"], len(classes))

    @classmethod
    def make_config(
        cls, backbone: str, image_size: int | None, data_image_size: int, runtime: str, trainable_stages: int = 0
    ) -> dict:
        """What rebuilds a model of this kind. `runtime` computed the frozen features it trained
        on (`runtimes`), so scoring uses the same."""
        config = {
            "backbone": backbone,
            "image_size": image_size,
            "frozen": cls is not FineTuned,
            "data_image_size": data_image_size,
            "runtime": runtime,
        }
        if trainable_stages:  # absent otherwise: a frozen head's model file is as it always was
            config["trainable_stages"] = trainable_stages
        return config

    @classmethod
    def prepare(cls, cache: FeatureCache) -> None:
        """Build now, before any experiment seeds the RNG, what every model of this backbone copies:
        building draws random initial weights, so building it later (when the cache spared an
        earlier build) would change the results."""
        if cls.copies_backbone:
            cache.backbone  # noqa: B018 (the build itself is the point)

    @classmethod
    def new(cls, cache: FeatureCache, classes: list[str], config: dict) -> "TransferKind":
        """A model to train: a new head (drawn from the RNG now) on the pretrained `cache.backbone`."""
        return cls(classes, config, load_backbone=lambda *_: cache.backbone)

    @classmethod
    def from_config(cls, classes: list[str], config: dict, load_backbone: LoadBackbone) -> "TransferKind":
        """A model of this kind rebuilt from its model file's `config` (weights not loaded yet)."""
        return cls(classes, config, load_backbone)

    @classmethod
    def inputs_of(cls, cache: FeatureCache, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
        """What `scorer` takes for N x H x W x 3 uint8 images: the cached features of its backbone
        (computed for images this machine never saw)."""
        return cache.get(images, batch_size, device)

    def inputs(self, images: np.ndarray, caches: FeatureCaches, device: torch.device) -> torch.Tensor:
        return self.inputs_of(self.feature_cache(caches), images, engine.SCORING_BATCH, device)

    @staticmethod
    def training_states(cache_dir: Path | None, grid_epochs: tuple[int, ...]) -> Checkpoints:
        """Where training states of this kind are kept, and which (`checkpoints.Checkpoints`)."""
        return Checkpoints(Path(cache_dir or machine_cache()) / "heads", keep_every_epoch=True)

    def feature_cache(self, caches: FeatureCaches) -> FeatureCache:
        """The cache of its backbone's inputs, at its input size and runtime (its frozen part is the
        pretrained one, so models of one backbone share it)."""
        config = self.config
        load = lambda *_: self.backbone  # noqa: E731 (built only if an image is not cached yet)
        return caches.get(config["backbone"], config["image_size"], config["runtime"], self.trainable_stages, load)

    @functools.cached_property
    def backbone(self) -> backbones.Backbone:
        """The frozen pretrained backbone, built when first used (scoring cached inputs needs none)."""
        backbone = self._load_backbone(self.config["backbone"], self.config["image_size"])
        freeze(backbone.features)
        return backbone

    @functools.cached_property
    def network(self) -> nn.Module:
        """Backbone + head, on preprocessed images."""
        return TransferModel(self.backbone.features, self.head).eval()

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        return self.backbone.transform(torch.as_tensor(images).permute(0, 3, 1, 2))

    def parameter_counts(self) -> dict[str, int]:
        return frozen_transfer_parameters(self.config["backbone"], self.saved, self.head)

    @property
    def trainable_stages(self) -> int:
        """How many of the backbone's last stages train (0: none, or all when fine-tuned)."""
        return self.config.get("trainable_stages", 0)

    @property
    def label(self) -> str:
        return registry.label(self.config["backbone"], self.trainable_stages)


class FrozenHead(TransferKind):
    """Inputs are cached pooled features; the head alone trains, scores and is saved."""

    @property
    def scorer(self) -> nn.Module:
        return self.head


class LastStages(TransferKind):
    """Inputs are cached activations of the backbone's frozen part; its last `trainable_stages`
    stages (from its config), conv head and the new head (`TailModel`) train, score and are saved."""

    copies_backbone = True

    def __init__(self, classes: list[str], config: dict, load_backbone: LoadBackbone = backbones.load):
        super().__init__(classes, config, load_backbone)
        # a copy: the pretrained backbone may be shared, and its tail is replaced by the trained one
        self.backbone = copy.deepcopy(self._load_backbone(config["backbone"], config["image_size"]))
        self.scorer = TailModel(backbones.split(self.backbone.features, self.trainable_stages)[1], self.head)

    @staticmethod
    def training_states(cache_dir: Path | None, grid_epochs: tuple[int, ...]) -> Checkpoints:
        """The newest state, and each grid epoch count's: a tail's state (with Adam's) is megabytes."""
        return Checkpoints(Path(cache_dir or machine_cache()) / "tails", keep_every_epoch=False, milestones=grid_epochs)


class FineTuned(TransferKind):
    """Inputs are images (N x 3 x H x W uint8); the whole network, transform first, trains."""

    keeps_training_states = False  # the stage deletes them once its outputs are written
    copies_backbone = True

    def __init__(self, classes: list[str], config: dict, load_backbone: LoadBackbone = backbones.load):
        super().__init__(classes, config, load_backbone)
        # a copy: the pretrained backbone may be shared, and every weight of this one trains
        self.backbone = copy.deepcopy(self._load_backbone(config["backbone"], config["image_size"]))
        self.network = TransferModel(self.backbone.features, self.head)
        self.scorer = nn.Sequential(self.backbone.transform, self.network)

    @classmethod
    def from_config(cls, classes: list[str], config: dict, load_backbone: LoadBackbone) -> "FineTuned":
        """Every weight is in the model file: no pretrained download, no sharing."""
        return cls(classes, config, lambda name, size: backbones.load(name, size, pretrained=False))

    @classmethod
    def inputs_of(cls, cache: FeatureCache, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(images).permute(0, 3, 1, 2)

    @staticmethod
    def training_states(cache_dir: Path | None, grid_epochs: tuple[int, ...]) -> Checkpoints:
        """The newest state, and each grid epoch count's (a rerun then retrains none of them)."""
        return Checkpoints(FINE_TUNING_CHECKPOINTS, keep_every_epoch=False, milestones=grid_epochs)

    @property
    def saved(self) -> nn.Module:
        return self.network  # the transform has no weights

    def parameter_counts(self) -> dict[str, int]:
        return count_parameters(self.network)


def kind_of(frozen: bool, trainable_stages: int = 0) -> type[TransferKind]:
    """The kind of transfer model that `transfer.freeze` and `trainable_stages` ask for."""
    if not frozen:
        return FineTuned
    return LastStages if trainable_stages else FrozenHead
