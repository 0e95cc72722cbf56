"""The download stage's logic: ImageFolder directories and archives, CIFAR-10, the canonical form."""

import io
import json
import pickle
import socket
import stat
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image

from helpers.sources import data_params, read_source
from transferlab import cifar10, data, decoding, sources
from transferlab.errors import UserError

SIZE = 12
CIFAR10_CARD = Path(__file__).resolve().parents[1] / "data" / "cifar10.yaml"


# --- helpers --------------------------------------------------------------------------------------


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def solid(colour, size=SIZE, mode="RGB") -> Image.Image:
    return Image.new(mode, (size, size) if isinstance(size, int) else size, colour)


def palette_image(index: int, palette: list[tuple[int, int, int]], size=SIZE) -> Image.Image:
    """A mode-P image whose every pixel is palette entry `index`."""
    image = Image.new("P", (size, size), index)
    image.putpalette([channel for colour in palette for channel in colour])
    return image


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def make_tar(root: Path, dest: Path, mode: str = "w", arcname: str = "dataset") -> Path:
    with tarfile.open(dest, mode) as tar:
        tar.add(root, arcname=arcname)
    return dest


def make_zip(root: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            name = prefix + path.relative_to(root).as_posix()
            if path.is_dir():
                zf.writestr(name + "/", b"")
            else:
                zf.write(path, name)
    return dest


def tar_with(dest: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(dest, "w") as tar:
        for info, payload in members:
            if payload is None:
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return dest


def tar_file_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def valid_tar_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    """A complete, valid two-class tree, so any refusal is due to the extra member under test."""
    payload = png_bytes(solid((200, 0, 0)))
    return [(tar_file_info(f"{split}/{cls}/x.png"), payload) for split in ("train", "test") for cls in ("a", "b")]


def zip_with(dest: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for info, payload in members:
            zf.writestr(info, payload)
    return dest


def valid_zip_members() -> list[tuple[str, bytes]]:
    payload = png_bytes(solid((200, 0, 0)))
    return [(f"{split}/{cls}/x.png", payload) for split in ("train", "test") for cls in ("a", "b")]


def assert_same_dataset(left: data.Dataset, right: data.Dataset) -> None:
    assert left.classes == right.classes
    for name in data.SPLITS:
        a, b = getattr(left, name), getattr(right, name)
        assert a.images.dtype == b.images.dtype == np.uint8
        assert a.labels.dtype == b.labels.dtype == np.int64
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


# --- sources: directory and archives --------------------------------------------------------------


@pytest.fixture
def folder(tmp_path, image_folder_factory) -> Path:
    return image_folder_factory(tmp_path / "images", classes=("a", "b", "c"), n_train=4, n_test=2, size=SIZE)


def test_directory_source_reads_images_labels_and_classes(folder):
    dataset = read_source(folder, SIZE)
    assert dataset.classes == ["a", "b", "c"]
    assert dataset.train.images.shape == (12, SIZE, SIZE, 3)
    assert dataset.test.images.shape == (6, SIZE, SIZE, 3)
    assert dataset.train.images.dtype == np.uint8
    assert dataset.train.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.train.labels, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(dataset.test.labels, np.repeat([0, 1, 2], 2))
    # Images are the files' pixels, class by class, in file-name order.
    expected = [np.asarray(Image.open(p).convert("RGB")) for p in files_of(folder / "train")]
    np.testing.assert_array_equal(dataset.train.images, np.stack(expected))


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "tgz", "zip", "zip-prefixed", "tar-dot"])
def test_archive_sources_match_the_directory(folder, tmp_path, kind):
    reference = read_source(folder, SIZE)
    archive = {
        "tar": lambda: make_tar(folder, tmp_path / "ds.tar"),
        "tar.gz": lambda: make_tar(folder, tmp_path / "ds.tar.gz", "w:gz"),
        "tgz": lambda: make_tar(folder, tmp_path / "DS.TGZ", "w:gz"),
        "zip": lambda: make_zip(folder, tmp_path / "ds.zip"),
        "zip-prefixed": lambda: make_zip(folder, tmp_path / "ds.zip", prefix="top/"),
        "tar-dot": lambda: make_tar(folder, tmp_path / "ds.tar", arcname="."),  # ./train/a/...
    }[kind]()
    assert_same_dataset(read_source(archive, SIZE), reference)


def test_archive_member_order_does_not_matter(folder, tmp_path):
    reference = read_source(folder, SIZE)
    archive = tmp_path / "reversed.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # classes and files stored in reverse order
        for path in sorted(files_of(folder), reverse=True):
            zf.write(path, path.relative_to(folder).as_posix())
    dataset = read_source(archive, SIZE)
    assert dataset.classes == reference.classes == ["a", "b", "c"]
    for name in data.SPLITS:  # the same images in the same order: by class, then by path
        got, want = getattr(dataset, name), getattr(reference, name)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.images, want.images)


