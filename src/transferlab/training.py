"""One training run on the engine, with per-epoch training states to resume and continue from.

A run saves its state after every epoch and, run again with the same inputs (its fingerprint),
continues from the latest saved epoch at or below its epoch count. A run with more epochs is exactly
a shorter one continued (same seed, same batch order, no schedule that depends on the epoch count),
so runs that differ only in their epoch count share one training run.

A run with `processes` > 1 trains in that many worker processes (`distributed`): the first saves
the states and logs the epochs, and the stage's process takes the trained weights from it.
"""

import copy
import dataclasses
import functools
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from transferlab import distributed, engine
from transferlab.checkpoints import Checkpoints
from transferlab.distributed import Group
from transferlab.params import TrainingParams
from transferlab.tracking import TensorBoardRun


@dataclass(frozen=True)
class TrainingRun:
    """What a training run is made of, and so what identifies it."""

    model: nn.Module
    train_set: TensorDataset  # or engine.ConvertedDataset
    val_set: TensorDataset
    settings: TrainingParams
    seed: int
    processes: int = 1

    def fingerprint(self) -> str:
        """Identifies the run's inputs (not its epoch count), so a state is only resumed by the same run."""
        # N only when > 1: one-process runs keep the fingerprints (and cached states) they had
        identity = [repr(self.settings), self.seed, str(self.model)] + ([self.processes] if self.processes > 1 else [])
        digest = hashlib.sha256(json.dumps(identity).encode())
        for tensor in (*self.train_set.tensors, *self.val_set.tensors):
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()


def fit(
    run: TrainingRun, epochs: int, device: torch.device, board: TensorBoardRun, checkpoints: Checkpoints, desc: str
) -> dict[str, list[float]]:
    """Train `run.model` for `epochs` epochs with the engine, logging to `board` and saving every
    epoch's state to `checkpoints`; continues from the latest state of the same run. Holds the run's
    lock meanwhile, so concurrent processes never train one run twice."""
    with checkpoints.exclusive(run.fingerprint()):
        if run.processes == 1:
            return _fit(Group(device=device), run, epochs, board, checkpoints, desc)
        rng = torch.get_rng_state()  # the workers continue this process's random stream
        workers = distributed.launch(
            run.processes, device, _fit_worker, run, epochs, board.log_dir, checkpoints, desc, rng
        )
        history, state = workers[0]
        run.model.load_state_dict(state)
        return history


def _fit_worker(
    group: Group, run: TrainingRun, epochs: int, log_dir: Path, checkpoints: Checkpoints, desc: str, rng: torch.Tensor
) -> tuple[dict[str, list[float]], dict | None]:
    """One worker of a multi-process run: its history and, from the leader, the trained weights."""
    run = dataclasses.replace(run, model=copy.deepcopy(run.model))  # the workers' arguments share memory
    engine.seed_everything(run.seed, group.device)
    torch.set_rng_state(rng)
    board = TensorBoardRun(log_dir, fresh=False) if group.leader else None
    history = _fit(group, run, epochs, board, checkpoints, desc)
    if board is None:
        return history, None
    board.close()
    return history, {key: value.cpu() for key, value in run.model.state_dict().items()}


def _fit(
    group: Group,
    run: TrainingRun,
    epochs: int,
    board: TensorBoardRun | None,
    checkpoints: Checkpoints,
    desc: str,
) -> dict[str, list[float]]:
    """`fit` in one process of `group`, on its device; the leader alone logs to `board` and saves states."""
    generator = torch.Generator().manual_seed(run.seed)
    train_loader = engine.batch_loader(run.train_set, run.settings.batch_size, generator)
    val_loader = engine.batch_loader(run.val_set, run.settings.batch_size)
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    optimizer = engine.make_optimizer(run.settings.optimizer, trainable, run.settings.lr, run.settings.weight_decay)
    fingerprint = run.fingerprint()
    fits = functools.partial(_state_fits, model=run.model, optimizer=optimizer, generator=generator)
    history = None
    if saved := checkpoints.latest(fingerprint, epochs, valid=fits):
        history = _restore(saved, run.model, optimizer, generator)
        if group.leader:
            board.log_epochs(history)
            print(
                f"{desc}: resuming after epoch {len(history['train_loss'])}/{epochs} from "
                f"{checkpoints.directory / fingerprint}",
                file=sys.stderr,
            )

    def on_epoch(epoch: int, history: dict) -> None:
        board.log_epochs(history, first=epoch)
        checkpoints.save(
            fingerprint,
            epoch,
            {
                "model": run.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "generator": generator.get_state(),
                "history": history,
            },
        )

    return engine.train(
        run.model,
        train_loader,
        val_loader,
        nn.CrossEntropyLoss(),
        optimizer,
        epochs,
        group.device,
        on_epoch=on_epoch if group.leader else None,
        history=history,
        desc=desc,
        group=group,
    )


def _restore(
    saved: dict, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> dict[str, list[float]]:
    """Apply a saved training state; its history."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"])
    generator.set_state(saved["generator"])
    return saved["history"]


def _state_fits(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> bool:
    """Whether a saved training state can be applied to this run as it is, checked before anything
    is applied (a state that does not fit is discarded, never half-loaded)."""

    def shapes(state_dict: dict) -> dict:
        return {key: tuple(value.shape) for key, value in state_dict.items()}

    def group_sizes(optimizer_state: dict) -> list[int]:
        return [len(group["params"]) for group in optimizer_state["param_groups"]]

    try:
        epochs = {len(values) for values in state["history"].values()}
        return (
            shapes(state["model"]) == shapes(model.state_dict())
            and group_sizes(state["optimizer"]) == group_sizes(optimizer.state_dict())
            and state["rng"].shape == torch.get_rng_state().shape
            and state["generator"].shape == generator.get_state().shape
            and set(state["history"]) == set(engine.HISTORY_KEYS)
            and len(epochs) == 1
        )
    except (KeyError, TypeError, AttributeError):
        return False
