"""Frozen, partly or wholly fine-tuned: the one place that decides how a pretrained backbone is used.

- `FrozenBackbone` (`transfer.freeze: true`): a model's inputs are the backbone's pooled features,
  computed once per image on this machine (the feature cache); the new head alone trains and is
  saved. Heads are small, so every epoch's training state is kept in the machine-wide cache, where
  a later run that changes only `epochs`, in any workspace, finds it.
- `PartialBackbone` (`freeze: true`, `trainable_stages` N > 0): inputs are the activations entering
  the backbone's last N stages, its frozen part run once per image on this machine (the feature
  cache again); those stages, the conv head and the new head train (BatchNorm in training mode)
  and are saved. Their states, megabytes each, are kept in the machine-wide cache (`tails/`): the
  newest and those at the grid's epoch counts.
- `FineTunedBackbone` (`false`): inputs are the images, transformed on the fly every epoch; the
  whole network trains and is saved. Its newest state, and those at the grid's epoch counts, are
  kept under `checkpoints/train_transfer/`, as resume points until the stage completes.

Training (`transfer.py`) and scoring (`evaluation.py`) both ask `backbone_mode` which one applies.
"""

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab import backbones, models
from transferlab.cache import root as machine_cache
from transferlab.checkpoints import Checkpoints
from transferlab.classifier import Classifier
from transferlab.features import FeatureCache

FINE_TUNING_CHECKPOINTS = Path("checkpoints/train_transfer")


class BackboneMode:
    """How one backbone (its feature cache) is used; batches of `batch_size` on `device`."""

    # Whether training states outlive the stage (in the machine-wide cache), or are resume points
    keeps_checkpoints = True

    def __init__(self, cache: FeatureCache, batch_size: int, device: torch.device):
        self.cache, self.batch_size, self.device = cache, batch_size, device


class FrozenBackbone(BackboneMode):
    """Inputs are cached features; the network that trains, scores and is saved is the head."""

    @staticmethod
    def checkpoints(cache_dir: Path | None, grid_epochs: tuple[int, ...]) -> Checkpoints:
        return Checkpoints(Path(cache_dir or machine_cache()) / "heads", keep_every_epoch=True)

    def inputs(self, images: np.ndarray) -> torch.Tensor:
        return self.cache.get(images, self.batch_size, self.device)

    def network(self, head: nn.Module) -> nn.Module:
        return head

    def saved(self, network: nn.Module) -> nn.Module:
        return network

    def parameter_counts(self, network: nn.Module) -> dict[str, int]:
        return models.frozen_transfer_parameters(self.cache.name, network, network)

    @staticmethod
    def scorer(classifier: Classifier) -> nn.Module:
        """The part of a trained classifier that maps these inputs to logits."""
        return classifier.head


class PartialBackbone(FrozenBackbone):
    """Inputs are cached activations of the backbone's frozen part; the network that trains, scores
    and is saved is its tail (its last stages) with the head (`models.TailModel`)."""

    def __init__(self, cache: FeatureCache, batch_size: int, device: torch.device):
        super().__init__(cache, batch_size, device)
        # Built now, before any experiment seeds the RNG (as for fine-tuning, below)
        self.tail = backbones.split(cache.backbone.features, cache.trainable_stages)[1]

    @staticmethod
    def checkpoints(cache_dir: Path | None, grid_epochs: tuple[int, ...]) -> Checkpoints:
        """The newest state, and each grid epoch count's: a tail's state (with Adam's) is megabytes."""
        return Checkpoints(Path(cache_dir or machine_cache()) / "tails", keep_every_epoch=False, milestones=grid_epochs)

    def network(self, head: nn.Module) -> nn.Module:
        """A copy of the pretrained tail with `head`."""
        return models.TailModel(copy.deepcopy(self.tail), head)

    def parameter_counts(self, network: nn.Module) -> dict[str, int]:
        return models.frozen_transfer_parameters(self.cache.name, network, network.head)

    @staticmethod
    def scorer(classifier: Classifier) -> nn.Module:
        return classifier.tail_model


class FineTunedBackbone(BackboneMode):
    """Inputs are images (N x 3 x H x W uint8); the whole network, transform first, trains."""

    keeps_checkpoints = False  # the stage deletes them once its outputs are written

    def __init__(self, cache: FeatureCache, batch_size: int, device: torch.device):
        super().__init__(cache, batch_size, device)
        # Built now, before any experiment seeds the RNG: building draws random initial weights, so
        # building it later (when the cache spared an earlier build) would change the results.
        self.backbone = cache.backbone

    @staticmethod
    def checkpoints(cache_dir: Path | None, grid_epochs: tuple[int, ...]) -> Checkpoints:
        """The newest state, and each grid epoch count's (a rerun then retrains none of them)."""
        return Checkpoints(FINE_TUNING_CHECKPOINTS, keep_every_epoch=False, milestones=grid_epochs)

    def inputs(self, images: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(images).permute(0, 3, 1, 2)

    def network(self, head: nn.Module) -> nn.Module:
        """A copy of the pretrained features with `head`, after the backbone's transform."""
        features = copy.deepcopy(self.backbone.features)
        return nn.Sequential(self.backbone.transform, models.TransferModel(features, head))

    def saved(self, network: nn.Module) -> nn.Module:
        return network[1]  # the TransferModel: the transform has no weights

    def parameter_counts(self, network: nn.Module) -> dict[str, int]:
        return models.count_parameters(self.saved(network))

    @staticmethod
    def scorer(classifier: Classifier) -> nn.Module:
        return nn.Sequential(classifier.backbone.transform, classifier.model)


def backbone_mode(freeze: bool, trainable_stages: int = 0) -> type[BackboneMode]:
    if not freeze:
        return FineTunedBackbone
    return PartialBackbone if trainable_stages else FrozenBackbone
