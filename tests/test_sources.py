"""Own photos: the layouts a folder may have (split or flat <class>/<image>), the drawn test split,
bad inputs skipped with a count, and the same bytes out whatever the number of decoding processes."""

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.images import class_colour, make_image
from helpers.sources import data_params, read_source
from transferlab import data, sources
from transferlab.errors import UserError

SIZE = 8


def flat_folder(root: Path, counts: dict[str, int], size=(12, 9), fmt="png") -> Path:
    """<class>/<image> with `counts[class]` images each, coloured by class."""
    for index, (cls, count) in enumerate(counts.items()):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            make_image(class_colour(index), size, seed=index * 1000 + i).save(root / cls / f"photo_{i:03d}.{fmt}")
    return root


def test_split_files(root: Path, test_fraction=0.2, split_seed=42) -> dict[str, list[str]]:
    listing = sources.list_image_folder(root, test_fraction, split_seed)
    return {split: sorted(names) for split, names in listing.images.items()}


test_split_files.__test__ = False  # a helper, not a test


def test_flat_folder_gets_a_stratified_test_split_and_says_so(tmp_path, capsys):
    root = flat_folder(tmp_path / "photos", {"cat": 10, "dog": 15, "eel": 7})
    dataset = read_source(root, SIZE)
    assert dataset.classes == ["cat", "dog", "eel"]
    # round(0.2 * n) of each class, at least one: 2, 3 and 1
    np.testing.assert_array_equal(np.bincount(dataset.test.labels), [2, 3, 1])
    np.testing.assert_array_equal(np.bincount(dataset.train.labels), [8, 12, 6])
    lines = [line for line in capsys.readouterr().err.splitlines() if "layout" in line]
    assert len(lines) == 1
    assert "flat layout <class>/<image>, 3 classes" in lines[0] and "0.2 of each class" in lines[0]
    # every image is in exactly one split, with its own class's colour
    for split in (dataset.train, dataset.test):
        for label, image in zip(split.labels, split.images, strict=True):
            np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), class_colour(label), atol=6)


def test_the_drawn_split_is_the_same_everywhere_and_moves_little_as_a_class_grows(tmp_path):
    root = flat_folder(tmp_path / "photos", {"cat": 20, "dog": 20})
    split = test_split_files(root)
    # the same names on every machine: the split is a hash of the seed and each path, nothing else
    digest = hashlib.sha256("\n".join(split["test"]).encode()).hexdigest()[:12]
    assert digest == "e1eef3acd9c3", split["test"]
    # the same as an archive, whatever its member order and top folder
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*.png"), reverse=True):
            zf.write(path, f"my photos/{path.relative_to(root).as_posix()}")
    from_archive = test_split_files(archive)
    assert [name.removeprefix("my photos/") for name in from_archive["test"]] == split["test"]
    # another seed draws other images; a new photo moves at most one image between the splits
    assert test_split_files(root, split_seed=7)["test"] != split["test"]
    make_image(class_colour(0), (12, 9), seed=99).save(root / "cat" / "photo_new.png")
    grown = test_split_files(root)
    assert len(set(grown["test"]) ^ set(split["test"])) <= 2


def test_layouts_with_a_top_folder_nested_class_folders_and_stray_files(tmp_path):
    root = flat_folder(tmp_path / "export" / "photos", {"cat": 5, "dog": 5})
    (root / "dog" / "2023").mkdir()
    make_image(class_colour(1), (12, 9), seed=5).save(root / "dog" / "2023" / "beach.png")
    make_image(class_colour(1), (12, 9), seed=6).save(root / "stray.png")  # beside the classes: in none
    (root / "notes.txt").write_text("not an image")
    listing = sources.list_image_folder(tmp_path / "export", 0.2, 42)
    assert listing.layout == "flat" and listing.classes == ["cat", "dog"]
    names = listing.images["train"] + listing.images["test"]
    assert "photos/dog/2023/beach.png" in names and len(names) == 11


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_mixed_layout_is_one_error(tmp_path, split):
    root = flat_folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    (root / split / "cat").mkdir(parents=True)
    make_image(class_colour(0), 8).save(root / split / "cat" / "x.png")
    with pytest.raises(UserError, match=rf"mixes split folders \({split}/\) with other folders \(cat/, dog/\)") as err:
        read_source(root, SIZE)
    assert "use one layout" in str(err.value)


