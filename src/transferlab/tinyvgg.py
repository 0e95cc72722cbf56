"""The train_tinyvgg stage: the from-scratch baseline on the TinyVGG subset, at native resolution.

Its newest training state is kept under `checkpoints/train_tinyvgg/` (a resume point for an
interrupted run), deleted once all of the stage's outputs are written.
"""

import shutil
from pathlib import Path

import torch

from transferlab import data, engine
from transferlab.checkpoints import Checkpoints
from transferlab.kinds import TinyVGGModel
from transferlab.outputs import write_json
from transferlab.params import Params
from transferlab.paths import TinyVGGPaths
from transferlab.subsets import load as load_subsets
from transferlab.torchfiles import save_torch
from transferlab.tracking import TensorBoardRun, final_metrics, trace_graph, write_curves
from transferlab.training import TrainingRun, fit

CHECKPOINTS = Path("checkpoints/train_tinyvgg")


def train_tinyvgg(params: Params, paths: TinyVGGPaths) -> dict:
    """Train TinyVGG from scratch, validating every epoch on the validation subset; write model,
    metrics, plots and its TensorBoard run."""
    dataset = data.load(paths.dataset_dir)
    subsets = load_subsets(paths.subsets_dir, "tinyvgg_train", "val")
    train_set = _tensors(dataset.train, subsets["tinyvgg_train"])
    val_set = _tensors(dataset.train, subsets["val"])
    p = params.tinyvgg
    image_size = dataset.train.images.shape[1]
    device = engine.select_device()
    engine.seed_everything(params.seed, device)
    model = TinyVGGModel.new(dataset.classes, p.hidden_units, image_size)
    board = TensorBoardRun(paths.runs_dir)
    board.log_graph(trace_graph(model.scorer, val_set[[0]][0]))
    checkpoints = Checkpoints(CHECKPOINTS, keep_every_epoch=False)
    run = TrainingRun(model.scorer, train_set, val_set, p, params.seed, params.processes)
    history = fit(run, p.epochs, device, board, checkpoints, desc="tinyvgg")
    metrics = final_metrics(history) | model.parameter_counts()
    hparams = {
        "model": "tinyvgg",
        "train_size": len(train_set),
        "epochs": p.epochs,
        "hidden_units": p.hidden_units,
        "optimizer": p.optimizer,
        "lr": p.lr,
        "weight_decay": p.weight_decay,
        "batch_size": p.batch_size,
        "processes": params.processes,
        "seed": params.seed,
    }
    board.close()
    save_torch(paths.model_file, model.model_file(hparams))  # hparams: for evaluate's HParams and summary
    write_curves(paths.plots_dir, {"tinyvgg": history})
    write_json(paths.metrics_file, metrics)
    shutil.rmtree(checkpoints.directory, ignore_errors=True)
    return metrics


def _tensors(split: data.Split, indices: list[int]) -> engine.ConvertedDataset:
    """TinyVGG's inputs (floats in [0, 1], made a batch at a time from the uint8 pixels) and labels
    for `indices` of a split."""
    images, labels = torch.as_tensor(split.images[indices]), torch.as_tensor(split.labels[indices])
    return engine.ConvertedDataset(images, labels, TinyVGGModel.inputs_of)
