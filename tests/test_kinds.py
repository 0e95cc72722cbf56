"""Model kinds: which kind params ask for, what each kind's model file holds, and how each is
rebuilt from it (for evaluate, select_best and predict)."""

import numpy as np
import pytest
import torch

from transferlab import backbones, model_files, networks
from transferlab.errors import UserError
from transferlab.kinds import TinyVGGModel
from transferlab.torchfiles import load_torch, save_torch
from transferlab.transfer_kinds import FineTuned, FrozenHead, LastStages, kind_of

CLASSES = ["airplane", "cat", "dog"]


@pytest.fixture(scope="module")
def lite0_32():
    """A fresh effnet_lite0 (real weights) at 32 px; models copy what they train."""
    return backbones.load("effnet_lite0", image_size=32)


def _uint8_images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _transfer_model(kind, backbone, seed=0, trainable_stages=0, data_image_size=32, runtime="onnxruntime"):
    config = kind.make_config("effnet_lite0", 32, data_image_size, runtime, trainable_stages)
    torch.manual_seed(seed)
    return kind(CLASSES, config, load_backbone=lambda *_: backbone)


@pytest.mark.parametrize(
    ("frozen", "stages", "kind"),
    [(True, 0, FrozenHead), (True, 1, LastStages), (True, 7, LastStages), (False, 0, FineTuned)],
)
def test_params_decode_to_one_kind(frozen, stages, kind):
    assert kind_of(frozen, stages) is kind


def test_tinyvgg_model_file_round_trips(tmp_path):
    torch.manual_seed(0)
    model = TinyVGGModel.new(CLASSES, hidden_units=4, image_size=16)
    path = tmp_path / "models" / "tinyvgg.pt"
    save_torch(path, model.model_file(hparams={"epochs": 3}))
    loaded = load_torch(path)  # weights_only=True
    assert loaded["kind"] == "tinyvgg" and loaded["classes"] == CLASSES
    assert loaded["config"] == {"hidden_units": 4, "image_size": 16}
    assert loaded["hparams"] == {"epochs": 3}

    torch.manual_seed(1)  # the rebuilt model starts from other random weights
    rebuilt = model_files.load(path)
    assert isinstance(rebuilt, TinyVGGModel) and rebuilt.classes == CLASSES
    assert rebuilt.data_image_size == 16 and rebuilt.backbone is None
    assert not rebuilt.network.training
    images = _uint8_images(5, 16)
    inputs = rebuilt.preprocess(images)
    assert torch.equal(inputs, networks.uint8_to_float(images))
    with torch.no_grad():
        assert torch.equal(rebuilt.network(inputs), model.scorer.eval()(inputs))


def test_frozen_head_model_file_holds_only_the_head(tmp_path, lite0_32):
    model = _transfer_model(FrozenHead, lite0_32, data_image_size=24)
    model_file = model.model_file(hparams={})
    assert model_file["kind"] == "transfer"
    assert model_file["config"] == {
        "backbone": "effnet_lite0",
        "image_size": 32,
        "frozen": True,
        "data_image_size": 24,
        "runtime": "onnxruntime",
    }
    assert set(model_file["state_dict"]) == {"1.weight", "1.bias"}
    path = tmp_path / "frozen.pt"
    save_torch(path, model_file)
    assert path.stat().st_size < 100_000  # far smaller than the backbone's weights (about 13 MB)

    rebuilt = model_files.load(path, lambda *_: lite0_32)
    assert type(rebuilt) is FrozenHead and rebuilt.data_image_size == 24
    assert not any(p.requires_grad for p in rebuilt.network.backbone.parameters())
    images = _uint8_images(3, 24)
    with torch.no_grad():
        expected = networks.TransferModel(lite0_32.features, model.head.eval())(rebuilt.preprocess(images))
        actual = rebuilt.network(rebuilt.preprocess(images))
    assert actual.shape == (3, len(CLASSES))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_frozen_head_builds_its_backbone_only_when_the_full_network_is_used(lite0_32):
    model_file = _transfer_model(FrozenHead, lite0_32, seed=1).model_file(hparams={})
    built = []

    def load_backbone(name, image_size):
        built.append((name, image_size))
        return lite0_32

    rebuilt = model_files.from_model_file(model_file, load_backbone)
    with torch.no_grad():
        assert rebuilt.scorer(torch.randn(4, 1280)).shape == (4, len(CLASSES))
    assert rebuilt.parameter_counts()["trainable_params"] == 1280 * 3 + 3
    assert built == []
    assert rebuilt.network.backbone is lite0_32.features and built == [("effnet_lite0", 32)]


