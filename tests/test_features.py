"""features: the feature cache computes each distinct image once per backbone and input size."""

import dataclasses
import time

import numpy as np
import pytest
import torch
from torch import nn

from transferlab import backbones, features
from transferlab.features import FeatureCache
from transferlab.preprocess import Preprocess

CPU = torch.device("cpu")


class Counting(nn.Module):
    """Wraps a feature extractor; records how many images each forward pass gets."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    @property
    def images(self) -> int:
        return sum(self.batches)

    def forward(self, x):
        self.batches.append(len(x))
        return self.inner(x)


@pytest.fixture(scope="module")
def lite0():
    return backbones.load("effnet_lite0", image_size=32)


@pytest.fixture
def backbone(lite0):
    """lite0 at 32 px with its features wrapped in a fresh counter."""
    return dataclasses.replace(lite0, features=Counting(lite0.features))


def _images(n, seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _direct(backbone, images):
    with torch.no_grad():
        batch = torch.as_tensor(images).permute(0, 3, 1, 2)
        return backbone.features.inner(backbone.transform(batch))


def test_image_keys_depend_on_content_only():
    images = _images(3)
    keys = features.image_keys(images)
    assert len(set(keys)) == 3
    assert features.image_keys(images.copy()) == keys
    assert features.image_keys(images[[2, 0]]) == [keys[2], keys[0]]
    # A non-contiguous view of the same pixels gives the same key.
    assert features.image_keys(np.asfortranarray(images[1])[None]) == [keys[1]]
    changed = images.copy()
    changed[1, 0, 0, 0] ^= 1
    assert features.image_keys(changed) == [keys[0], features.image_keys(changed[1:2])[0], keys[2]]
    assert features.image_keys(changed)[1] != keys[1]


def _cache(backbone, cache_dir):
    """A cache of `backbone` (possibly a counting wrapper) at its own input size."""
    return FeatureCache(backbone.info.name, backbone.transform.crop_size[0], cache_dir, load=lambda *_: backbone)


def test_cache_directory_is_per_backbone_and_input_size(tmp_path):
    assert FeatureCache("effnet_lite0", 32, tmp_path).directory == tmp_path / "features/effnet_lite0_32px"
    assert FeatureCache("effnet_lite0", 48, tmp_path).directory == tmp_path / "features/effnet_lite0_48px"
    assert FeatureCache("effnet_lite2", None, tmp_path).directory == tmp_path / "features/effnet_lite2_260px"


def test_default_cache_directory_is_the_machine_wide_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "shared"))
    assert FeatureCache("effnet_lite0", 32).directory == tmp_path / "shared/features/effnet_lite0_32px"


def test_first_get_computes_every_image_once_and_matches_direct_computation(tmp_path, backbone):
    images = _images(5)
    cache = _cache(backbone, tmp_path)
    out = cache.get(images, batch_size=2, device=CPU)
    assert backbone.features.batches == [2, 2, 1]
    assert out.shape == (5, 1280) and out.dtype == torch.float32
    torch.testing.assert_close(out, _direct(backbone, images), rtol=1e-4, atol=1e-5)
    assert len(list(cache.shards_dir.glob("*.pt"))) == 1


def test_second_get_with_the_same_images_does_no_backbone_pass(tmp_path, backbone):
    images = _images(4)
    cache = _cache(backbone, tmp_path)
    first = cache.get(images, batch_size=8, device=CPU)
    assert backbone.features.images == 4
    second = cache.get(images, batch_size=8, device=CPU)
    assert backbone.features.images == 4
    assert torch.equal(first, second)
    # A permutation and a subset are answered from the cache too, rows in the asked order.
    reordered = cache.get(images[[3, 1]], batch_size=8, device=CPU)
    assert backbone.features.images == 4
    assert torch.equal(reordered, first[[3, 1]])


def test_superset_only_computes_the_new_images(tmp_path, backbone):
    old, new = _images(3, seed=1), _images(2, seed=2)
    cache = _cache(backbone, tmp_path)
    first = cache.get(old, batch_size=8, device=CPU)
    assert backbone.features.images == 3
    superset = np.concatenate([new[:1], old, new[1:]])
    out = cache.get(superset, batch_size=8, device=CPU)
    assert backbone.features.batches == [3, 2]
    assert torch.equal(out[1:4], first)
    torch.testing.assert_close(out[[0, 4]], _direct(backbone, new), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, _direct(backbone, superset), rtol=1e-4, atol=1e-5)
    assert _cache(backbone, tmp_path).stats() == {"images": 5, "entries": 5, "shards": 2}


def test_duplicate_images_in_one_call_are_computed_once(tmp_path, backbone):
    distinct = _images(3, seed=3)
    images = distinct[[0, 1, 0, 2, 1, 0]]
    out = _cache(backbone, tmp_path).get(images, batch_size=8, device=CPU)
    assert backbone.features.images == 3
    assert out.shape == (6, 1280)
    assert torch.equal(out[0], out[2]) and torch.equal(out[0], out[5]) and torch.equal(out[1], out[4])
    torch.testing.assert_close(out, _direct(backbone, images), rtol=1e-4, atol=1e-5)
    assert _cache(backbone, tmp_path).stats() == {"images": 3, "entries": 3, "shards": 1}


def test_cached_file_is_reused_by_a_new_cache_instance(tmp_path, lite0):
    images = _images(4, seed=4)
    first_backbone = dataclasses.replace(lite0, features=Counting(lite0.features))
    first = _cache(first_backbone, tmp_path).get(images, batch_size=8, device=CPU)
    assert first_backbone.features.images == 4

    second_backbone = dataclasses.replace(lite0, features=Counting(lite0.features))
    again = _cache(second_backbone, tmp_path).get(images[::-1], batch_size=8, device=CPU)
    assert second_backbone.features.batches == []
    assert torch.equal(again, first.flip(0))


def test_other_cache_dir_or_input_size_does_not_share_features(tmp_path, lite0):
    images = _images(2, seed=5)
    counted = dataclasses.replace(lite0, features=Counting(lite0.features))
    _cache(counted, tmp_path / "a").get(images, batch_size=8, device=CPU)
    _cache(counted, tmp_path / "b").get(images, batch_size=8, device=CPU)
    assert counted.features.images == 4

    bigger = dataclasses.replace(counted, transform=Preprocess.like(lite0.transform, 40))
    out = _cache(bigger, tmp_path / "a").get(images, batch_size=8, device=CPU)
    assert counted.features.images == 6
    assert sorted(p.name for p in (tmp_path / "a/features").iterdir()) == ["effnet_lite0_32px", "effnet_lite0_40px"]
    torch.testing.assert_close(out, _direct(bigger, images), rtol=1e-4, atol=1e-5)


def _unbuildable(name, image_size):
    raise AssertionError(f"built {name} at {image_size}: everything asked for was cached")


def test_a_fully_cached_request_never_builds_the_backbone(tmp_path, backbone):
    images = _images(3, seed=6)
    first = _cache(backbone, tmp_path).get(images, batch_size=8, device=CPU)
    _cache(backbone, tmp_path).derived("summary", lambda b: f"{b.info.name} summary")
    again = FeatureCache("effnet_lite0", 32, tmp_path, load=_unbuildable)
    assert torch.equal(again.get(images[[2, 0]], batch_size=8, device=CPU), first[[2, 0]])
    assert again.derived("summary", lambda b: "made again") == "effnet_lite0 summary"
    with pytest.raises(AssertionError, match="built effnet_lite0 at 32"):
        again.get(_images(1, seed=7), batch_size=8, device=CPU)


def test_derived_artefacts_are_made_once_and_kept_beside_the_features(tmp_path, backbone):
    made = []

    def make(b):
        made.append(b.info.name)
        return {"graph": b"\x00bytes", "size": b.transform.crop_size[0]}

    cache = _cache(backbone, tmp_path)
    assert cache.derived("graph", make) == {"graph": b"\x00bytes", "size": 32}
    features = cache.get(_images(2, seed=8), batch_size=8, device=CPU)
    assert _cache(backbone, tmp_path).derived("graph", make) == {"graph": b"\x00bytes", "size": 32}
    assert made == ["effnet_lite0"]
    assert torch.equal(_cache(backbone, tmp_path).get(_images(2, seed=8), batch_size=8, device=CPU), features)
    assert backbone.features.images == 2


# --- a disposable cache ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong shape"])
def test_a_damaged_shard_is_reported_removed_and_recomputed(tmp_path, backbone, capsys, damage):
    images = _images(4, seed=9)
    first = _cache(backbone, tmp_path).get(images, batch_size=8, device=CPU)
    [shard] = _cache(backbone, tmp_path).shards_dir.glob("*.pt")
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "garbage":
        shard.write_bytes(b"\x80\x02garbage" * 30)
    else:  # readable, but not features of this backbone
        torch.save({"keys": ["x"] * 4, "features": torch.zeros(4, 7)}, shard)
    capsys.readouterr()
    again = _cache(backbone, tmp_path).get(images, batch_size=8, device=CPU)
    assert backbone.features.images == 8  # computed again
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-6)
    [notice] = capsys.readouterr().err.strip().splitlines()[:1]
    assert notice.startswith(f"warning: cache entry {shard} is ") and "recomputed" in notice
    assert "Traceback" not in capsys.readouterr().err
    assert _cache(backbone, tmp_path).stats() == {"images": 4, "entries": 4, "shards": 1}


def test_a_damaged_derived_artefact_is_made_again(tmp_path, backbone, capsys):
    cache = _cache(backbone, tmp_path)
    cache.derived("summary", lambda b: "first")
    path = cache.directory / "derived/summary.pt"
    path.write_bytes(b"not a zip")
    assert _cache(backbone, tmp_path).derived("summary", lambda b: "again") == "again"
    assert str(path) in capsys.readouterr().err


RACER = """
import sys, time
from pathlib import Path
import numpy as np, torch
from transferlab import backbones
from transferlab.features import FeatureCache
from transferlab.preprocess import Preprocess

