"""The download stage's library on a source, for tests that look at what it makes."""

import tempfile
from pathlib import Path

import numpy as np

from transferlab import data, sources
from transferlab.params import DataParams


def data_params(source, image_size: int = 12, **overrides) -> DataParams:
    """params.yaml's `data` section for `source` (the committed defaults but for `overrides`)."""
    defaults = {"resize": "crop", "test_fraction": 0.2, "split_seed": 42}
    return DataParams(str(source), image_size, **(defaults | overrides))


def read_source(source, image_size: int = 12, workers: int = 1, **overrides) -> data.Dataset:
    """The canonical dataset the download stage makes of `source`, read into memory (one decoding
    process unless `workers` says otherwise)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "prepared"
        sources.prepare(data_params(source, image_size, **overrides), out, Path(tmp) / "raw", workers)
        loaded = data.load(out)
        splits = [data.Split(np.array(s.images), s.labels) for s in (loaded.train, loaded.test)]
        return data.Dataset(loaded.classes, *splits)
