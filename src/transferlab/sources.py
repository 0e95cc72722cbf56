"""The download stage: read `data.source` into the canonical dataset (`data`), streaming.

`data.source` is `data/cifar10.yaml` (CIFAR-10's card: `cifar10`) or the path of your own images,
an ImageFolder directory or a .tar, .tar.gz/.tgz or .zip of one (read directly, never extracted), in
one of two layouts, detected and printed in one line:

- split: `train/<class>/<image>` and `test/<class>/<image>`;
- flat: `<class>/<image>` with no split folders, the layout most photo collections have. A seeded,
  class-stratified test split is drawn (`data.test_fraction` of each class, `data.split_seed`):
  each image's place is decided by a hash of the seed and its path, so the same images are test
  images on every machine and run, and adding photos moves few others.

Images may lie deeper in a class folder (as torchvision's ImageFolder reads them); an archive's
single top folder (`photos/cat/...`) is looked through. The source is read twice: once for the names
(what exists, in which class and split: the image files' sizes), then for the images, each decoded
and resized on a pool of processes (`decoding`) and written at its row at once (`data.ImageRows`):
memory holds a few batches of images, whatever their number.
"""

import hashlib
import os
import stat
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from transferlab import cifar10, decoding
from transferlab.data import SPLITS, ImageRows, Summary, write_labels
from transferlab.decoding import Encoded, Unreadable
from transferlab.errors import UserError
from transferlab.outputs import atomic_dir
from transferlab.params import DataParams

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error)
CARD_KEY = "dataset"  # a source card (`data/cifar10.yaml`) names a built-in dataset under this key
BUILT_IN = {"cifar10": cifar10.load}
LAYOUTS = {"split": "train/<class>/<image>, test/<class>/<image>", "flat": "<class>/<image>"}


def prepare(p: DataParams, out_dir: str | Path, raw_dir: str | Path, workers: int | None = None) -> Summary:
    """Read `p.source` and write the canonical form to `out_dir` (atomically: complete, or the
    previous one is left as it was). `workers`: decoding processes (default: `decoding.worker_count`)."""
    source = Path(p.source)
    with atomic_dir(out_dir) as tmp:
        if card := _built_in(source):
            return card(Path(raw_dir), p, tmp, workers)
        return read_image_folder(source, p, tmp, workers)


