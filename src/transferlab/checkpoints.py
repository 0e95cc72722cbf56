"""Per-epoch training states (model, optimizer, RNG states, history), to resume and to continue runs.

States live under a directory, one folder per run fingerprint (the run's inputs: model, data,
settings, seed; for the transfer grid, whose epoch counts are a grid axis, not the epoch count) and
one file per epoch. A run finds the latest state at or below its epoch count and continues from
there. States are disposable: one that cannot be read or does not fit the run is reported, removed,
and the next older one (or a fresh start) is used instead.
"""

import contextlib
from collections.abc import Callable, Collection
from pathlib import Path

from transferlab import cache
from transferlab.torchfiles import save_torch


class Checkpoints:
    """Training states under `directory`. `keep_every_epoch=False` keeps only the newest (a resume
    point, for whole networks) and those after the `milestones` epochs (a grid's epoch counts, so
    an interrupted grid, rerun, finds each finished experiment's final state); `True` keeps them
    all (small heads), so a later run of the same inputs continues from its nearest earlier epoch,
    whatever its epoch count."""

    def __init__(self, directory: str | Path, keep_every_epoch: bool, milestones: Collection[int] = ()):
        self.directory, self.keep_every_epoch, self.milestones = Path(directory), keep_every_epoch, set(milestones)

    def _files(self, fingerprint: str) -> dict[int, Path]:
        return {
            int(path.stem.removeprefix("epoch_")): path for path in (self.directory / fingerprint).glob("epoch_*.pt")
        }

    def latest(
        self, fingerprint: str, max_epochs: int, valid: Callable[[dict], bool] = lambda state: True
    ) -> dict | None:
        """The state after the latest saved epoch that is at most `max_epochs` and readable and
        `valid`, if any; unusable newer states are discarded on the way."""
        files = self._files(fingerprint)
        for epoch in sorted((epoch for epoch in files if epoch <= max_epochs), reverse=True):
            state = cache.read(files[epoch], lambda content: isinstance(content, dict) and valid(content))
            if state is not None:
                return state
        return None

    def save(self, fingerprint: str, epoch: int, state: dict) -> None:
        """Save the state after `epoch`; unless every epoch is kept, then drop the others but the
        milestones'."""
        save_torch(self.directory / fingerprint / f"epoch_{epoch:04d}.pt", state)
        if not self.keep_every_epoch:
            for saved_epoch, path in self._files(fingerprint).items():
                if saved_epoch != epoch and saved_epoch not in self.milestones:
                    path.unlink()

    def exclusive(self, fingerprint: str) -> contextlib.AbstractContextManager[None]:
        """Hold the run's lock while training it: a concurrent process training the same run
        (another queued experiment, say) waits, then continues from the states saved here."""
        return cache.exclusive(self.directory / fingerprint / ".lock", "training the same run")
