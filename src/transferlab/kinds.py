"""One object per kind of model: how it trains, what its model file holds, how it is rebuilt for
`predict` and how it scores. `Model` is what every kind shares (the model file) and `TinyVGGModel`
the model trained from scratch; the pretrained kinds are in `transfer_kinds`, and `model_files`
rebuilds any kind from its file.

A model file is a plain dict of tensors and primitives (loadable with weights_only=True): `kind`
(`tinyvgg` or `transfer`), `classes`, `config` (what rebuilds the model), `state_dict` (of the
model's `saved` part) and `hparams` (what the experiment was). A checkpoint, in this project, is a
training state (`checkpoints`), never a model file.
"""

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from transferlab import engine
from transferlab.networks import TinyVGG, count_parameters, uint8_to_float

# The projector's view of TinyVGG's penultimate layer is pooled to this grid (its size at 32 px): at
# a larger image size the layer is wider than the projector's text files can hold for 2,000 points.
PROJECTOR_GRID = 8


class Model:
    """A trained (or training) model of one kind: `scorer` maps its `inputs` to logits and is what
    trains; `saved` is the part whose weights its model file holds; `network` runs on its
    `preprocess`ed images (for `predict`)."""

    file_kind: ClassVar[str] = "transfer"
    # Whether training states outlive the stage (in the machine-wide cache), or are resume points
    keeps_training_states: ClassVar[bool] = True

    def __init__(self, classes: list[str], config: dict):
        self.classes, self.config = classes, config
        self.file: dict | None = None  # the model file it was rebuilt from, if any

    scorer: nn.Module

    @property
    def saved(self) -> nn.Module:
        return self.scorer

    def model_file(self, hparams: dict) -> dict:
        """What is saved of this model: its weights and what rebuilds them, and its `hparams`."""
        return {
            "kind": self.file_kind,
            "classes": self.classes,
            "config": self.config,
            "state_dict": self.saved.cpu().state_dict(),
            "hparams": hparams,
        }

    def parameter_counts(self) -> dict[str, int]:
        return count_parameters(self.saved)

    def scoring_set(self, images: np.ndarray, caches: object, device: torch.device) -> TensorDataset:
        """What `scorer` scores for N x H x W x 3 uint8 images, for the engine's batches (labels unused)."""
        inputs = self.inputs(images, caches, device)
        return TensorDataset(inputs, torch.zeros(len(inputs), dtype=torch.long))

    @property
    def data_image_size(self) -> int:
        """The side length of the canonical images the model was trained on."""
        return self.config.get("data_image_size", self.config.get("image_size"))


class TinyVGGModel(Model):
    """TinyVGG from scratch: images as floats in [0, 1] in, every weight trained and saved."""

    file_kind = "tinyvgg"
    backbone = None

    def __init__(self, classes: list[str], config: dict):
        super().__init__(classes, config)
        self.scorer = TinyVGG(config["hidden_units"], len(classes), config["image_size"])

    @classmethod
    def new(cls, classes: list[str], hidden_units: int, image_size: int) -> "TinyVGGModel":
        return cls(classes, {"hidden_units": hidden_units, "image_size": image_size})

    @property
    def network(self) -> nn.Module:
        return self.scorer

    @staticmethod
    def inputs_of(images: np.ndarray) -> torch.Tensor:
        return uint8_to_float(images)

    def scoring_set(self, images: np.ndarray, caches: object, device: torch.device) -> TensorDataset:
        """The uint8 images, each batch made floats as it is scored (no feature cache: `caches` is
        not used)."""
        labels = torch.zeros(len(images), dtype=torch.long)
        return engine.ConvertedDataset(torch.as_tensor(images), labels, self.inputs_of)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        return self.inputs_of(images)

    def penultimate(self, images: np.ndarray) -> torch.Tensor:
        """What its last linear layer separates (for the projector), pooled to at most
        PROJECTOR_GRID x PROJECTOR_GRID, on the CPU, a batch at a time."""
        network = self.scorer.cpu()  # scoring may have moved it to an accelerator

        def pooled(batch: np.ndarray) -> torch.Tensor:
            layer = network.block_2(network.block_1(self.inputs_of(batch)))
            if layer.shape[-1] > PROJECTOR_GRID:
                layer = F.adaptive_avg_pool2d(layer, PROJECTOR_GRID)
            return layer.flatten(1)

        with torch.no_grad():
            return engine.in_batches(pooled, images, engine.SCORING_BATCH)
