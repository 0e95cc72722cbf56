"""backbones: the registry, offline ImageNet weights, heads, transforms and the download error."""

import socket
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.transforms import InterpolationMode

from transferlab import backbones, registry
from transferlab.errors import UserError

TV_WEIGHTS = {
    "effnet_b0": tv_models.EfficientNet_B0_Weights.IMAGENET1K_V1,
    "effnet_b2": tv_models.EfficientNet_B2_Weights.IMAGENET1K_V1,
}


@pytest.fixture(scope="module")
def lite():
    """Pretrained lite backbones at 32 px, loaded once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = backbones.load(name, image_size=32)
        return cache[name]

    return get


def test_registry_names():
    assert registry.BACKBONE_NAMES == ("effnet_b0", "effnet_b2", "effnet_lite0", "effnet_lite2")
    assert set(registry.BACKBONES) == set(registry.BACKBONE_NAMES)
    assert registry.OFFLINE_BACKBONES == ("effnet_lite0", "effnet_lite2")
    for name, info in registry.BACKBONES.items():
        assert info.name == name


def test_unknown_backbone_is_a_user_error_listing_the_choices():
    with pytest.raises(UserError) as err:
        backbones.load("effnet_b7")
    message = str(err.value)
    assert "'effnet_b7'" in message
    for name in registry.BACKBONE_NAMES:
        assert name in message


@pytest.mark.parametrize(
    "name,dropout", [("effnet_b0", 0.2), ("effnet_b2", 0.3), ("effnet_lite0", 0.2), ("effnet_lite2", 0.3)]
)
def test_head_dropout_of_each_recipe(name, dropout):
    assert registry.BACKBONES[name].dropout == dropout


# --- lite backbones: real weights, offline --------------------------------------------------------


@pytest.mark.parametrize("name", ["effnet_lite0", "effnet_lite2"])
def test_lite_weights_are_really_loaded_from_the_package(name, lite):
    backbone = lite(name)
    source = torch.load(backbones._lite_weights_file(name), map_location="cpu", weights_only=True)
    source_tensors = list(source.values())
    features = backbone.features.state_dict()
    # First tensor (stem conv), a middle one and the last feature tensor, in the model's order.
    assert torch.equal(features["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(features["bn1.running_var"], source["_bn0.running_var"])
    assert torch.equal(features["conv_head.weight"], source["_conv_head.weight"])
    # The ImageNet classifier keeps the file's last two tensors.
    assert torch.equal(backbone.imagenet_head.weight, source_tensors[-2])
    assert torch.equal(backbone.imagenet_head.bias, source_tensors[-1])
    # Every feature tensor comes from the file, in order.
    for (key, tensor), expected in zip(features.items(), source_tensors[: len(features)], strict=True):
        assert torch.equal(tensor, expected), key

    random = backbones.load(name, image_size=32, pretrained=False)
    assert not torch.equal(random.features.conv_stem.weight, backbone.features.conv_stem.weight)
    assert not torch.equal(random.features.conv_head.weight, backbone.features.conv_head.weight)


@pytest.mark.parametrize("name", ["effnet_lite0", "effnet_lite2"])
def test_lite_features_are_pooled_vectors_of_num_features(name, lite):
    backbone = lite(name)
    assert backbone.num_features == 1280
    assert isinstance(backbone.imagenet_head, nn.Linear)
    assert (backbone.imagenet_head.in_features, backbone.imagenet_head.out_features) == (1280, 1000)
    assert not backbone.features.training  # returned in eval mode
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    with torch.no_grad():
        out = backbone.features(backbone.transform(images))
    assert out.shape == (2, 1280)
    # The classifier is removed: applying the kept ImageNet head gives 1000 logits.
    assert backbone.imagenet_head(out).shape == (2, 1000)


@pytest.mark.parametrize("name", ["effnet_lite0", "effnet_b0"])
def test_features_run_channels_last_with_the_same_result(name):
    backbone = backbones.load(name, image_size=32, pretrained=False)
    convolutions = [m.weight for m in backbone.features.modules() if isinstance(m, nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    images = backbone.transform(torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8))
    with torch.no_grad():
        channels_last = backbone.features(images)
        contiguous = backbone.features.to(memory_format=torch.contiguous_format)(images)
    assert torch.allclose(channels_last, contiguous, atol=1e-4)


@pytest.mark.parametrize("name", ["effnet_b0", "effnet_b2"])
def test_torchvision_backbones_without_weights_have_their_classifier_removed(name):
    backbone = backbones.load(name, image_size=32, pretrained=False)
    expected = {"effnet_b0": 1280, "effnet_b2": 1408}[name]
    assert backbone.num_features == expected
    assert isinstance(backbone.imagenet_head[0], nn.Dropout)
    assert backbone.imagenet_head[-1].out_features == 1000
    with torch.no_grad():
        out = backbone.features(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, expected)


@pytest.mark.parametrize("name", registry.BACKBONE_NAMES)
def test_registry_facts_match_the_built_backbone(name):
    """Stages rely on these without building the backbone (feature width, input size, parameters)."""
    info = registry.info(name)
    backbone = backbones.load(name, pretrained=False)
    assert backbone.info == info
    assert backbone.num_features == info.num_features
    assert backbone.transform.crop_size == [info.image_size] == [registry.input_size(name)]
    assert sum(p.numel() for p in backbone.features.parameters()) == info.params
    assert registry.input_size(name, 48) == 48


@pytest.mark.parametrize("name", registry.BACKBONE_NAMES)
def test_every_backbone_splits_before_any_of_its_stages_into_a_frozen_part_and_a_tail(name):
    backbone = backbones.load(name, image_size=32, pretrained=False)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = backbone.features(x)
        widths = []
        for stages in range(1, registry.BLOCK_STAGES + 1):
            frozen, tail = backbones.split(backbone.features, stages)
            activations = frozen(x)
            assert torch.equal(tail(activations), expected), stages
            widths.append(activations.shape[1])
            shared = {id(p) for p in backbone.features.parameters()}
            assert {id(p) for p in (*frozen.parameters(), *tail.parameters())} == shared  # all of it, nothing copied
    assert len(widths) == registry.BLOCK_STAGES
    assert widths[-1] == 32 and widths[0] > widths[1] > widths[2]  # the last stage's input first, the stem's last


def test_unknown_backbone_is_one_clear_line():
    with pytest.raises(UserError, match="unknown backbone 'effnet_b9'; choose one of: effnet_b0, effnet_b2"):
        registry.info("effnet_b9")


# --- transforms -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,crop,resize", [("effnet_lite0", 224, 256), ("effnet_lite2", 260, 292)])
def test_lite_transforms_at_their_own_size(name, crop, resize):
    transform = backbones.load(name, pretrained=False).transform
    assert transform.crop_size == [crop]
    assert transform.resize_size == [resize]
    assert list(transform.mean) == [0.5, 0.5, 0.5]
    assert list(transform.std) == [0.5, 0.5, 0.5]
    assert transform.interpolation == InterpolationMode.BICUBIC


@pytest.mark.parametrize("name,crop,resize", [("effnet_b0", 224, 256), ("effnet_b2", 288, 288)])
def test_torchvision_transforms_at_their_own_size(name, crop, resize):
    transform = backbones.load(name, pretrained=False).transform
    assert transform.crop_size == [crop]
    assert transform.resize_size == [resize]
    assert transform.interpolation == InterpolationMode.BICUBIC


@pytest.mark.parametrize(
    "name,image_size,resize",
    [
        ("effnet_lite0", 32, 37),  # 256 / 224 * 32 = 36.6
        ("effnet_lite0", 112, 128),
        ("effnet_lite2", 32, 36),  # 292 / 260 * 32 = 35.9
        ("effnet_lite2", 130, 146),
        ("effnet_b2", 64, 64),  # B2 resizes to its crop size
    ],
)
def test_image_size_override_keeps_the_resize_crop_ratio(name, image_size, resize):
    default = backbones.load(name, pretrained=False).transform
    transform = backbones.load(name, image_size=image_size, pretrained=False).transform
    assert transform.crop_size == [image_size]
    assert transform.resize_size == [resize]
    assert list(transform.mean) == list(default.mean)
    assert list(transform.std) == list(default.std)
    assert transform.interpolation == default.interpolation == InterpolationMode.BICUBIC


def test_transform_maps_uint8_batches_to_normalised_crops(lite):
    transform = lite("effnet_lite0").transform
    images = torch.zeros(2, 3, 50, 60, dtype=torch.uint8)
    images[1] = 255
    out = transform(images)
    assert out.shape == (2, 3, 32, 32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.full((3, 32, 32), -1.0))  # (0 - 0.5) / 0.5
    torch.testing.assert_close(out[1], torch.full((3, 32, 32), 1.0))  # (1 - 0.5) / 0.5


# --- effnet_b0 / effnet_b2 without network --------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub dir and no name resolution: downloads fail at once, no real network."""
    hub_dir = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    return hub_dir