def test_unsupported_source_file_is_refused(tmp_path):
    source = tmp_path / "dataset.rar"
    source.write_bytes(b"Rar!")
    with pytest.raises(UserError, match="neither a directory nor"):
        read_source(source, SIZE)


def test_class_names_come_from_folders_and_are_sorted(tmp_path, image_folder_factory):
    names = ("Zebra", "apple pie", "Ünïcode-ß", "a(1)+[x]", "10", "9", "dash-and_under")
    root = image_folder_factory(tmp_path / "odd", classes=names, n_train=2, n_test=1, size=SIZE)
    reference = read_source(root, SIZE)
    assert reference.classes == sorted(names)
    # Each label points at the class whose folder the image came from (checked by its colour).
    from helpers.images import class_colour

    for label, cls in enumerate(reference.classes):
        mean = reference.train.images[reference.train.labels == label].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(mean, class_colour(names.index(cls)), atol=6)
    for archive in (make_zip(root, tmp_path / "odd.zip"), make_tar(root, tmp_path / "odd.tar.gz", "w:gz")):
        assert_same_dataset(read_source(archive, SIZE), reference)


def test_image_formats_with_mixed_case_suffixes(tmp_path):
    suffixes = {".jpg": "JPEG", ".JPEG": "JPEG", ".Png": "PNG", ".BMP": "BMP", ".webP": "WEBP"}
    for split in data.SPLITS:
        for cls, colour in (("a", (250, 0, 0)), ("b", (0, 0, 250))):
            folder = tmp_path / "ds" / split / cls
            folder.mkdir(parents=True)
            for i, (suffix, fmt) in enumerate(suffixes.items()):
                (folder / f"img{i}{suffix}").write_bytes(png_bytes(solid(colour), fmt))
            # Image formats outside the supported list are not read.
            (folder / "other.gif").write_bytes(png_bytes(solid(colour), "GIF"))
            (folder / "other.tiff").write_bytes(png_bytes(solid(colour), "TIFF"))
    dataset = read_source(tmp_path / "ds", SIZE)
    np.testing.assert_array_equal(dataset.train.labels, np.repeat([0, 1], 5))
    np.testing.assert_array_equal(dataset.test.labels, np.repeat([0, 1], 5))
    red = dataset.train.images[dataset.train.labels == 0].reshape(-1, 3).mean(axis=0)
    blue = dataset.train.images[dataset.train.labels == 1].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(red, (250, 0, 0), atol=8)  # lossy formats stay close
    np.testing.assert_allclose(blue, (0, 0, 250), atol=8)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (solid(100, mode="L"), (100, 100, 100)),
        (solid((10, 20, 30, 128), mode="RGBA"), (10, 20, 30)),
        (solid((77, 200), mode="LA"), (77, 77, 77)),
        (palette_image(2, [(0, 0, 0), (9, 9, 9), (200, 100, 50)]), (200, 100, 50)),
    ],
    ids=["L", "RGBA", "LA", "P"],
)
def test_decode_converts_modes_to_rgb(image, expected):
    array = decoding.decode_image(png_bytes(image), SIZE)
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
    assert (array == np.asarray(expected, dtype=np.uint8)).all()