def _built_in(source: Path) -> Callable | None:
    """The loader of the built-in dataset a source card names, or None for an image folder or archive."""
    if source.suffix not in (".yaml", ".yml") or not source.is_file():
        return None
    try:
        card = yaml.safe_load(source.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{source} is not a readable source card: {getattr(err, 'problem', None) or err}") from None
    name = card.get(CARD_KEY) if isinstance(card, dict) else None
    if name not in BUILT_IN:
        raise UserError(
            f"{source} is not a source card: it should name one of {', '.join(BUILT_IN)} as '{CARD_KEY}: <name>'"
        )
    return BUILT_IN[name]


# --- ImageFolder directories and archives ---------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """What an image folder holds, from its names alone: the layout, the classes (sorted) and each
    split's images as member names in canonical order (by class, then path), with their labels."""

    layout: str
    classes: list[str]
    images: dict[str, list[str]]
    labels: dict[str, np.ndarray]


def read_image_folder(source: Path, p: DataParams, out_dir: Path, workers: int | None = None) -> Summary:
    """Read an ImageFolder tree (directory or archive) into the canonical form in `out_dir`;
    unreadable images are reported one line each, skipped and counted."""
    listing = list_image_folder(source, p.test_fraction, p.split_seed)
    drawn = f"; test split drawn: {p.test_fraction:g} of each class (data.split_seed {p.split_seed})"
    print(
        f"{source}: {listing.layout} layout {LAYOUTS[listing.layout]}, {len(listing.classes)} classes"
        f"{drawn if listing.layout == 'flat' else ''}",
        file=sys.stderr,
    )
    row_of = {name: (split, row) for split, names in listing.images.items() for row, name in enumerate(names)}
    rows = {
        split: ImageRows(out_dir / f"{split}_images.npy", len(names), p.image_size)
        for split, names in listing.images.items()
    }
    unreadable = set()
    for key, path, result in decoding.decode_all(
        _image_bytes(source, row_of), len(row_of), p.image_size, p.resize, workers
    ):
        if isinstance(result, Unreadable):
            unreadable.add(key)
            print(f"skipping unreadable image {path}: {result.reason}", file=sys.stderr)
        else:
            rows[key[0]].put(key[1], result)
    labels = {}
    for split, names in listing.images.items():
        kept = np.array([row for row in range(len(names)) if (split, row) not in unreadable], dtype=np.int64)
        rows[split].close(kept)
        labels[split] = listing.labels[split][kept]
    if unreadable:
        print(f"skipped {len(unreadable)} unreadable image(s)", file=sys.stderr)
    _check_classes(source, listing.classes, labels)
    write_labels(out_dir, listing.classes, labels)
    return Summary(listing.classes, {split: len(labels[split]) for split in SPLITS}, listing.layout, len(unreadable))


def _check_classes(source: Path, classes: list[str], labels: dict[str, np.ndarray]) -> None:
    """Every class needs a readable image in every split."""
    for split in SPLITS:
        counts = np.bincount(labels[split], minlength=len(classes))
        for cls, count in zip(classes, counts, strict=True):
            if not count:
                raise UserError(f"{source}: class {cls!r} has no readable images in {split}/")


def _image_bytes(source: Path, row_of: dict[str, tuple[str, int]]) -> Iterator[tuple[tuple[str, int], str, Encoded]]:
    """(split and row, path, bytes) of every listed image, in the source's own order; a file that
    cannot be read (permissions, say) is passed on as `Unreadable`."""
    for parts, is_dir, read in _members(source):
        name = "/".join(parts)
        if not is_dir and name in row_of:
            try:
                content = read()
            except OSError as err:  # a directory's file; an archive's errors are UserErrors (`_guarded`)
                content = Unreadable(f"cannot read the file ({err.strerror or err})")
            yield row_of[name], f"{source}/{name}", content


def list_image_folder(source: Path, test_fraction: float, split_seed: int) -> Listing:
    """The layout, classes and images of an ImageFolder tree, from its names (nothing is decoded)."""
    if not source.exists():
        raise UserError(
            f"data.source {str(source)!r} does not exist; use data/cifar10.yaml or a path to an "
            f"ImageFolder directory or {'/'.join(ARCHIVE_SUFFIXES)} archive"
        )
    files, folders = [], []
    for parts, is_dir, _ in _members(source):
        if parts and not any(part.startswith(".") or part == "__MACOSX" for part in parts):
            if is_dir:
                folders.append(parts)
            elif PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES:
                files.append(parts)
    files = list(dict.fromkeys(files))  # a tar may hold a name twice: its last member is the file
    depth = _wrapper_depth(files, folders)
    files = [parts for parts in files if len(parts) > depth + 1]  # images beside the class folders are not in a class
    folders = [parts for parts in folders if len(parts) > depth]
    tops = {parts[depth] for parts in files} | {parts[depth] for parts in folders}
    if not files:
        raise UserError(
            f"{source} has no images in class folders; expected <class>/<image>, or train/<class>/<image> "
            "and test/<class>/<image>"
        )
    if tops & set(SPLITS):
        return _split_listing(source, files, folders, depth, tops)
    return _flat_listing(source, files, folders, depth, test_fraction, split_seed)


def _wrapper_depth(files: list[tuple[str, ...]], folders: list[tuple[str, ...]]) -> int:
    """How many single top folders wrap the tree (`dataset/train/...`, `photos/cat/...`): levels
    where every entry lies in one folder that is not a split and has images in folders of its own
    (a single class folder would not: it holds its images)."""
    depth = 0
    while True:
        tops = {parts[depth] for parts in files if len(parts) > depth + 1}
        tops |= {parts[depth] for parts in folders if len(parts) > depth}
        has_folders_of_images = any(len(parts) > depth + 2 for parts in files)
        if len(tops) != 1 or tops & set(SPLITS) or not has_folders_of_images:
            return depth
        depth += 1


def _split_listing(source: Path, files: list, folders: list, depth: int, tops: set[str]) -> Listing:
    """`train/<class>/...` and `test/<class>/...`."""
    if others := sorted(tops - set(SPLITS)):
        raise UserError(
            f"{source} mixes split folders ({', '.join(f'{s}/' for s in sorted(tops & set(SPLITS)))}) with other "
            f"folders ({', '.join(f'{o}/' for o in others)}); use one layout: train/<class>/<image> and "
            "test/<class>/<image>, or <class>/<image> alone"
        )
    if missing := [split for split in SPLITS if split not in tops]:
        raise UserError(
            f"{source} has no {missing[0]}/<class>/ folders with images; expected the ImageFolder layout "
            "train/<class>/<image> and test/<class>/<image>, or <class>/<image> alone (a test split is then drawn)"
        )
    by_split = {split: {} for split in SPLITS}
    for parts in folders:
        if len(parts) > depth + 1:
            by_split[parts[depth]].setdefault(parts[depth + 1], [])
    for parts in files:
        if len(parts) > depth + 2:  # train/<class>/<image>: an image right inside train/ has no class
            by_split[parts[depth]].setdefault(parts[depth + 1], []).append("/".join(parts))
    classes = sorted(by_split["train"])
    if sorted(by_split["test"]) != classes:
        raise UserError(f"{source}: train/ and test/ have different classes: {classes} vs {sorted(by_split['test'])}")
    return _listing(source, "split", by_split)


def _flat_listing(
    source: Path, files: list, folders: list, depth: int, test_fraction: float, split_seed: int
) -> Listing:
    """`<class>/...`, each class's images split into train and test by `_is_test`."""
    per_class: dict[str, list[tuple[str, ...]]] = {parts[depth]: [] for parts in folders if len(parts) == depth + 1}
    for parts in files:
        per_class.setdefault(parts[depth], []).append(parts)
    by_split = {split: {} for split in SPLITS}
    for cls, images in per_class.items():
        test = _test_images(images, depth, test_fraction, split_seed)
        if images and len(test) == len(images):
            raise UserError(
                f"{source}: class {cls!r} has {len(images)} image(s), too few to split into train and test; "
                "add images or remove the class"
            )
        for split in SPLITS:
            by_split[split][cls] = ["/".join(parts) for parts in images if (parts in test) == (split == "test")]
    return _listing(source, "flat", by_split)


def _test_images(images: list[tuple[str, ...]], depth: int, test_fraction: float, split_seed: int) -> set:
    """A class's test images: the round(test_fraction * n) (at least one) whose hash of the seed and
    path (below the layout's root) is smallest; the same on every machine, and stable as the class
    grows (a new image takes a test place only if its hash is among the smallest)."""

    def rank(parts: tuple[str, ...]) -> str:
        return hashlib.sha256(f"{split_seed}/{'/'.join(parts[depth:])}".encode()).hexdigest()

    count = max(1, round(test_fraction * len(images)))
    return set(sorted(images, key=rank)[:count]) if images else set()


def _listing(source: Path, layout: str, by_split: dict[str, dict[str, list[str]]]) -> Listing:
    """Images by class (sorted) and, within a class, by path: the canonical order."""
    classes = sorted(by_split["train"])
    if not classes:
        raise UserError(f"{source} has no train/<class>/ folders with images")
    if len(classes) < 2:
        raise UserError(f"{source}: found a single class {classes[0]!r}; classification needs at least 2")
    for split in SPLITS:
        for cls in classes:
            if not by_split[split][cls]:
                raise UserError(f"{source}: class {cls!r} has no readable images in {split}/")
    images = {split: [name for cls in classes for name in sorted(by_split[split][cls])] for split in SPLITS}
    labels = {
        split: np.concatenate([np.full(len(by_split[split][cls]), i, dtype=np.int64) for i, cls in enumerate(classes)])
        for split in SPLITS
    }
    return Listing(layout, classes, images, labels)


# --- members of a directory or an archive ---------------------------------------------------------

# A member of a source: its path parts, whether it is a directory, and a reader for its bytes.
Member = tuple[tuple[str, ...], bool, Callable[[], bytes] | None]


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
