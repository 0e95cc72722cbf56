"""CIFAR-10, the built-in source (`data/cifar10.yaml`): torchvision downloads the official python
archive (or reuses it) and verifies its MD5; both splits are written in the canonical form."""

import os
import socket
from pathlib import Path

import numpy as np

from transferlab import decoding
from transferlab.data import SPLITS, ImageRows, Summary, write_labels
from transferlab.errors import UserError
from transferlab.params import DataParams

ARCHIVE = "cifar-10-python.tar.gz"
DOWNLOAD_TIMEOUT_S = 20
URL_ENV = "TRANSFERLAB_CIFAR10_URL"  # a mirror of cifar-10-python.tar.gz (same MD5)
NATIVE_SIZE = 32


def load(raw_dir: Path, p: DataParams, out_dir: Path, workers: int | None = None) -> Summary:
    """Download (or reuse) the archive in `raw_dir`, verify it, write both splits to `out_dir`
    (resized on `workers` processes when `p.image_size` is not 32)."""
    splits = _official_splits(raw_dir)
    classes = list(splits["train"].classes)
    labels = {}
    for name, split in splits.items():
        rows = ImageRows(out_dir / f"{name}_images.npy", len(split.data), p.image_size)
        if p.image_size == NATIVE_SIZE:
            rows.put_all(split.data)
        else:
            images = (((name, row), f"CIFAR-10 {name} image {row}", image) for row, image in enumerate(split.data))
            for (_, row), _, image in decoding.decode_all(images, len(split.data), p.image_size, p.resize, workers):
                rows.put(row, image)
        rows.close()
        labels[name] = np.asarray(split.targets, dtype=np.int64)
    write_labels(out_dir, classes, labels)
    return Summary(classes, {name: len(labels[name]) for name in SPLITS}, "cifar10")


def _official_splits(raw_dir: Path) -> dict:
    """torchvision's CIFAR10 of each split, downloaded with a timeout; failures are one UserError line
    (and a damaged download is removed)."""
    from torchvision.datasets import CIFAR10 as Official
    from torchvision.datasets.utils import check_integrity

    class CIFAR10(Official):
        url = os.environ.get(URL_ENV) or Official.url

    archive = raw_dir / ARCHIVE
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return {name: CIFAR10(raw_dir, train=name == "train", download=True) for name in SPLITS}
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
            f"could not download CIFAR-10 from {CIFAR10.url} ({reason}). Either put {ARCHIVE} "
            f"(md5 {CIFAR10.tgz_md5}) at {archive}, or set data.source in params.yaml to a local "
            "ImageFolder directory or .tar/.tar.gz/.zip archive"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