def test_a_class_too_small_to_split_is_one_error(tmp_path):
    root = flat_folder(tmp_path / "photos", {"cat": 4, "dog": 1})
    with pytest.raises(UserError, match="class 'dog' has 1 image"):
        read_source(root, SIZE)


def test_unreadable_empty_and_undecodable_files_are_skipped_with_a_count(tmp_path, capsys):
    root = flat_folder(tmp_path / "photos", {"cat": 6, "dog": 6})
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "notes.png").write_bytes(b"not an image at all")
    (root / "dog" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # a file that cannot be read
    dataset = read_source(root, SIZE)
    assert len(dataset.train.labels) + len(dataset.test.labels) == 12
    err = capsys.readouterr().err
    assert f"skipping unreadable image {root}/cat/empty.jpg: an empty file" in err
    assert f"skipping unreadable image {root}/dog/notes.png: not an image Pillow can identify" in err
    assert f"skipping unreadable image {root}/dog/gone.jpg: cannot read the file" in err
    assert "skipped 3 unreadable image(s)" in err


def test_a_skipped_image_leaves_no_gap_in_the_canonical_files(tmp_path):
    root = flat_folder(tmp_path / "photos", {"cat": 6, "dog": 6})
    reference = read_source(root, SIZE)
    names = sources.list_image_folder(root, 0.2, 42).images
    damaged = "cat/photo_000.png"
    (root / damaged).write_bytes(b"damaged")
    dataset = read_source(root, SIZE)
    for split in data.SPLITS:  # the same split (names decide it), less the damaged image's row
        want, got = getattr(reference, split), getattr(dataset, split)
        rows = [row for row, name in enumerate(names[split]) if name != damaged]
        assert len(rows) == len(names[split]) - (damaged in names[split])
        np.testing.assert_array_equal(got.images, want.images[rows])
        np.testing.assert_array_equal(got.labels, want.labels[rows])


def test_the_canonical_dataset_is_identical_whatever_the_worker_count(tmp_path):
    """Two decoding processes (the pool, in batches) give the very bytes one gives, a skipped image
    and photos of many sizes and aspects included."""
    root = tmp_path / "photos"
    for index, cls in enumerate(("cat", "dog", "eel")):
        (root / cls).mkdir(parents=True)
        for i in range(70):
            size = (20 + (i * 7) % 45, 15 + (i * 11) % 50)
            make_image(class_colour(index), size, seed=i).save(root / cls / f"{i:03d}.jpg", quality=90)
    (root / "eel" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    files = {}
    for workers in (1, 2):
        out = tmp_path / f"prepared_{workers}"
        sources.prepare(data_params(root, 16), out, tmp_path / "raw", workers=workers)
        files[workers] = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
    assert files[1] == files[2]
    assert (
        len(data.load(tmp_path / "prepared_2").train.labels) + len(data.load(tmp_path / "prepared_2").test.labels)
        == 210
    )


def test_a_50_megapixel_photo_is_read_at_reduced_scale_in_little_memory(tmp_path):
    photo = tmp_path / "huge.jpg"
    Image.new("RGB", (8660, 5773), class_colour(0)).save(photo, quality=80)
    # in a fresh process, so that its peak memory (VmHWM, which exec resets) is this decode's: a full
    # decode holds the photo's 150 MB of pixels at least
    script = (
        "import json, re; from transferlab import decoding; "
        f"pixels = decoding.decode_image(open({str(photo)!r}, 'rb').read(), 224); "
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024; "
        "print(json.dumps([pixels.shape, pixels.reshape(-1, 3).mean(axis=0).round().tolist(), peak]))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    shape, colour, peak_mb = json.loads(result.stdout)
    assert shape == [224, 224, 3]
    np.testing.assert_allclose(colour, class_colour(0), atol=2)
    assert peak_mb < 150, f"decoding the photo peaked at {peak_mb} MB"
