"""models: TinyVGG, the transfer head, freezing, parameter counts and checkpoints."""

import numpy as np
import pytest
import torch
from torch import nn

from transferlab import backbones, models
from transferlab.classifier import Classifier
from transferlab.outputs import load_torch, save_torch

CLASSES = ["airplane", "cat", "dog"]


@pytest.fixture(scope="module")
def lite0_32():
    """A fresh effnet_lite0 (real weights) at 32 px; tests copy what they modify."""
    return backbones.load("effnet_lite0", image_size=32)


def _uint8_images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


# --- TinyVGG --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["block_1", "block_2"])
def test_tinyvgg_blocks_are_conv_relu_conv_relu_maxpool(name):
    model = models.TinyVGG(hidden_units=7, n_classes=4, image_size=32)
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
    model = models.TinyVGG(hidden_units=5, n_classes=10, image_size=32)
    assert isinstance(model.classifier[0], nn.Flatten)
    linear = model.classifier[1]
    assert isinstance(linear, nn.Linear)
    assert (linear.in_features, linear.out_features) == (5 * 8 * 8, 10)
    assert [name for name, _ in model.named_children()] == ["block_1", "block_2", "classifier"]


def test_tinyvgg_output_shape_at_32px():
    model = models.TinyVGG(hidden_units=4, n_classes=10, image_size=32)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize("size", [8, 16, 30, 31, 64])
def test_tinyvgg_output_shape_at_other_sizes(size):
    model = models.TinyVGG(hidden_units=3, n_classes=5, image_size=size)
    assert model.classifier[1].in_features == 3 * (size // 4) ** 2
    assert model(torch.rand(2, 3, size, size)).shape == (2, 5)


def test_tinyvgg_rejects_images_of_another_size():
    model = models.TinyVGG(hidden_units=3, n_classes=5, image_size=32)
    with pytest.raises(RuntimeError):
        model(torch.rand(1, 3, 16, 16))


def test_uint8_to_float_is_nchw_in_unit_range():
    images = _uint8_images(2, 4)
    images[0, 0, 0] = (0, 128, 255)
    out = models.uint8_to_float(images)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    assert torch.equal(out, torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255)


# --- head, freeze, count --------------------------------------------------------------------------


@pytest.mark.parametrize("in_features,n_classes,dropout", [(1280, 10, 0.2), (1408, 3, 0.3)])
def test_make_head_is_dropout_then_linear(in_features, n_classes, dropout):
    head = models.make_head(in_features, n_classes, dropout)
    assert [type(m) for m in head] == [nn.Dropout, nn.Linear]
    assert head[0].p == dropout
    assert (head[1].in_features, head[1].out_features) == (in_features, n_classes)
    assert head(torch.rand(4, in_features)).shape == (4, n_classes)


def test_freeze_makes_every_parameter_non_trainable_and_keeps_values():
    model = models.TinyVGG(hidden_units=3, n_classes=2, image_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(p.requires_grad for p in model.parameters())
    models.freeze(model.block_1)
    assert not any(p.requires_grad for p in model.block_1.parameters())
    assert all(p.requires_grad for p in model.block_2.parameters())
    models.freeze(model)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_count_parameters():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))  # 15 + 8 parameters
    assert models.count_parameters(model) == {"trainable_params": 23, "total_params": 23}
    models.freeze(model[0])
    assert models.count_parameters(model) == {"trainable_params": 8, "total_params": 23}
    models.freeze(model)
    assert models.count_parameters(model) == {"trainable_params": 0, "total_params": 23}