def test_last_stages_model_file_holds_the_tail_and_head(lite0_32):
    model = _transfer_model(LastStages, lite0_32, trainable_stages=2)
    with torch.no_grad():  # as if trained: differs from the pretrained weights
        model.scorer.tail[0][0].conv_pw.weight.mul_(-1.5)
    model_file = model.model_file(hparams={})
    assert model_file["config"]["trainable_stages"] == 2
    assert all(key.startswith(("tail.", "head.")) for key in model_file["state_dict"])
    rebuilt = model_files.from_model_file(model_file, lambda *_: lite0_32)
    assert type(rebuilt) is LastStages and rebuilt.trainable_stages == 2
    tail_weight = rebuilt.scorer.tail[0][0].conv_pw.weight
    assert torch.equal(tail_weight, model.scorer.tail[0][0].conv_pw.weight)
    assert not torch.equal(tail_weight, lite0_32.features.blocks[5][0].conv_pw.weight)  # the shared one is untouched
    assert rebuilt.network.backbone.blocks[5][0].conv_pw.weight is tail_weight  # predict runs the trained tail


def test_fine_tuned_model_file_stores_and_restores_the_backbone(tmp_path):
    backbone = backbones.load("effnet_lite0", image_size=32)
    model = _transfer_model(FineTuned, backbone, runtime="torch")
    with torch.no_grad():  # as if fine-tuned: differs from the pretrained weights
        model.network.backbone.conv_stem.weight.mul_(-1.5)
    assert not torch.equal(model.network.backbone.conv_stem.weight, backbone.features.conv_stem.weight)
    path = tmp_path / "finetuned.pt"
    save_torch(path, model.model_file(hparams={}))
    model_file = load_torch(path)
    assert {"backbone.conv_stem.weight", "head.1.weight"} <= set(model_file["state_dict"])

    rebuilt = model_files.load(path)
    assert torch.equal(rebuilt.network.backbone.conv_stem.weight, model.network.backbone.conv_stem.weight)
    assert rebuilt.parameter_counts()["trainable_params"] == rebuilt.parameter_counts()["total_params"]
    images = _uint8_images(2, 32)
    with torch.no_grad():
        expected = model.network.eval()(backbone.transform(torch.as_tensor(images).permute(0, 3, 1, 2)))
        actual = rebuilt.network(rebuilt.preprocess(images))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_transfer_preprocess_uses_the_backbone_transform(lite0_32):
    model_file = _transfer_model(FrozenHead, lite0_32, data_image_size=40).model_file(hparams={})
    inputs = model_files.from_model_file(model_file, lambda *_: lite0_32).preprocess(_uint8_images(2, 40))
    assert inputs.shape == (2, 3, 32, 32)  # resized and centre-cropped to the backbone's size
    assert inputs.dtype == torch.float32
    assert inputs.min() >= -1.0 - 1e-6 and inputs.max() <= 1.0 + 1e-6  # mean = std = 0.5


def test_a_file_that_is_no_model_file_is_one_line(tmp_path):
    path = tmp_path / "weights.pt"
    save_torch(path, {"kind": "transfer", "classes": CLASSES})
    with pytest.raises(UserError, match="not a model file this pipeline wrote"):
        model_files.load(path)


def test_tinyvgg_scores_uint8_images_as_floats_a_batch_at_a_time():
    """Its scoring set holds the uint8 images; every batch is what converting them all gives."""
    from transferlab import engine
    from transferlab.evaluation import logits_on

    torch.manual_seed(0)
    model = TinyVGGModel.new(["a", "b"], hidden_units=2, image_size=8)
    images = np.random.default_rng(0).integers(0, 256, (70, 8, 8, 3), dtype=np.uint8)  # two batches
    assert model.scoring_set(images, None, torch.device("cpu")).tensors[0].dtype == torch.uint8
    with torch.no_grad():
        expected = model.scorer.eval()(networks.uint8_to_float(images))
    assert torch.equal(logits_on(model, images, None, torch.device("cpu")), expected)
    assert engine.SCORING_BATCH < len(images)


@pytest.mark.parametrize("image_size, grid", [(32, 8), (64, 8)])
def test_tinyvgg_penultimate_is_its_layer_pooled_to_at_most_8_x_8(image_size, grid):
    torch.manual_seed(0)
    model = TinyVGGModel.new(["a", "b"], hidden_units=3, image_size=image_size)
    images = np.random.default_rng(0).integers(0, 256, (70, image_size, image_size, 3), dtype=np.uint8)
    features = model.penultimate(images)
    assert features.shape == (70, 3 * grid * grid)
    with torch.no_grad():
        layer = model.scorer.block_2(model.scorer.block_1(networks.uint8_to_float(images)))
    if image_size == 32:  # CIFAR-10's size: the layer itself, what the projector always showed
        torch.testing.assert_close(features, layer.flatten(1), rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(features, torch.nn.functional.adaptive_avg_pool2d(layer, grid).flatten(1))


def test_projector_thumbnails_are_at_most_64_px():
    from transferlab.evaluation import thumbnails

    small = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert torch.equal(thumbnails(small), networks.uint8_to_float(small))
    large = np.full((70, 224, 224, 3), 200, dtype=np.uint8)
    shrunk = thumbnails(large)
    assert shrunk.shape == (70, 3, 64, 64) and torch.allclose(shrunk, torch.full_like(shrunk, 200 / 255))
