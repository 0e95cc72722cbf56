"""The machine-wide cache: one directory shared by every workspace and process of this machine.

Frozen-backbone features and the heads' per-epoch training states are pure functions of their
inputs (keyed by content, never by workspace), so the main workspace, DVC's queue and `--temp`
workspaces and concurrent workers can all share them. The directory is `$TRANSFERLAB_CACHE_DIR`,
else the user cache directory (`~/.cache/transferlab` on Linux), as torch hub and timm keep theirs.

A cache is disposable: an entry that cannot be read, or holds what it should not, is reported in
one line, removed and recomputed. Writers serialise on file locks (`exclusive`), and every file
is written atomically, so a reader never sees a partial entry and no writer loses another's.
"""

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout

from transferlab.errors import UserError
from transferlab.torchfiles import load_torch

CACHE_ENV = "TRANSFERLAB_CACHE_DIR"


def root() -> Path:
    """The cache directory: $TRANSFERLAB_CACHE_DIR, else the user cache directory."""
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("transferlab"))


def read(path: Path, valid: Callable[[object], bool] = lambda content: True) -> object | None:
    """The content of the cache entry at `path`; None when it is absent, or when it is unreadable
    or not `valid` (then it is reported and removed, so that it is recomputed)."""
    try:
        content = load_torch(path)
    except FileNotFoundError:
        return None
    except UserError:  # unsafe or corrupt (`load_torch`): never loaded, recomputed
        discard(path, "unsafe or corrupt")
        return None
    if not valid(content):
        discard(path, "unexpected content")
        return None
    return content


def discard(path: Path, reason: str) -> None:
    """Remove a damaged cache entry, saying so in one line."""
    print(f"warning: cache entry {path} is {reason}; removed, it will be recomputed", file=sys.stderr)
    Path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(lock_file: Path, task: str) -> Iterator[None]:
    """Hold the lock `lock_file` while doing `task` (e.g. "computing effnet_lite0 features"); when
    another process holds it, say so and wait, so the work is done once and then reused."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process {task} (lock {lock_file})", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