@pytest.mark.parametrize("name", ["effnet_b0", "effnet_b2"])
def test_torchvision_weights_offline_is_a_user_error(name, offline):
    previous_timeout = socket.getdefaulttimeout()
    with pytest.raises(UserError) as err:
        backbones.load(name, image_size=32)
    message = str(err.value)
    filename = Path(TV_WEIGHTS[name].url).name
    assert name in message
    assert filename in message
    assert TV_WEIGHTS[name].url in message
    assert str(offline / "checkpoints") in message
    assert "effnet_lite0" in message and "effnet_lite2" in message
    assert "Name or service not known" in message  # the reason
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert socket.getdefaulttimeout() == previous_timeout  # the download timeout is undone
    assert not (offline / "checkpoints" / filename).exists()


def test_download_timeout_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def timeout(*args, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(torch.hub, "download_url_to_file", timeout)
    with pytest.raises(UserError, match="effnet_b0.*timed out.*efficientnet_b0_rwightman"):
        backbones._download_state_dict("effnet_b0", TV_WEIGHTS["effnet_b0"])


def test_cached_weights_file_is_not_downloaded_again(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    calls = []

    def download(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    weights = TV_WEIGHTS["effnet_b2"]
    with pytest.raises(UserError):
        backbones._download_state_dict("effnet_b2", weights)
    assert len(calls) == 1  # without the file, a download is attempted

    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    cached = tmp_path / "checkpoints" / Path(weights.url).name
    torch.save({"w": torch.arange(3.0)}, cached)
    state = backbones._download_state_dict("effnet_b2", weights)
    assert torch.equal(state["w"], torch.arange(3.0))
    assert len(calls) == 1


def test_weights_in_the_hub_cache_are_used_without_network(offline):
    """With the file in <hub>/checkpoints (what the offline message asks for), B0 loads from it."""
    reference = tv_models.efficientnet_b0(weights=None)
    cached = offline / "checkpoints" / Path(TV_WEIGHTS["effnet_b0"].url).name
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    backbone = backbones.load("effnet_b0", image_size=32)
    first_conv = backbone.features.features[0][0].weight
    assert torch.equal(first_conv, reference.features[0][0].weight)
    assert backbone.num_features == 1280 and backbone.imagenet_head[-1].out_features == 1000
