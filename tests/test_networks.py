"""networks: TinyVGG, the transfer head, freezing and parameter counts."""

import numpy as np
import pytest
import torch
from torch import nn

from transferlab import backbones, networks


@pytest.fixture(scope="module")
def lite0_32():
    """A fresh effnet_lite0 (real weights) at 32 px; tests copy what they modify."""
    return backbones.load("effnet_lite0", image_size=32)


def _uint8_images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


# --- TinyVGG --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["block_1", "block_2"])
def test_tinyvgg_blocks_are_conv_relu_conv_relu_maxpool(name):
    model = networks.TinyVGG(hidden_units=7, n_classes=4, image_size=32)
    block = getattr(model, name)
    in_channels = 3 if name == "block_1" else 7
    assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    for conv, expected_in in ((block[0], in_channels), (block[2], 7)):
        assert conv.in_channels == expected_in
        assert conv.out_channels == 7
        assert conv.kernel_size == (3, 3)
        assert conv.padding == (1, 1)
        assert conv.stride == (1, 1)
    assert block[4].kernel_size == 2


def test_tinyvgg_classifier_maps_flattened_features_to_classes():
    model = networks.TinyVGG(hidden_units=5, n_classes=10, image_size=32)
    assert isinstance(model.classifier[0], nn.Flatten)
    linear = model.classifier[1]
    assert isinstance(linear, nn.Linear)
    assert (linear.in_features, linear.out_features) == (5 * 8 * 8, 10)
    assert [name for name, _ in model.named_children()] == ["block_1", "block_2", "classifier"]


def test_tinyvgg_output_shape_at_32px():
    model = networks.TinyVGG(hidden_units=4, n_classes=10, image_size=32)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize("size", [8, 16, 30, 31, 64])
def test_tinyvgg_output_shape_at_other_sizes(size):
    model = networks.TinyVGG(hidden_units=3, n_classes=5, image_size=size)
    assert model.classifier[1].in_features == 3 * (size // 4) ** 2
    assert model(torch.rand(2, 3, size, size)).shape == (2, 5)


def test_tinyvgg_rejects_images_of_another_size():
    model = networks.TinyVGG(hidden_units=3, n_classes=5, image_size=32)
    with pytest.raises(RuntimeError):
        model(torch.rand(1, 3, 16, 16))


def test_uint8_to_float_is_nchw_in_unit_range():
    images = _uint8_images(2, 4)
    images[0, 0, 0] = (0, 128, 255)
    out = networks.uint8_to_float(images)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    assert torch.equal(out, torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255)


# --- head, freeze, count --------------------------------------------------------------------------


@pytest.mark.parametrize("in_features,n_classes,dropout", [(1280, 10, 0.2), (1408, 3, 0.3)])
def test_make_head_is_dropout_then_linear(in_features, n_classes, dropout):
    head = networks.make_head(in_features, n_classes, dropout)
    assert [type(m) for m in head] == [nn.Dropout, nn.Linear]
    assert head[0].p == dropout
    assert (head[1].in_features, head[1].out_features) == (in_features, n_classes)
    assert head(torch.rand(4, in_features)).shape == (4, n_classes)


def test_freeze_makes_every_parameter_non_trainable_and_keeps_values():
    model = networks.TinyVGG(hidden_units=3, n_classes=2, image_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(p.requires_grad for p in model.parameters())
    networks.freeze(model.block_1)
    assert not any(p.requires_grad for p in model.block_1.parameters())
    assert all(p.requires_grad for p in model.block_2.parameters())
    networks.freeze(model)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_count_parameters():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))  # 15 + 8 parameters
    assert networks.count_parameters(model) == {"trainable_params": 23, "total_params": 23}
    networks.freeze(model[0])
    assert networks.count_parameters(model) == {"trainable_params": 8, "total_params": 23}
    networks.freeze(model)
    assert networks.count_parameters(model) == {"trainable_params": 0, "total_params": 23}


def test_count_parameters_of_tinyvgg_matches_formula():
    h, n, s = 4, 10, 32
    expected = (3 * 9 * h + h) + (h * 9 * h + h) + (h * 9 * h + h) + (h * 9 * h + h) + (h * (s // 4) ** 2 * n + n)
    counts = networks.count_parameters(networks.TinyVGG(h, n, s))
    assert counts == {"trainable_params": expected, "total_params": expected}


def test_count_parameters_of_frozen_transfer_model(lite0_32):
    head = networks.make_head(lite0_32.num_features, 3, lite0_32.info.dropout)
    features = lite0_32.features
    was = [p.requires_grad for p in features.parameters()]
    try:
        networks.freeze(features)
        counts = networks.count_parameters(networks.TransferModel(features, head))
    finally:
        for p, flag in zip(features.parameters(), was, strict=True):
            p.requires_grad_(flag)
    backbone_params = sum(p.numel() for p in features.parameters())
    assert counts["trainable_params"] == 1280 * 3 + 3
    assert counts["total_params"] == backbone_params + 1280 * 3 + 3
    assert networks.frozen_transfer_parameters("effnet_lite0", head, head) == counts