cache_dir, go, seeds, out = sys.argv[1], Path(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")], sys.argv[4]
images = np.concatenate([np.random.default_rng(s).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for s in seeds])
cache = FeatureCache("effnet_lite0", 32, cache_dir)
cache.backbone  # built before the start signal, so both processes ask at the same moment
while not go.exists():
    time.sleep(0.01)
torch.save(cache.get(images, batch_size=4, device=torch.device("cpu")), out)
"""


def test_concurrent_processes_keep_each_others_entries_and_compute_shared_images_once(tmp_path, lite0):
    """Two processes need overlapping images at once: both get correct features, each distinct
    image is stored once (one computed it, the other waited for it), no entry is lost."""
    import subprocess
    import sys

    go = tmp_path / "go"
    seeds = {"a": "1,2,3", "b": "3,4,1"}  # seeds 1 and 3 are needed by both
    racers = {
        name: subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / "cache"), str(go), s, str(tmp_path / f"{name}.pt")],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, s in seeds.items()
    }
    time.sleep(1)
    go.touch()
    for name, racer in racers.items():
        assert racer.wait(timeout=300) == 0, racer.stderr.read()
        images = np.concatenate([_images(3, seed=int(s)) for s in seeds[name].split(",")])
        torch.testing.assert_close(
            torch.load(tmp_path / f"{name}.pt", weights_only=True), _direct(_plain(lite0), images), rtol=1e-4, atol=1e-5
        )
    stats = FeatureCache("effnet_lite0", 32, tmp_path / "cache", load=_unbuildable).stats()
    assert stats["images"] == stats["entries"] == 4 * 3  # seeds 1-4, three images each: none twice


def _plain(backbone):
    """`backbone` as `_direct` expects it (features under `.inner`)."""
    return dataclasses.replace(backbone, features=Counting(backbone.features))
