"""The download stage's logic: read a source into the canonical dataset form.

Sources: `cifar10` (the official python archive, MD5-verified) or a path to an ImageFolder
directory (`train/<class>/*`, `test/<class>/*`) or a .tar, .tar.gz/.tgz or .zip of one.

Canonical form (a directory DVC hashes in milliseconds): `{train,test}_images.npy` (uint8,
N x S x S x 3, S = data.image_size), `{train,test}_labels.npy` (int64) and `classes.json`.
"""

import io
import json
import os
import socket
import stat
import sys
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferlab.errors import UserError
from transferlab.outputs import atomic_dir

SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
UNREADABLE_IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)  # what Pillow raises
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error)
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
DOWNLOAD_TIMEOUT_S = 20
CIFAR10_URL_ENV = "TRANSFERLAB_CIFAR10_URL"  # a mirror of cifar-10-python.tar.gz (same MD5)


@dataclass
class Split:
    images: np.ndarray  # uint8, N x S x S x 3
    labels: np.ndarray  # int64, N


@dataclass
class Dataset:
    classes: list[str]
    train: Split
    test: Split


def prepare(source: str, image_size: int, out_dir: str | Path, raw_dir: str | Path) -> Dataset:
    """Read `source` and write the canonical form to `out_dir` (atomically)."""
    if source == "cifar10":
        dataset = load_cifar10(Path(raw_dir), image_size)
    else:
        dataset = load_image_folder(Path(source), image_size)
    save(dataset, out_dir)
    return dataset


def save(dataset: Dataset, out_dir: str | Path) -> None:
    with atomic_dir(out_dir) as tmp:
        for name in SPLITS:
            split = getattr(dataset, name)
            np.save(tmp / f"{name}_images.npy", split.images)
            np.save(tmp / f"{name}_labels.npy", split.labels)
        (tmp / "classes.json").write_text(json.dumps(dataset.classes, indent=2) + "\n")


def load(data_dir: str | Path) -> Dataset:
    """Read the canonical form written by `save`. Images are memory-mapped read-only: a stage
    reads only the pages of the images its subsets index."""
    data_dir = Path(data_dir)
    splits = {
        name: Split(np.load(data_dir / f"{name}_images.npy", mmap_mode="r"), np.load(data_dir / f"{name}_labels.npy"))
        for name in SPLITS
    }
    return Dataset(json.loads((data_dir / "classes.json").read_text()), **splits)


# --- CIFAR-10 -------------------------------------------------------------------------------------


