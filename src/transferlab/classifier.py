"""A trained model rebuilt from its checkpoint, with the preprocessing its inputs need."""

import copy
import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab import backbones
from transferlab.errors import UserError
from transferlab.models import (
    TailModel,
    TinyVGG,
    TransferModel,
    count_parameters,
    freeze,
    frozen_transfer_parameters,
    transfer_head,
    uint8_to_float,
)
from transferlab.outputs import load_torch


class Classifier:
    """A trained model rebuilt from a checkpoint (`models.tinyvgg_checkpoint`,
    `models.transfer_checkpoint`).

    With a frozen backbone, `head` is ready at once and the pretrained backbone (and `model`) is
    only built when first used: scoring cached features needs neither. With trained last stages,
    the pretrained backbone is built at once and those stages' weights replace its own: `model`
    runs on images, `tail_model` (the same stages and head) on its frozen part's activations.
    """

    def __init__(self, checkpoint: dict, load_backbone=backbones.load):
        """`load_backbone(name, image_size)` may share one frozen backbone between classifiers."""
        self.checkpoint = checkpoint
        self.kind = checkpoint["kind"]
        self.classes = list(checkpoint["classes"])
        self.config = dict(checkpoint["config"])
        self._load_backbone = load_backbone
        if self.kind == "tinyvgg":
            self.backbone = None
            self.model = TinyVGG(self.config["hidden_units"], len(self.classes), self.config["image_size"])
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.eval()
        elif self.trainable_stages:
            # a copy: `load_backbone` may share the pretrained backbone, whose tail is replaced here
            self.backbone = copy.deepcopy(self._load_backbone(self.config["backbone"], self.config["image_size"]))
            freeze(self.backbone.features)
            self.head = transfer_head(self.config["backbone"], len(self.classes))
            tail = backbones.split(self.backbone.features, self.trainable_stages)[1]
            self.tail_model = TailModel(tail, self.head)
            self.tail_model.load_state_dict(checkpoint["state_dict"])
            self.tail_model.eval()
        elif self.frozen:
            self.head = transfer_head(self.config["backbone"], len(self.classes))
            self.head.load_state_dict(checkpoint["state_dict"])
            self.head.eval()
        else:  # a fine-tuned checkpoint holds every weight: no pretrained download, no sharing
            self.backbone = backbones.load(self.config["backbone"], self.config["image_size"], pretrained=False)
            head = transfer_head(self.config["backbone"], len(self.classes))
            self.model = TransferModel(self.backbone.features, head)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.eval()

    @property
    def frozen(self) -> bool:
        return self.kind == "transfer" and self.config["frozen"]

    @property
    def trainable_stages(self) -> int:
        """How many of the backbone's last stages trained (0 for every other kind)."""
        return self.config.get("trainable_stages", 0) if self.frozen else 0

    @functools.cached_property
    def backbone(self) -> backbones.Backbone:
        """The frozen pretrained backbone (set in __init__ for the other kinds)."""
        backbone = self._load_backbone(self.config["backbone"], self.config["image_size"])
        freeze(backbone.features)
        return backbone

    @functools.cached_property
    def model(self) -> nn.Module:
        """Frozen backbone + head (set in __init__ for the other kinds)."""
        return TransferModel(self.backbone.features, self.head).eval()

    def parameter_counts(self) -> dict[str, int]:
        if self.frozen:
            trained = self.tail_model if self.trainable_stages else self.head
            return frozen_transfer_parameters(self.config["backbone"], trained, self.head)
        return count_parameters(self.model)

    @property
    def data_image_size(self) -> int:
        """The side length of the canonical images the model was trained on."""
        return self.config.get("data_image_size", self.config.get("image_size"))

    @classmethod
    def from_file(cls, path: str | Path, load_backbone=backbones.load) -> "Classifier":
        """The classifier saved at `path`; one UserError line when the file is unsafe, corrupt or
        not a model checkpoint."""
        checkpoint = load_torch(path)
        try:
            return cls(checkpoint, load_backbone)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:  # RuntimeError: weights' shapes
            raise UserError(f"{path} is not a model checkpoint this pipeline wrote ({type(err).__name__})") from None

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 uint8 images -> the model's input batch."""
        if self.kind == "tinyvgg":
            return uint8_to_float(images)
        return self.backbone.transform(torch.as_tensor(images).permute(0, 3, 1, 2))
