"""One training/evaluation engine for TinyVGG and every transfer experiment."""

import os
import random
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset
from tqdm.auto import tqdm

from transferlab.distributed import ONE_PROCESS, Group

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")
# batches when scoring trained models (no gradients kept: larger than training's)
SCORING_BATCH = 64


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed every generator; on an accelerator, also ask for deterministic kernels. (The CPU
    kernels used here are deterministic already, and the switch costs a slow import there.)"""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type != "cpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # CUDA lacks a few deterministic kernels


def select_device() -> torch.device:
    """CUDA when available, else CPU; TRANSFERLAB_DEVICE overrides (e.g. 'cpu')."""
    name = os.environ.get("TRANSFERLAB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ConvertedDataset(TensorDataset):
    """A TensorDataset whose first tensor is converted a batch at a time as it is gathered (uint8
    images to floats): it holds a byte per pixel, not four, and gives what converting it all would."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, convert: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(inputs, labels)
        self.convert = convert

    def __getitem__(self, index):
        inputs, labels = super().__getitem__(index)
        return self.convert(inputs), labels


def in_batches(
    apply: Callable[[np.ndarray], torch.Tensor],
    images: np.ndarray,
    batch_size: int,
    progress: Callable[[range], Iterable[int]] = iter,
) -> torch.Tensor:
    """`apply` of each run of `batch_size` images, concatenated: what it gives for all of `images`
    (N > 0), holding one batch of its intermediate values at a time (`progress`: wraps the batch
    starts, a tqdm bar say)."""
    return torch.cat(
        [apply(images[start : start + batch_size]) for start in progress(range(0, len(images), batch_size))]
    )


def batch_loader(dataset: TensorDataset, batch_size: int, generator: torch.Generator | None = None) -> DataLoader:
    """The batches of DataLoader(dataset, batch_size, shuffle=generator is not None, generator=generator),
    in the same order, each gathered by one indexing of the tensors instead of per-sample collation."""
    order = RandomSampler(dataset, generator=generator) if generator else SequentialSampler(dataset)
    return DataLoader(
        dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None, generator=generator
    )


def make_optimizer(name: str, parameters, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (weight decay as an L2 term of the gradient), AdamW (decoupled weight decay) or SGD with
    momentum 0.9."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay)


def train_step(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    group: Group = ONE_PROCESS,
) -> tuple[float, float]:
    """One epoch of training; returns the mean loss and accuracy over all samples. Each process of
    `group` trains on its part of every batch: its mean loss weighted by its share of the batch,
    gradients summed over the processes, so each step is the one-process step (`distributed`)."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for batch_inputs, batch_labels in loader:
        part = group.part(len(batch_labels))
        inputs, labels = batch_inputs[part].to(device), batch_labels[part].to(device)
        optimizer.zero_grad()
        if len(labels):
            logits = model(inputs)
            loss = loss_fn(logits, labels)
            (loss * (len(labels) / len(batch_labels))).backward()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += len(labels)
        group.sum_gradients(model)
        optimizer.step()
    total_loss, correct, seen = group.sum([total_loss, correct, seen])
    return total_loss / seen, correct / seen


@torch.inference_mode()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device, group: Group = ONE_PROCESS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for every sample of `loader` (of this process's part of every batch), in order."""
    model.eval()
    logits, labels = [], []
    for inputs, batch_labels in loader:
        part = group.part(len(batch_labels))
        if part.start < part.stop:
            logits.append(model(inputs[part].to(device)).float().cpu())
            labels.append(batch_labels[part])
    return torch.cat(logits), torch.cat(labels)


def eval_step(
    model: nn.Module, loader: DataLoader, loss_fn: nn.Module, device: torch.device, group: Group = ONE_PROCESS
) -> tuple[float, float]:
    """Mean loss and accuracy over all samples of `loader` (each process of `group` scores its part)."""
    logits, labels = predict(model, loader, device, group)
    loss_sum = loss_fn(logits, labels).item() * len(labels)
    loss_sum, correct, seen = group.sum([loss_sum, (logits.argmax(dim=1) == labels).sum().item(), len(labels)])
    return loss_sum / seen, correct / seen


def train(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device,
    on_epoch: Callable[[int, dict[str, list[float]]], None] | None = None,
    history: dict[str, list[float]] | None = None,
    desc: str = "train",
    group: Group = ONE_PROCESS,
) -> dict[str, list[float]]:
    """Train for `epochs` epochs; returns per-epoch history (train and validation loss and accuracy).

    `history` continues an interrupted run: training resumes after its last epoch.
    `on_epoch(epoch, history)` is called after every epoch (1-based), e.g. to log or checkpoint.
    `group`: the processes training this model together, when more than one (`distributed`).
    """
    history = {key: list(values) for key, values in (history or {k: [] for k in HISTORY_KEYS}).items()}
    model.to(device)
    for epoch in tqdm(
        range(len(history["train_loss"]) + 1, epochs + 1),
        desc=desc,
        unit="epoch",
        initial=len(history["train_loss"]),
        total=epochs,
        disable=not group.leader,  # one progress bar per model
    ):
        train_loss, train_acc = train_step(model, train_loader, loss_fn, optimizer, device, group)
        val_loss, val_acc = eval_step(model, val_loader, loss_fn, device, group)
        for key, value in zip(HISTORY_KEYS, (train_loss, train_acc, val_loss, val_acc), strict=True):
            history[key].append(value)
        if on_epoch:
            on_epoch(epoch, history)
    return history
