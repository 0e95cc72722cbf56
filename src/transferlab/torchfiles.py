"""Torch files: saved byte-for-byte reproducibly and atomically, loaded safely (tensors and plain
containers only)."""

import io
import os

import torch

from transferlab.errors import UserError
from transferlab.outputs import atomic_path


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