def test_palette_image_with_transparency(tmp_path):
    image = palette_image(1, [(0, 0, 0), (40, 180, 90)])
    array = decoding.decode_image(png_bytes_with(image, transparency=0), SIZE)
    assert array.shape == (SIZE, SIZE, 3)
    assert (array == np.array([40, 180, 90], dtype=np.uint8)).all()


def test_palette_with_per_entry_alpha_decodes_without_warnings():
    image = palette_image(1, [(0, 0, 0), (40, 180, 90), (1, 2, 3)])
    encoded = png_bytes_with(image, transparency=bytes([0, 128, 255]))  # a tRNS alpha per palette entry
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns when such images go straight to RGB
        array = decoding.decode_image(encoded, SIZE)
    assert (array == np.array([40, 180, 90], dtype=np.uint8)).all()


def png_bytes_with(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def test_grayscale_palette_and_rgba_files_load_as_rgb(tmp_path):
    images = {
        "gray.png": solid(90, mode="L"),
        "pal.png": palette_image(1, [(1, 1, 1), (0, 128, 255)]),
        "alpha.png": solid((5, 6, 7, 0), mode="RGBA"),
    }
    for split in data.SPLITS:
        for cls in ("a", "b"):
            folder = tmp_path / "ds" / split / cls
            folder.mkdir(parents=True)
            for name, image in images.items():
                image.save(folder / name)
    dataset = read_source(tmp_path / "ds", 8)
    assert dataset.train.images.shape == (6, 8, 8, 3)
    # Sorted file names: alpha.png, gray.png, pal.png.
    assert (dataset.train.images[0] == [5, 6, 7]).all()
    assert (dataset.train.images[1] == [90, 90, 90]).all()
    assert (dataset.train.images[2] == [0, 128, 255]).all()


def test_images_of_other_sizes_are_resized(tmp_path):
    sizes = [(8, 8), (20, 12), (24, 24), (16, 16), (9, 30)]
    for split in data.SPLITS:
        for cls, colour in (("a", (10, 200, 30)), ("b", (180, 20, 220))):
            folder = tmp_path / "ds" / split / cls
            folder.mkdir(parents=True)
            for i, size in enumerate(sizes):
                solid(colour, size).save(folder / f"{i}.png")
    dataset = read_source(tmp_path / "ds", 16)
    assert dataset.train.images.shape == (10, 16, 16, 3)
    assert dataset.test.images.shape == (10, 16, 16, 3)
    # A uniform image keeps its colour through resizing.
    assert (dataset.train.images[:5] == [10, 200, 30]).all()
    assert (dataset.train.images[5:] == [180, 20, 220]).all()


def test_hidden_entries_and_non_images_are_ignored(folder):
    reference = read_source(folder, SIZE)
    image = png_bytes(solid((1, 2, 3)))
    extras = [
        "train/a/.hidden.png",  # hidden file
        "train/.ipynb_checkpoints/x.png",  # hidden folder that would be a class
        "test/.cache/x.png",
        "train/a/.thumbs/x.png",
        ".git/train/a/x.png",  # hidden top-level folder
        "__MACOSX/train/a/._img_000.png",  # macOS resource forks
    ]
    for name in extras:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(image)
    (folder / "train/a/notes.txt").write_text("not an image")
    (folder / "train/a/labels.csv").write_text("a,b")
    (folder / "train/b/noext").write_bytes(image)  # an image without an image suffix
    (folder / "README.md").write_text("readme")
    (folder / "train/readme.png").write_bytes(image)  # directly in train/, not in a class
    assert_same_dataset(read_source(folder, SIZE), reference)
    # The same tree as a zip archive.
    assert_same_dataset(read_source(make_zip(folder, folder.parent / "ds.zip"), SIZE), reference)


def test_corrupt_images_are_skipped_and_reported(folder, capsys):
    good = (folder / "train/b/img_000.png").read_bytes()
    (folder / "train/a/broken.png").write_bytes(b"this is not an image")
    (folder / "test/c/truncated.png").write_bytes(good[: len(good) // 2])
    dataset = read_source(folder, SIZE)
    np.testing.assert_array_equal(dataset.train.labels, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(dataset.test.labels, np.repeat([0, 1, 2], 2))
    err = capsys.readouterr().err
    assert f"{folder}/train/a/broken.png" in err
    assert f"{folder}/test/c/truncated.png" in err
    assert "skipped 2 unreadable image(s)" in err


def test_no_skip_report_when_everything_is_readable(folder, capsys):
    read_source(folder, SIZE)
    err = capsys.readouterr().err
    assert "skipping" not in err and "skipped" not in err


def test_corrupt_image_in_archive_is_reported_by_member_path(folder, tmp_path, capsys):
    (folder / "train/b/bad.jpg").write_bytes(b"\xff\xd8garbage")
    archive = make_zip(folder, tmp_path / "ds.zip")
    dataset = read_source(archive, SIZE)
    assert len(dataset.train.labels) == 12
    err = capsys.readouterr().err
    assert f"{archive}/train/b/bad.jpg" in err
    assert "skipped 1 unreadable image(s)" in err


# --- unsafe archives ------------------------------------------------------------------------------


def _symlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo("train/a/link.png")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


def _hardlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo("train/a/hard.png")
    info.type, info.linkname = tarfile.LNKTYPE, "train/a/x.png"
    return info


def _device(kind) -> tarfile.TarInfo:
    info = tarfile.TarInfo("train/a/dev.png")
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info


@pytest.mark.parametrize(
    ("member", "payload", "message"),
    [
        (tar_file_info("/abs/train/a/x.png"), b"x", "unsafe archive member '/abs/train/a/x.png'"),
        (tar_file_info("../evil.png"), b"x", "unsafe archive member '../evil.png'"),
        (tar_file_info("train/../../evil.png"), b"x", "unsafe"),
        (tar_file_info("..\\evil.png"), b"x", "unsafe"),
        (tar_file_info("C:/evil.png"), b"x", "unsafe"),
        (_symlink(), None, "link member 'train/a/link.png'"),
        (_hardlink(), None, "link member 'train/a/hard.png'"),
        (_device(tarfile.CHRTYPE), None, "device member 'train/a/dev.png'"),
        (_device(tarfile.BLKTYPE), None, "device member"),
        (_device(tarfile.FIFOTYPE), None, "device member"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "inner-dotdot",
        "backslash-dotdot",
        "drive",
        "symlink",
        "hardlink",
        "chardev",
        "blockdev",
        "fifo",
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path, member, payload, message):
    ok = tar_with(tmp_path / "ok.tar", valid_tar_members())
    assert read_source(ok, SIZE).classes == ["a", "b"]  # the rest of the archive is fine
    members = valid_tar_members()
    archive = tar_with(tmp_path / "bad.tar", members[:2] + [(member, payload)] + members[2:])
    with pytest.raises(UserError, match="refusing") as excinfo:
        read_source(archive, SIZE)
    assert message in str(excinfo.value)
    assert str(archive) in str(excinfo.value)


def test_unsafe_tar_member_is_refused_even_when_hidden(tmp_path):
    members = valid_tar_members() + [(tar_file_info(".hidden/../../evil.png"), b"x")]
    with pytest.raises(UserError, match="unsafe"):
        read_source(tar_with(tmp_path / "bad.tar", members), SIZE)


def _zip_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("/abs/train/a/x.png", "unsafe archive member '/abs/train/a/x.png'"),
        ("../evil.png", "unsafe archive member '../evil.png'"),
        ("train/a/../../../evil.png", "unsafe"),
        ("..\\evil.png", "unsafe"),
        ("C:/evil.png", "unsafe"),
        (_zip_info("train/a/link.png", stat.S_IFLNK | 0o777), "link member 'train/a/link.png'"),
        (_zip_info("train/a/dev.png", stat.S_IFCHR | 0o644), "device member 'train/a/dev.png'"),
        (_zip_info("train/a/blk.png", stat.S_IFBLK | 0o644), "device member"),
        (_zip_info("train/a/fifo.png", stat.S_IFIFO | 0o644), "device member"),
    ],
    ids=["absolute", "dotdot", "inner-dotdot", "backslash-dotdot", "drive", "symlink", "chardev", "blockdev", "fifo"],
)
def test_unsafe_zip_members_are_refused(tmp_path, member, message):
    ok = zip_with(tmp_path / "ok.zip", valid_zip_members())
    assert read_source(ok, SIZE).classes == ["a", "b"]
    members = valid_zip_members()
    archive = zip_with(tmp_path / "bad.zip", members[:2] + [(member, b"/etc/passwd")] + members[2:])
    names = [info.filename for info in zipfile.ZipFile(archive).infolist()]
    assert (member if isinstance(member, str) else member.filename) in names  # zipfile kept the name
    with pytest.raises(UserError, match="refusing") as excinfo:
        read_source(archive, SIZE)
    assert message in str(excinfo.value)


# --- unreadable sources and bad layouts -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_archives_raise_user_error(folder, tmp_path, kind, fraction):
    full = (
        make_zip(folder, tmp_path / "full.zip") if kind == "zip" else make_tar(folder, tmp_path / "full.tar.gz", "w:gz")
    )
    blob = full.read_bytes()
    truncated = tmp_path / f"cut.{kind}"
    truncated.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(UserError, match="cannot read archive") as excinfo:
        read_source(truncated, SIZE)
    assert str(truncated) in str(excinfo.value)


@pytest.mark.parametrize("which", [0, 8, -1], ids=["first", "middle", "last"])
def test_tar_truncated_inside_an_image_raises_user_error(folder, tmp_path, which):
    # A plain tar's tail is zero padding, so cut inside an image member's data instead.
    full = make_tar(folder, tmp_path / "full.tar")
    with tarfile.open(full) as tar:
        member = [m for m in tar.getmembers() if m.isfile()][which]
    truncated = tmp_path / "cut.tar"
    truncated.write_bytes(full.read_bytes()[: member.offset_data + member.size // 2])
    with pytest.raises(UserError, match="cannot read archive") as excinfo:
        read_source(truncated, SIZE)
    assert str(truncated) in str(excinfo.value)


@pytest.mark.parametrize("name", ["junk.tar", "junk.tar.gz", "junk.zip"])
def test_garbage_archives_raise_user_error(tmp_path, name):
    source = tmp_path / name
    source.write_bytes(b"definitely not an archive " * 40)
    with pytest.raises(UserError, match="cannot read archive"):
        read_source(source, SIZE)


def test_zip_with_corrupted_member_data_raises_user_error(folder, tmp_path):
    archive = make_zip(folder, tmp_path / "ds.zip")
    blob = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".png"))
    start = info.header_offset + 30 + len(info.filename.encode())  # the member's compressed data
    for i in range(start + 5, start + 25):
        blob[i] ^= 0xFF
    archive.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="cannot read archive"):
        read_source(archive, SIZE)


def test_missing_source_raises_user_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="does not exist") as excinfo:
        read_source(missing, SIZE)
    assert str(missing) in str(excinfo.value)


def test_folder_without_test_raises_user_error(folder):
    import shutil

    shutil.rmtree(folder / "test")
    with pytest.raises(UserError, match="no test/<class>/ folders"):
        read_source(folder, SIZE)


def test_empty_directory_raises_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images in class folders"):
        read_source(tmp_path / "empty", SIZE)


@pytest.mark.parametrize("content", ["nothing", "text-only", "corrupt-only"])
def test_class_folder_without_images_raises_user_error(folder, content):
    empty = folder / "test" / "d"
    empty.mkdir()
    (folder / "train" / "d").mkdir()
    (folder / "train/d/img.png").write_bytes((folder / "train/a/img_000.png").read_bytes())
    if content == "text-only":
        (empty / "notes.txt").write_text("hi")
    elif content == "corrupt-only":
        (empty / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"class 'd' has no readable images in test/"):
        read_source(folder, SIZE)


def test_single_class_raises_user_error(tmp_path, image_folder_factory):
    root = image_folder_factory(tmp_path / "one", classes=("only",), n_train=2, n_test=1, size=SIZE)
    with pytest.raises(UserError, match="single class 'only'"):
        read_source(root, SIZE)


def test_train_test_class_mismatch_raises_user_error(folder):
    (folder / "test" / "c").rename(folder / "test" / "z")
    with pytest.raises(UserError, match="different classes") as excinfo:
        read_source(folder, SIZE)
    assert "'c'" in str(excinfo.value) and "'z'" in str(excinfo.value)


@pytest.mark.parametrize("limit", [100, 50], ids=["warning", "error"])  # 144 px: > limit, > 2 * limit
def test_decompression_bomb_raises_user_error(folder, monkeypatch, limit):
    assert read_source(folder, SIZE).classes == ["a", "b", "c"]
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(UserError, match="decompression-bomb limit") as excinfo:
        read_source(folder, SIZE)
    assert "/a/img_000.png exceeds" in str(excinfo.value)


def test_decompression_bomb_in_archive_raises_user_error(folder, tmp_path, monkeypatch):
    archive = make_tar(folder, tmp_path / "ds.tar.gz", "w:gz")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UserError, match="decompression-bomb"):
        read_source(archive, SIZE)


# --- the canonical form ---------------------------------------------------------------------------


def test_save_load_roundtrip(folder, tmp_path):
    dataset = read_source(folder, SIZE)
    out = tmp_path / "prepared"
    out.mkdir()
    data.save(dataset, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy", "classes.json"]
    )
    assert json.loads((out / "classes.json").read_text()) == ["a", "b", "c"]
    loaded = data.load(out)
    assert_same_dataset(loaded, dataset)
    for split in (loaded.train, loaded.test):  # images are mapped read-only, not read whole
        assert isinstance(split.images, np.memmap) and not split.images.flags.writeable
    # the image files are what np.save writes, byte for byte
    np.save(tmp_path / "reference.npy", dataset.train.images)
    assert (out / "train_images.npy").read_bytes() == (tmp_path / "reference.npy").read_bytes()


def test_prepare_writes_the_canonical_form_and_replaces_the_previous_one(folder, tmp_path):
    out = tmp_path / "out" / "prepared"
    out.mkdir(parents=True)
    (out / "stale.npy").write_bytes(b"old")
    summary = sources.prepare(data_params(folder, 8), out, tmp_path / "raw")
    assert summary.counts == {"train": 12, "test": 6} and summary.layout == "split"
    assert not (out / "stale.npy").exists()
    assert_same_dataset(data.load(out), read_source(folder, 8))
    assert [p.name for p in out.parent.iterdir()] == ["prepared"]  # no temporary leftovers


def test_prepare_failure_leaves_no_output(tmp_path, folder):
    (folder / "test" / "c").rename(folder / "test" / "z")
    out = tmp_path / "out" / "prepared"
    with pytest.raises(UserError):
        sources.prepare(data_params(folder), out, tmp_path / "raw")
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_prepare_failure_keeps_previous_output(tmp_path, folder):
    out = tmp_path / "prepared"
    sources.prepare(data_params(folder), out, tmp_path / "raw")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError):
        sources.prepare(data_params(tmp_path / "missing"), out, tmp_path / "raw")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_failure_while_writing_images_leaves_no_output(tmp_path, folder, monkeypatch):
    real_put, calls = data.ImageRows.put, []

    def failing_put(self, row, image):
        calls.append(row)
        if len(calls) == 7:
            raise OSError("disk full")
        real_put(self, row, image)

    monkeypatch.setattr(data.ImageRows, "put", failing_put)
    out = tmp_path / "out" / "prepared"
    with pytest.raises(OSError, match="disk full"):
        sources.prepare(data_params(folder), out, tmp_path / "raw")
    assert len(calls) == 7
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # the temporary directory is cleaned up too