def test_count_parameters_of_tinyvgg_matches_formula():
    h, n, s = 4, 10, 32
    expected = (3 * 9 * h + h) + (h * 9 * h + h) + (h * 9 * h + h) + (h * 9 * h + h) + (h * (s // 4) ** 2 * n + n)
    counts = models.count_parameters(models.TinyVGG(h, n, s))
    assert counts == {"trainable_params": expected, "total_params": expected}


def test_count_parameters_of_frozen_transfer_model(lite0_32):
    head = models.make_head(lite0_32.num_features, 3, lite0_32.info.dropout)
    features = lite0_32.features
    was = [p.requires_grad for p in features.parameters()]
    try:
        models.freeze(features)
        counts = models.count_parameters(models.TransferModel(features, head))
    finally:
        for p, flag in zip(features.parameters(), was, strict=True):
            p.requires_grad_(flag)
    backbone_params = sum(p.numel() for p in features.parameters())
    assert counts["trainable_params"] == 1280 * 3 + 3
    assert counts["total_params"] == backbone_params + 1280 * 3 + 3
    assert models.frozen_transfer_parameters("effnet_lite0", head, head) == counts


# --- checkpoints ----------------------------------------------------------------------------------


def test_tinyvgg_checkpoint_round_trips_into_classifier(tmp_path):
    torch.manual_seed(0)
    model = models.TinyVGG(hidden_units=4, n_classes=len(CLASSES), image_size=16).eval()
    path = tmp_path / "models" / "tinyvgg.pt"
    save_torch(path, models.tinyvgg_checkpoint(model, CLASSES, hidden_units=4, image_size=16))
    assert not list(path.parent.glob("*.tmp"))

    loaded = load_torch(path)  # weights_only=True
    assert loaded["kind"] == "tinyvgg"
    assert loaded["classes"] == CLASSES
    assert loaded["config"] == {"hidden_units": 4, "image_size": 16}

    torch.manual_seed(1)  # the rebuilt model starts from other random weights
    classifier = Classifier.from_file(path)
    assert classifier.kind == "tinyvgg" and classifier.classes == CLASSES
    assert classifier.data_image_size == 16
    assert classifier.backbone is None
    assert not classifier.model.training
    images = _uint8_images(5, 16)
    inputs = classifier.preprocess(images)
    assert torch.equal(inputs, models.uint8_to_float(images))
    with torch.no_grad():
        assert torch.equal(classifier.model(inputs), model(inputs))


def _transfer_model(backbone, n_classes, seed):
    torch.manual_seed(seed)
    head = models.make_head(backbone.num_features, n_classes, backbone.info.dropout)
    return models.TransferModel(backbone.features, head)


def test_frozen_transfer_checkpoint_stores_only_the_head(tmp_path, lite0_32):
    model = _transfer_model(lite0_32, len(CLASSES), seed=0)
    checkpoint = models.transfer_checkpoint(
        model.head, CLASSES, "effnet_lite0", 32, frozen=True, data_image_size=24, runtime="onnxruntime"
    )
    assert checkpoint["kind"] == "transfer"
    assert checkpoint["config"] == {
        "backbone": "effnet_lite0",
        "image_size": 32,
        "frozen": True,
        "data_image_size": 24,
        "runtime": "onnxruntime",
    }
    assert set(checkpoint["state_dict"]) == {"1.weight", "1.bias"}
    assert checkpoint["state_dict"]["1.weight"].shape == (len(CLASSES), 1280)

    path = tmp_path / "frozen.pt"
    save_torch(path, checkpoint)
    # Far smaller than the backbone's weights (about 13 MB as float32).
    assert path.stat().st_size < 100_000

    classifier = Classifier.from_file(path)
    assert classifier.data_image_size == 24
    assert not any(p.requires_grad for p in classifier.model.backbone.parameters())
    assert all(p.requires_grad for p in classifier.model.head.parameters())
    images = _uint8_images(3, 24)
    model.eval()
    with torch.no_grad():
        expected = model(lite0_32.transform(torch.as_tensor(images).permute(0, 3, 1, 2)))
        actual = classifier.model(classifier.preprocess(images))
    assert actual.shape == (3, len(CLASSES))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_frozen_classifier_builds_its_backbone_only_when_the_full_model_is_used(lite0_32):
    model = _transfer_model(lite0_32, len(CLASSES), seed=1)
    checkpoint = models.transfer_checkpoint(
        model.head, CLASSES, "effnet_lite0", 32, frozen=True, data_image_size=32, runtime="onnxruntime"
    )
    built = []

    def load_backbone(name, image_size):
        built.append((name, image_size))
        return lite0_32

    classifier = Classifier(checkpoint, load_backbone)
    features = torch.randn(4, 1280)
    with torch.no_grad():
        torch.testing.assert_close(classifier.head(features), model.eval().head(features), rtol=0, atol=0)
    assert classifier.parameter_counts() == models.count_parameters(
        models.TransferModel(_frozen_copy(lite0_32.features), model.head)
    )
    assert built == []
    assert classifier.model.backbone is lite0_32.features and built == [("effnet_lite0", 32)]


def _frozen_copy(module):
    import copy

    frozen = copy.deepcopy(module)
    models.freeze(frozen)
    return frozen


def test_finetuned_transfer_checkpoint_stores_and_restores_the_backbone(tmp_path):
    backbone = backbones.load("effnet_lite0", image_size=32)  # modified below: not the shared one
    model = _transfer_model(backbone, len(CLASSES), seed=0)
    with torch.no_grad():  # as if fine-tuned: differs from the pretrained weights Classifier loads
        model.backbone.conv_stem.weight.mul_(-1.5)
    path = tmp_path / "finetuned.pt"
    save_torch(
        path,
        models.transfer_checkpoint(
            model, CLASSES, "effnet_lite0", 32, frozen=False, data_image_size=32, runtime="torch"
        ),
    )
    checkpoint = load_torch(path)
    assert "backbone.conv_stem.weight" in checkpoint["state_dict"]
    assert "head.1.weight" in checkpoint["state_dict"]

    classifier = Classifier(checkpoint)
    assert torch.equal(classifier.model.backbone.conv_stem.weight, model.backbone.conv_stem.weight)
    assert all(p.requires_grad for p in classifier.model.parameters())
    images = _uint8_images(2, 32)
    model.eval()
    with torch.no_grad():
        expected = model(backbone.transform(torch.as_tensor(images).permute(0, 3, 1, 2)))
        actual = classifier.model(classifier.preprocess(images))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_classifier_transfer_preprocess_uses_backbone_transform(lite0_32):
    model = _transfer_model(lite0_32, 2, seed=0)
    checkpoint = models.transfer_checkpoint(
        model.head, ["a", "b"], "effnet_lite0", 32, frozen=True, data_image_size=40, runtime="onnxruntime"
    )
    classifier = Classifier(checkpoint)
    inputs = classifier.preprocess(_uint8_images(2, 40))
    assert inputs.shape == (2, 3, 32, 32)  # resized and centre-cropped to the backbone's size
    assert inputs.dtype == torch.float32
    assert inputs.min() >= -1.0 - 1e-6 and inputs.max() <= 1.0 + 1e-6  # mean = std = 0.5
