"""The networks: TinyVGG from scratch, the transfer head, a backbone with a new head, a backbone's
tail with a new head; and their parameter counts. (`kinds` says which network each kind of model
trains, saves and rebuilds.)"""

import numpy as np
import torch
from torch import nn

from transferlab import registry


class TinyVGG(nn.Module):
    """Two [conv3x3 -> ReLU -> conv3x3 -> ReLU -> maxpool2] blocks, then a linear classifier."""

    def __init__(self, hidden_units: int, n_classes: int, image_size: int, in_channels: int = 3):
        super().__init__()
        self.block_1 = self._block(in_channels, hidden_units)
        self.block_2 = self._block(hidden_units, hidden_units)
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * side * side, n_classes))

    @staticmethod
    def _block(in_channels: int, out_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block_2(self.block_1(x)))


def make_head(in_features: int, n_classes: int, dropout: float) -> nn.Sequential:
    """The transfer recipe's new classifier: Dropout + Linear."""
    return nn.Sequential(nn.Dropout(p=dropout), nn.Linear(in_features, n_classes))


def transfer_head(backbone: str, n_classes: int) -> nn.Sequential:
    """The new head for a backbone of the registry (its feature width and recipe dropout)."""
    info = registry.info(backbone)
    return make_head(info.num_features, n_classes, info.dropout)


class TransferModel(nn.Module):
    """A pretrained backbone (pooled features) followed by a new head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class TailModel(nn.Module):
    """A backbone's trainable tail (`backbones.split`) followed by a new head: what trains on the
    cached activations of its frozen part."""

    def __init__(self, tail: nn.Module, head: nn.Module):
        super().__init__()
        self.tail = tail
        self.head = head

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(activations))


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def freeze(module: nn.Module) -> None:
    set_trainable(module, False)


def count_parameters(model: nn.Module) -> dict[str, int]:
    return {
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
    }


def frozen_transfer_parameters(backbone: str, trained: nn.Module, head: nn.Module) -> dict[str, int]:
    """count_parameters of a backbone + `head` whose `trained` part (the head, or a `TailModel`)
    alone trains, without building the backbone."""
    head_params = sum(p.numel() for p in head.parameters())
    return {
        "trainable_params": sum(p.numel() for p in trained.parameters()),
        "total_params": registry.info(backbone).params + head_params,
    }


def uint8_to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in [0, 1] (TinyVGG's input)."""
    return torch.as_tensor(images).permute(0, 3, 1, 2).float().div(255)