# --- CIFAR-10 -------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Every urlopen fails as it would offline; records the URLs tried."""
    tried = []

    def offline(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return tried


def test_cifar10_offline_raises_user_error(tmp_path, no_network):
    raw = tmp_path / "raw"
    out = tmp_path / "prepared"
    timeout = socket.getdefaulttimeout()
    with pytest.raises(UserError) as excinfo:
        sources.prepare(data_params(CIFAR10_CARD, 32), out, raw)
    message = str(excinfo.value)
    assert no_network and "cifar-10-python.tar.gz" in no_network[0]
    assert str(raw / cifar10.ARCHIVE) in message
    assert "data.source" in message
    assert "Temporary failure in name resolution" in message
    assert "c58f30108f718f92721af3b95e74349a" in message  # the MD5 to check a manual download against
    assert socket.getdefaulttimeout() == timeout  # the download timeout is restored
    assert not out.exists()


def test_cifar10_checksum_failure_removes_archive(tmp_path, no_network, monkeypatch):
    from torchvision.datasets import utils

    raw = tmp_path / "raw"
    archive = raw / cifar10.ARCHIVE
    downloads = []

    def fake_download(url, filename, chunk_size=None):
        downloads.append(url)
        Path(filename).write_bytes(b"not the real archive")

    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(utils, "_urlretrieve", fake_download)
    with pytest.raises(UserError, match="MD5") as excinfo:
        sources.prepare(data_params(CIFAR10_CARD, 32), tmp_path / "prepared", raw)
    assert downloads, "the download should have been attempted"
    assert str(archive) in str(excinfo.value)
    assert not archive.exists()
    assert not (tmp_path / "prepared").exists()


def test_cifar10_archive_is_decoded_and_resized(tmp_path, monkeypatch):
    """An already-extracted CIFAR-10 (checksums patched) is decoded, labelled and resized."""
    from torchvision.datasets import cifar

    batches = tmp_path / "raw" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    images = {}
    for index, name in enumerate(
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    ):
        colours = rng.integers(0, 256, size=(2, 3), dtype=np.uint8)
        hwc = np.broadcast_to(colours[:, None, None, :], (2, 32, 32, 3)).copy()
        images[name] = hwc
        rows = hwc.transpose(0, 3, 1, 2).reshape(2, -1)  # CIFAR's channel-major rows
        entry = {"data": rows, "labels": [index % 10, (index + 3) % 10]}
        (batches / name).write_bytes(pickle.dumps(entry))
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)

    dataset = read_cifar10(tmp_path / "raw", 16)
    assert dataset.classes == names
    assert dataset.train.images.shape == (10, 16, 16, 3)
    assert dataset.test.images.shape == (2, 16, 16, 3)
    assert dataset.train.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.train.labels, [0, 3, 1, 4, 2, 5, 3, 6, 4, 7])
    np.testing.assert_array_equal(dataset.test.labels, [5, 8])
    # Uniform images keep their colour through the resize.
    np.testing.assert_array_equal(dataset.test.images[:, 0, 0], images["test_batch"][:, 0, 0])
    np.testing.assert_array_equal(
        dataset.train.images[:, 5, 7], np.concatenate([images[f"data_batch_{i}"][:, 0, 0] for i in range(1, 6)])
    )
    # At the native size nothing is resized.
    native = read_cifar10(tmp_path / "raw", 32)
    np.testing.assert_array_equal(native.test.images, images["test_batch"])


def read_cifar10(raw: Path, image_size: int) -> data.Dataset:
    out = raw.parent / f"prepared_{image_size}"
    out.mkdir()
    cifar10.load(raw, data_params(CIFAR10_CARD, image_size), out, workers=1)
    return data.load(out)
