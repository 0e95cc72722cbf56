"""runtimes: ONNX Runtime computes the same frozen features as PyTorch, from a cached export; the
preprocessing both share; the switch, the cache's per-runtime keys and the one-line failures."""

import dataclasses
import importlib.metadata

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from transferlab import backbones, registry, runtimes
from transferlab.errors import UserError
from transferlab.features import FeatureCache
from transferlab.preprocess import Preprocess

CPU = torch.device("cpu")


def _images(n, seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def lite0():
    return backbones.load("effnet_lite0", image_size=32)


def _unbuildable(name, image_size):
    raise AssertionError(f"built {name} at {image_size}: its export should have been cached")


# --- the preprocessing both runtimes run ----------------------------------------------------------


@pytest.mark.parametrize("size", [20, 32, 300])
def test_preprocess_is_torchvisions_preset_without_its_rounding_to_8_bits(size):
    """The preset resizes uint8 images in float, clamps, rounds back to uint8; Preprocess does not
    round, so it differs by at most half a pixel level, and only through that rounding."""
    preset = ImageClassification(crop_size=224, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    preprocess = Preprocess.like(preset)
    images = torch.as_tensor(_images(4, size=size)).permute(0, 3, 1, 2)
    ours, theirs = preprocess(images), preset(images)
    assert ours.shape == theirs.shape == (4, 3, 224, 224)
    half_level = 0.5 / 255 / min(preset.std)
    assert (ours - theirs).abs().max() <= half_level + 1e-6
    assert (ours - theirs).abs().max() > 0  # it really does not round


def test_preprocess_of_float_images_rounds_nothing_away(lite0):
    """Between images whose resize lands on whole pixel levels the two agree exactly: a constant
    image resizes to itself."""
    constant = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    expected = (77 / 255 - 0.5) / 0.5
    torch.testing.assert_close(lite0.transform(constant), torch.full((2, 3, 32, 32), expected), rtol=0, atol=1e-6)


def test_preprocess_moves_with_the_network_and_keeps_no_state(lite0):
    assert lite0.transform.state_dict() == {}
    assert "BICUBIC" in repr(lite0.transform) and "crop_size=[32]" in repr(lite0.transform)
    assert lite0.transform.interpolation == InterpolationMode.BICUBIC


# --- the switch -----------------------------------------------------------------------------------


def test_auto_is_onnx_runtime_on_the_cpu_and_pytorch_on_cuda():
    assert runtimes.resolve("auto", CPU) == "onnxruntime"
    assert runtimes.resolve("auto", torch.device("cuda")) == "torch"
    assert runtimes.resolve("torch", CPU) == "torch"
    assert runtimes.resolve("onnxruntime", torch.device("cuda")) == "onnxruntime"


def test_features_are_cached_per_runtime_and_version(tmp_path):
    ort = FeatureCache("effnet_lite0", 32, tmp_path, runtime="onnxruntime")
    eager = FeatureCache("effnet_lite0", 32, tmp_path, runtime="torch")
    assert ort.directory == eager.directory  # derived artefacts (graph, summary, export) are shared
    assert ort.shards_dir == ort.directory / f"onnxruntime-{importlib.metadata.version('onnxruntime')}"
    assert eager.shards_dir == eager.directory / f"torch-{importlib.metadata.version('torch')}"


# --- same features, export once -------------------------------------------------------------------


def _calibrated(backbone: backbones.Backbone) -> backbones.Backbone:
    """Random weights give features of about 1e-13 in eval mode, too small for an absolute
    tolerance to mean anything: set BatchNorm's statistics from a few random batches first."""
    for module in backbone.features.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the batches
    with torch.no_grad():
        backbone.features.train()
        for seed in (10, 11):
            backbone.features(backbone.transform(torch.as_tensor(_images(8, seed)).permute(0, 3, 1, 2)))
    backbone.features.eval()
    return backbone


def _at_its_own_size(name: str) -> backbones.Backbone:
    """The backbone at its own input size: the lite ones with their weights, torchvision's with
    calibrated random weights (no network here)."""
    if name in registry.OFFLINE_BACKBONES:
        return backbones.load(name)
    return _calibrated(backbones.load(name, pretrained=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.BACKBONE_NAMES)
def test_onnx_runtime_features_match_pytorch_for_every_backbone(tmp_path, name):
    """At the backbone's own input size, from the project's 32 px images (torchvision's backbones
    with random weights: no network here)."""
    backbone = _at_its_own_size(name)
    images = _images(5, seed=1)
    computed = {
        runtime: FeatureCache(name, None, tmp_path, load=lambda *_: backbone, runtime=runtime).get(images, 2, CPU)
        for runtime in ("torch", "onnxruntime")
    }
    assert computed["onnxruntime"].shape == (5, backbone.num_features)
    assert computed["onnxruntime"].dtype == torch.float32
    torch.testing.assert_close(computed["onnxruntime"], computed["torch"], rtol=0, atol=1e-4)
    assert computed["torch"].abs().max() > 0.1  # features, not zeros


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.BACKBONE_NAMES)
def test_onnx_runtime_activations_of_the_frozen_part_match_pytorch_for_every_backbone(tmp_path, name):
    """What enters the last stage, at the backbone's own input size, cached under its own key
    (torchvision's backbones with random weights, as above)."""
    backbone = _at_its_own_size(name)
    images = _images(3, seed=1)
    caches = {
        runtime: FeatureCache(name, None, tmp_path, load=lambda *_: backbone, runtime=runtime, trainable_stages=1)
        for runtime in ("torch", "onnxruntime")
    }
    computed = {runtime: cache.get(images, 2, CPU) for runtime, cache in caches.items()}
    frozen = backbones.split(backbone.features, 1)[0]
    assert computed["onnxruntime"].shape == (3, *frozen(torch.zeros(1, 3, *backbone.transform.crop_size * 2)).shape[1:])
    # Unpooled, so float32's differences are not averaged away: within 1e-4 of their largest value
    # (measured: effnet_b2 2.4e-4 of 6.3, effnet_b0 4.4e-5 of 6.9)
    scale = computed["torch"].abs().max()
    torch.testing.assert_close(computed["onnxruntime"], computed["torch"], rtol=0, atol=1e-4 * scale.item())
    assert scale > 0.1
    assert caches["onnxruntime"].shards_dir.parent.name == "before_last_1_stages"
    (export,) = (caches["onnxruntime"].directory / "derived").glob("onnx_*.pt")  # not the pooled features'
    assert export.stem.endswith("_before_last_1_stages")


def test_onnx_runtime_matches_pytorch_and_a_later_run_never_exports_again(tmp_path, lite0):
    first, later = _images(3, seed=2), _images(4, seed=3)
    ort = FeatureCache("effnet_lite0", 32, tmp_path, load=lambda *_: lite0, runtime="onnxruntime").get(first, 2, CPU)
    eager = FeatureCache("effnet_lite0", 32, tmp_path, load=lambda *_: lite0, runtime="torch").get(first, 2, CPU)
    torch.testing.assert_close(ort, eager, rtol=0, atol=1e-4)
    assert not torch.equal(ort, eager)  # two runtimes' features, each under its own key

    exported = list((tmp_path / "features/effnet_lite0_32px/derived").glob("onnx_32x32_*.pt"))
    assert len(exported) == 1
    again = FeatureCache("effnet_lite0", 32, tmp_path, load=_unbuildable, runtime="onnxruntime")
    torch.testing.assert_close(again.get(later, 2, CPU), runtimes.torch_features(lite0, CPU)(later), rtol=0, atol=1e-4)
    assert again.stats() == {"images": 7, "entries": 7, "shards": 2}


def test_the_fixed_batch_export_takes_any_number_of_images(lite0):
    """Exported for batches of EXPORT_BATCH: more images run in several, fewer are padded, and an
    image's features do not depend on which batch (or padding) it ran with."""
    exported = runtimes.onnx_features(runtimes.export_onnx(lite0, 32, 32), "effnet_lite0")
    images = _images(runtimes.EXPORT_BATCH + 1, seed=6)
    features = exported(images)
    assert features.shape == (len(images), lite0.num_features)
    torch.testing.assert_close(features, runtimes.torch_features(lite0, CPU)(images), rtol=0, atol=1e-4)
    torch.testing.assert_close(exported(images[-2:]), features[-2:], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_images_of_another_size_get_their_own_export(tmp_path, lite0):
    cache = FeatureCache("effnet_lite0", 32, tmp_path, load=lambda *_: lite0, runtime="onnxruntime")
    out = cache.get(_images(2, seed=4, size=40), 2, CPU)
    torch.testing.assert_close(out, runtimes.torch_features(lite0, CPU)(_images(2, seed=4, size=40)), rtol=0, atol=1e-4)
    assert [p.name for p in (cache.directory / "derived").glob("onnx_*")] == [
        f"onnx_40x40_batch{runtimes.EXPORT_BATCH}_torch-{importlib.metadata.version('torch')}.pt"
    ]


@pytest.mark.slow
def test_a_damaged_export_is_reported_and_exported_again(tmp_path, lite0, capsys):
    cache = FeatureCache("effnet_lite0", 32, tmp_path, load=lambda *_: lite0, runtime="onnxruntime")
    first = cache.get(_images(2, seed=5), 2, CPU)
    [exported] = (cache.directory / "derived").glob("onnx_*.pt")
    torch.save({"value": b"\x08\x07 not an onnx model"}, exported)
    capsys.readouterr()
    again = FeatureCache("effnet_lite0", 32, tmp_path, load=lambda *_: lite0, runtime="onnxruntime")
    torch.testing.assert_close(again.get(_images(3, seed=5), 2, CPU)[:2], first, rtol=0, atol=1e-5)
    assert f"warning: cache entry {exported} is unexpected content" in capsys.readouterr().err
    assert runtimes.is_onnx_model(torch.load(exported, weights_only=True)["value"])


# --- failures are one line naming the way out -----------------------------------------------------


class DataDependent(nn.Module):
    """A feature extractor whose Python control flow depends on pixel values: not exportable."""

    def forward(self, x):
        if x.mean() > 0:
            return x.mean(dim=(2, 3))
        return -x.mean(dim=(2, 3))


def test_an_export_failure_is_one_line_naming_the_backbone_and_the_switch(tmp_path, lite0):
    unexportable = dataclasses.replace(lite0, features=DataDependent())
    cache = FeatureCache("effnet_lite0", 32, tmp_path, load=lambda *_: unexportable, runtime="onnxruntime")
    with pytest.raises(UserError) as raised:
        cache.get(_images(2), 2, CPU)
    message = str(raised.value)
    assert message.startswith("cannot export effnet_lite0 to ONNX (")
    assert message.endswith("set transfer.runtime: torch in params.yaml to use PyTorch instead")
    assert "\n" not in message
    assert not list(cache.directory.rglob("*.pt"))  # nothing half-made was cached


def test_a_model_onnx_runtime_cannot_load_is_one_line():
    with pytest.raises(
        UserError, match=r"^ONNX Runtime cannot load effnet_lite2's exported model \(.*transfer\.runtime: torch"
    ):
        runtimes.onnx_features(b"not a model", "effnet_lite2")
