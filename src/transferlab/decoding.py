"""Images to canonical pixels: decode, orient, convert to RGB and fit to an S x S square, on every core.

How a non-square image becomes a square (`data.resize`):

- `crop`: the shorter side to S, then the centre S x S (torchvision's Resize + CenterCrop);
- `squash`: both sides to S, the aspect not kept;
- `pad`: the longer side to S, then black bars to fill the square.

A square image is the same under all three, and an S x S one is stored as it is. Photos are turned
upright by their EXIF orientation, as a viewer shows them. A JPEG much larger than S is decoded at a
reduced scale (Pillow's `draft`, still at least S on both sides), so a 50-megapixel photo costs
about what a small one does.

`decode_all` runs batches of images on a process pool with a bounded number of batches in flight:
memory holds a few batches per worker, whatever the number of images, and the results do not depend
on the number of workers (each image is decoded alone, by the same code).
"""

import functools
import io
import os
import signal
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from transferlab.errors import UserError
from transferlab.params import Resize

RESAMPLING = Image.Resampling.BICUBIC
UNREADABLE_IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)  # what Pillow raises
WORKERS_ENV = "TRANSFERLAB_WORKERS"  # decoding processes; default: every core this process may use
# A batch is sent to a worker when it holds this many images or bytes: large enough that sending it
# costs little beside decoding it, small enough that a few per worker in flight stay small.
BATCH_IMAGES, BATCH_BYTES = 64, 4 * 2**20
BATCHES_IN_FLIGHT_PER_WORKER = 2
# Fewer images than this per worker and starting the workers costs more than they save.
MIN_IMAGES_PER_WORKER = 256


@dataclass(frozen=True)
class Unreadable:
    """An image that could not be decoded, and why (Pillow's message)."""

    reason: str


# What an image arrives as: the bytes of an image file, pixels already decoded (H x W x 3 uint8), or
# why it could not even be read.
Encoded = bytes | np.ndarray | Unreadable


def decode_image(encoded: bytes | np.ndarray, image_size: int, resize: Resize = "crop") -> np.ndarray:
    """One image as S x S x 3 uint8 pixels; UnidentifiedImageError and the like if it is unreadable,
    DecompressionBombError or Warning (when warnings are errors) if it is too large for Pillow."""
    if isinstance(encoded, np.ndarray):
        image = Image.fromarray(encoded)
    else:
        image = Image.open(io.BytesIO(encoded))
        image.draft(None, (image_size, image_size))  # JPEG only: decode at 1/2, 1/4 or 1/8 if still >= S
        image = ImageOps.exif_transpose(image)
    if image.mode in ("P", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(fit(image.convert("RGB"), image_size, resize), dtype=np.uint8)


def fit(image: Image.Image, image_size: int, resize: Resize) -> Image.Image:
    """`image` as an S x S square (`data.resize`)."""
    size = (image_size, image_size)
    if image.size == size:
        return image
    if resize == "crop":
        return ImageOps.fit(image, size, RESAMPLING)
    if resize == "pad":
        return ImageOps.pad(image, size, RESAMPLING, color=(0, 0, 0))
    return image.resize(size, RESAMPLING)


def decode_batch(batch: list[tuple[object, str, Encoded]], image_size: int, resize: Resize) -> list:
    """Each (key, path, image) of `batch` decoded, or why it is unreadable (`Unreadable`); an image
    over Pillow's decompression-bomb limit is a UserError naming its path."""
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for _, path, encoded in batch:
            try:
                results.append(_decoded(encoded, image_size, resize))
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
                raise UserError(f"{path} exceeds the decompression-bomb limit ({err})") from None
    return results


def _decoded(encoded: Encoded, image_size: int, resize: Resize) -> np.ndarray | Unreadable:
    if isinstance(encoded, Unreadable):
        return encoded
    if isinstance(encoded, bytes) and not encoded:
        return Unreadable("an empty file")
    try:
        return decode_image(encoded, image_size, resize)
    except UnidentifiedImageError:
        return Unreadable("not an image Pillow can identify")
    except UNREADABLE_IMAGE_ERRORS as err:
        return Unreadable(str(err) or type(err).__name__)


def worker_count(images: int) -> int:
    """How many processes decode `images` images: $TRANSFERLAB_WORKERS, else every core this process
    may use, but never more than one per MIN_IMAGES_PER_WORKER images."""
    requested = os.environ.get(WORKERS_ENV) or str(len(os.sched_getaffinity(0)))
    if not requested.isdigit() or int(requested) < 1:
        raise UserError(f"{WORKERS_ENV} is {requested!r}; set it to a number of processes (1 or more), or unset it")
    return max(1, min(int(requested), images // MIN_IMAGES_PER_WORKER))


def decode_all(
    images: Iterable[tuple[object, str, Encoded]],
    total: int,
    image_size: int,
    resize: Resize,
    workers: int | None = None,
) -> Iterator[tuple[object, str, np.ndarray | Unreadable]]:
    """(key, path, pixels or Unreadable) for every (key, path, image) of `images`, in their order,
    decoded on `workers` processes (in this one if 1; default: `worker_count(total)`), with a
    progress bar of `total` images."""
    workers = workers or worker_count(total)
    decode = functools.partial(decode_batch, image_size=image_size, resize=resize)
    progress = tqdm(total=total, desc="decoding images", unit="image", disable=total < BATCH_IMAGES)
    with progress:
        for batch, results in _ordered_map(decode, _batches(images), workers):
            progress.update(len(batch))
            for (key, path, _), result in zip(batch, results, strict=True):
                yield key, path, result


def _batches(images: Iterable[tuple[object, str, Encoded]]) -> Iterator[list[tuple[object, str, Encoded]]]:
    """`images` in consecutive batches of at most BATCH_IMAGES images and about BATCH_BYTES bytes."""
    batch, size = [], 0
    for item in images:
        batch.append(item)
        size += len(item[2]) if isinstance(item[2], bytes) else getattr(item[2], "nbytes", 0)
        if len(batch) == BATCH_IMAGES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _ordered_map(decode: Callable[[list], list], batches: Iterator[list], workers: int) -> Iterator[tuple[list, list]]:
    """(batch, decode(batch)) for every batch, in order; on a pool of `workers` processes, each
    given the next batch as soon as a result is taken, so that at most BATCHES_IN_FLIGHT_PER_WORKER
    batches per worker wait in memory (an executor's `map` would read every batch first)."""
    if workers == 1:
        for batch in batches:
            yield batch, decode(batch)
        return
    # spawn: workers import only this module, whatever the parent imported or started; Ctrl-C is the
    # parent's to handle (it stops taking results and waits for the batches in flight)
    pool = ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)
    )
    with pool:
        pending = deque()
        for batch in batches:
            pending.append((batch, pool.submit(decode, batch)))
            if len(pending) >= workers * BATCHES_IN_FLIGHT_PER_WORKER:
                batch, future = pending.popleft()
                yield batch, future.result()
        for batch, future in pending:
            yield batch, future.result()
