"""A backbone's input preprocessing: N x 3 x H x W uint8 images -> the normalised crop it expects.

`Preprocess` computes what torchvision's `ImageClassification` preset computes on uint8 images
(resize the shorter side, clamp to the pixel range, centre crop, normalise), in floating point
throughout. The preset also rounds the resized image back to 8 bits; no other runtime reproduces
that rounding bit for bit (ONNX Runtime's resize rounds some pixels the other way, which moves
pooled features by up to 1e-3), so one definition that never rounds serves every runtime.
Written without data-dependent checks, it exports to ONNX with the backbone (`runtimes`).
"""

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF


class Preprocess(nn.Module):
    """uint8 images -> float input: /255, resize, clamp to [0, 1], centre crop, (x - mean) / std."""

    def __init__(
        self,
        crop_size: int,
        resize_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        interpolation: InterpolationMode,
    ):
        super().__init__()
        # Lists, as torchvision's presets keep them, so readers use one spelling for both.
        self.crop_size, self.resize_size = [crop_size], [resize_size]
        self.mean, self.std, self.interpolation = tuple(mean), tuple(std), interpolation
        # Buffers, so that `.to(device)` moves them; not persistent: they are not weights.
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def like(cls, preset: nn.Module, crop_size: int | None = None) -> "Preprocess":
        """The preprocessing of `preset` (a torchvision `ImageClassification` or a `Preprocess`),
        optionally at another crop size, keeping the preset's resize/crop ratio."""
        crop, resize = preset.crop_size[0], preset.resize_size[0]
        if crop_size is not None:
            crop, resize = crop_size, round(crop_size * (resize / crop))
        return cls(crop, resize, preset.mean, preset.std, preset.interpolation)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        resized = TF.resize(images.float() / 255, self.resize_size, self.interpolation, antialias=True)
        return (TF.center_crop(resized.clamp(0, 1), self.crop_size) - self._mean) / self._std

    def extra_repr(self) -> str:
        return (
            f"crop_size={self.crop_size}, resize_size={self.resize_size}, mean={list(self.mean)}, "
            f"std={list(self.std)}, interpolation={self.interpolation}, uint8 input"
        )
