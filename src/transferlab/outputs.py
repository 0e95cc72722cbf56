"""Atomic writes: an output is either complete or absent, never half-written (text, JSON, whole
directories; torch files: `torchfiles`)."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
