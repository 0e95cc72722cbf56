"""Hostile files: pickles that run code when loaded without `weights_only`."""

from pathlib import Path

import torch

# Makes torch.load run pickles unless the call itself forbids it (as an older torch's default did).
UNSAFE_DEFAULT = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file proves that the payload ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a model checkpoint (or a training state), with a payload inside."""
    torch.save({"kind": "tinyvgg", "classes": ["a"], "config": {}, "state_dict": {"x": Payload(marker)}}, path)
    return path