def load_cifar10(raw_dir: Path, image_size: int) -> Dataset:
    """Download (or reuse) the official archive, verify its MD5, decode both splits."""
    from torchvision.datasets import CIFAR10 as Official
    from torchvision.datasets.utils import check_integrity

    class CIFAR10(Official):
        url = os.environ.get(CIFAR10_URL_ENV) or Official.url

    archive = raw_dir / CIFAR10_ARCHIVE
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        splits = {name: CIFAR10(raw_dir, train=name == "train", download=True) for name in SPLITS}
    except RuntimeError:  # torchvision's MD5 check failed after the download
        archive.unlink(missing_ok=True)
        raise UserError(
            f"the downloaded {archive} does not match the official MD5 {CIFAR10.tgz_md5}; "
            "removed it: try again, or put a verified copy there"
        ) from None
    except OSError as err:  # URLError, timeouts, DNS failures
        if archive.exists() and not check_integrity(str(archive), CIFAR10.tgz_md5):
            archive.unlink()  # a partial download, never left behind
        reason = getattr(err, "reason", None) or err
        raise UserError(
            f"could not download CIFAR-10 from {CIFAR10.url} ({reason}). Either put {CIFAR10_ARCHIVE} "
            f"(md5 {CIFAR10.tgz_md5}) at {archive}, or set data.source in params.yaml to a local "
            "ImageFolder directory or .tar/.tar.gz/.zip archive"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    train, test = splits["train"], splits["test"]
    return Dataset(
        classes=list(train.classes),
        train=Split(_resize_all(train.data, image_size), np.asarray(train.targets, dtype=np.int64)),
        test=Split(_resize_all(test.data, image_size), np.asarray(test.targets, dtype=np.int64)),
    )


def _resize_all(images: np.ndarray, image_size: int) -> np.ndarray:
    if images.shape[1:3] == (image_size, image_size):
        return images
    return np.stack([_to_array(Image.fromarray(image), image_size) for image in images])


# --- ImageFolder directories and archives ---------------------------------------------------------

# A member of a source: its path parts, whether it is a directory, and a reader for its bytes.
Member = tuple[tuple[str, ...], bool, Callable[[], bytes]]


def load_image_folder(source: Path, image_size: int) -> Dataset:
    """Read an ImageFolder tree (directory or archive); corrupt images are reported and skipped."""
    if not source.exists():
        raise UserError(
            f"data.source {str(source)!r} does not exist; use 'cifar10' or a path to an "
            f"ImageFolder directory or {'/'.join(ARCHIVE_SUFFIXES)} archive"
        )
    images: dict[str, dict[str, dict[str, np.ndarray]]] = {name: {} for name in SPLITS}
    skipped = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for parts, is_dir, read in _members(source):
            if any(part.startswith(".") or part == "__MACOSX" for part in parts):
                continue
            if is_dir:
                if len(parts) >= 2 and parts[-2] in SPLITS:
                    images[parts[-2]].setdefault(parts[-1], {})
                continue
            if (
                len(parts) < 3
                or parts[-3] not in SPLITS
                or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES
            ):
                continue
            per_class = images[parts[-3]].setdefault(parts[-2], {})
            try:
                per_class["/".join(parts)] = decode_image(read(), image_size)
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
                raise UserError(f"{source}: {'/'.join(parts)} exceeds the decompression-bomb limit ({err})") from None
            except UNREADABLE_IMAGE_ERRORS as err:
                skipped += 1
                print(f"skipping corrupt image {source}/{'/'.join(parts)}: {err}", file=sys.stderr)
    if skipped:
        print(f"skipped {skipped} corrupt image(s)", file=sys.stderr)
    return _assemble(source, images)


def _assemble(source: Path, images: dict[str, dict[str, dict[str, np.ndarray]]]) -> Dataset:
    """Stack images by class (sorted) and, within a class, by path: archive order never matters."""
    for name in SPLITS:
        if not images[name]:
            raise UserError(
                f"{source} has no {name}/<class>/ folders with images; expected the ImageFolder "
                "layout train/<class>/<image> and test/<class>/<image>"
            )
        for cls, arrays in images[name].items():
            if not arrays:
                raise UserError(f"{source}: class {cls!r} has no readable images in {name}/")
    classes = sorted(images["train"])
    if sorted(images["test"]) != classes:
        raise UserError(f"{source}: train/ and test/ have different classes: {classes} vs {sorted(images['test'])}")
    if len(classes) < 2:
        raise UserError(f"{source}: found a single class {classes[0]!r}; classification needs at least 2")
    splits = {}
    for name in SPLITS:
        per_class = images[name]
        splits[name] = Split(
            images=np.stack([per_class[cls][path] for cls in classes for path in sorted(per_class[cls])]),
            labels=np.concatenate(
                [np.full(len(per_class[cls]), index, dtype=np.int64) for index, cls in enumerate(classes)]
            ),
        )
    return Dataset(classes, **splits)


def decode_image(data: bytes, image_size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("P", "LA") or "transparency" in image.info:
            image = image.convert("RGBA")
        return _to_array(image.convert("RGB"), image_size)


def _to_array(image: Image.Image, image_size: int) -> np.ndarray:
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _members(source: Path) -> Iterator[Member]:
    name = source.name.lower()
    if source.is_dir():
        yield from _directory_members(source)
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        yield from _tar_members(source)
    elif name.endswith(".zip"):
        yield from _zip_members(source)
    else:
        raise UserError(
            f"data.source {str(source)!r} is neither a directory nor a {'/'.join(ARCHIVE_SUFFIXES)} archive"
        )


def _directory_members(root: Path) -> Iterator[Member]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath).relative_to(root).parts
        for dirname in dirnames:
            yield (*base, dirname), True, None
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            yield (*base, filename), False, path.read_bytes


def _safe_parts(archive: Path, name: str) -> tuple[str, ...]:
    """Path parts of an archive member; absolute or parent-directory names are refused."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UserError(f"{archive}: refusing unsafe archive member {name!r} (absolute path or '..')")
    return tuple(part for part in path.parts if part != ".")


def _guarded(archive: Path, read: Callable[[], bytes]) -> Callable[[], bytes]:
    """A member reader whose archive errors (raised in the caller, outside the generator) are UserErrors."""

    def guarded_read() -> bytes:
        try:
            return read()
        except ARCHIVE_ERRORS as err:
            raise UserError(f"cannot read archive {archive}: {err or type(err).__name__}") from None

    return guarded_read


def _tar_members(archive: Path) -> Iterator[Member]:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = _safe_parts(archive, member.name)
                if member.issym() or member.islnk():
                    raise UserError(f"{archive}: refusing link member {member.name!r}")
                if member.isdev():
                    raise UserError(f"{archive}: refusing device member {member.name!r}")
                if member.isdir() or member.isfile():
                    read = _guarded(archive, lambda member=member: tar.extractfile(member).read())
                    yield parts, member.isdir(), read
    except ARCHIVE_ERRORS as err:
        raise UserError(f"cannot read archive {archive}: {err or type(err).__name__}") from None


def _zip_members(archive: Path) -> Iterator[Member]:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = _safe_parts(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise UserError(f"{archive}: refusing link member {info.filename!r}")
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    raise UserError(f"{archive}: refusing device member {info.filename!r}")
                yield parts, info.is_dir(), _guarded(archive, lambda info=info: zf.read(info))
    except ARCHIVE_ERRORS as err:
        raise UserError(f"cannot read archive {archive}: {err or type(err).__name__}") from None
