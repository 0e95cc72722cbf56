"""Atomic writes: an output is either complete or absent, never half-written."""

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from transferlab.errors import UserError


def _remove_stale_temporaries(path: Path) -> None:
    """Drop temporaries that a killed process (SIGKILL skips `finally`) left beside `path`."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def _staged(path: str | os.PathLike, make_temporary, discard) -> Iterator[Path]:
    """Yield a temporary beside `path` and rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(make_temporary(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        os.replace(tmp, path)
    finally:
        discard(tmp)


def _new_file(**kwargs) -> str:
    fd, name = tempfile.mkstemp(**kwargs)
    os.close(fd)
    return name


def atomic_path(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """A temporary file path beside `path`, moved into place only if the block succeeds."""
    return _staged(path, _new_file, lambda tmp: tmp.unlink(missing_ok=True))


def atomic_dir(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """A temporary directory beside `path`, swapped into place only if the block succeeds."""
    return _staged(path, tempfile.mkdtemp, lambda tmp: shutil.rmtree(tmp, ignore_errors=True))


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: object) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_torch(path: str | os.PathLike, obj: object) -> None:
    """torch.save, byte-for-byte reproducible: saving to a file names the zip's inner folder after
    that (temporary) file, so serialise to memory first."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_torch(path: str | os.PathLike) -> object:
    """Load a checkpoint or weights file safely: tensors and plain containers only
    (`weights_only=True`, whatever torch's default). A file whose pickle asks for anything else
    (code to run, arbitrary objects) is refused unread, and a corrupt or truncated one reported, as
    one UserError line; torch's own message, which suggests loading without that protection, is
    not passed on."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # the weights-only unpickler, the zip reader: whatever they refuse
        raise UserError(unsafe_or_corrupt(path, err)) from None


def unsafe_or_corrupt(path: str | os.PathLike, err: Exception) -> str:
    """The one line for a file that `load_torch` refused."""
    return (
        f"{path} is unsafe or corrupt, not loaded: it holds more than tensors and plain containers, "
        f"or is damaged ({type(err).__name__})"
    )
