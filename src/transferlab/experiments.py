"""Training runs on the one engine: the TinyVGG baseline and the transfer-learning grid.

Each run saves its training state after every epoch and, rerun with the same params and data,
continues from the latest saved epoch at or below its epoch count. A run with more epochs is
exactly a shorter one continued (same seed, same batch order, no schedule that depends on the
epoch count), so grid experiments that differ only in `epochs` share one training run.

TinyVGG and fine-tuned networks keep only their newest state, under `checkpoints/`, which a stage
deletes once all of its outputs are written. Frozen-backbone heads are small: every epoch's state is
kept in the machine-wide cache beside the features (`heads/`), so a later run that changes only
`epochs`, in any workspace of this machine, trains only the epochs never trained before.
"""
import contextlib
import copy
import functools
import hashlib
import itertools
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchinfo import summary

from transferlab import backbones, data, engine, models
from transferlab.cache import root as machine_cache
from transferlab.checkpoints import Checkpoints
from transferlab.features import FeatureCache
from transferlab.outputs import atomic_dir, save_torch, write_json, write_text
from transferlab.params import Params
from transferlab.subsets import load as load_subsets
from transferlab.tracking import TensorBoardRun, final_metrics, trace_graph, write_history

CHECKPOINT_DIR = Path("checkpoints")


@dataclass(frozen=True)
class Experiment:
    model: str
    train_size: int
    epochs: int

    @property
    def run_name(self) -> str:
        """TensorBoard run path, course style: 500_images/effnet_b0/5_epochs."""
        return f"{self.train_size}_images/{self.model}/{self.epochs}_epochs"

    @property
    def name(self) -> str:
        return self.run_name.replace("/", "-")


def expand_grid(params: Params) -> list[Experiment]:
    """Every combination of the grid axes `model`, `train_size`, `epochs`."""
    return [Experiment(*combo) for combo in itertools.product(params.model, params.train_size, params.epochs)]


def fit(model: nn.Module, train_set: TensorDataset, test_set: TensorDataset, settings, epochs: int,
        seed: int, device: torch.device, run: TensorBoardRun, checkpoints: Checkpoints, desc: str) -> dict:
    """Train `model` with the engine, logging to `run` and saving every epoch's state to
    `checkpoints`; continues from the latest state of the same run (fingerprint) at no more than
    `epochs` epochs. Holds the run's lock meanwhile, so concurrent processes never train one run twice."""
    generator = torch.Generator().manual_seed(seed)
    train_loader = engine.batch_loader(train_set, settings.batch_size, generator)
    test_loader = engine.batch_loader(test_set, settings.batch_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = engine.make_optimizer(settings.optimizer, trainable, settings.lr)
    fingerprint = _fingerprint(model, train_set, test_set, settings, seed)
    history = None
    with checkpoints.exclusive(fingerprint):
        fits = functools.partial(_state_fits, model=model, optimizer=optimizer, generator=generator)
        if saved := checkpoints.latest(fingerprint, epochs, valid=fits):
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["rng"])
            generator.set_state(saved["generator"])
            history = saved["history"]
            run.log_epochs(history)
            print(f"{desc}: resuming after epoch {len(history['train_loss'])}/{epochs} from "
                  f"{checkpoints.directory / fingerprint}", file=sys.stderr)

        def on_epoch(epoch: int, history: dict) -> None:
            run.log_epochs(history, first=epoch)
            checkpoints.save(fingerprint, epoch, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(), "generator": generator.get_state(), "history": history,
            })

        return engine.train(model, train_loader, test_loader, nn.CrossEntropyLoss(), optimizer, epochs,
                            device, on_epoch=on_epoch, history=history, desc=desc)


def _state_fits(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> bool:
    """Whether a saved training state can be applied to this run as it is, checked before anything
    is applied (a state that does not fit is discarded, never half-loaded)."""
    def shapes(state_dict: dict) -> dict:
        return {key: tuple(value.shape) for key, value in state_dict.items()}

    def group_sizes(optimizer_state: dict) -> list[int]:
        return [len(group["params"]) for group in optimizer_state["param_groups"]]

    try:
        epochs = {len(values) for values in state["history"].values()}
        return (shapes(state["model"]) == shapes(model.state_dict())
                and group_sizes(state["optimizer"]) == group_sizes(optimizer.state_dict())
                and state["rng"].shape == torch.get_rng_state().shape
                and state["generator"].shape == generator.get_state().shape
                and set(state["history"]) == set(engine.HISTORY_KEYS) and len(epochs) == 1)
    except (KeyError, TypeError, AttributeError):
        return False


def _fingerprint(model: nn.Module, train_set: TensorDataset, test_set: TensorDataset, settings, seed: int) -> str:
    """Identifies a run's inputs, so a checkpoint is only resumed by the same run."""
    digest = hashlib.sha256(json.dumps([repr(settings), seed, str(model)]).encode())
    for tensor in (*train_set.tensors, *test_set.tensors):
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def train_tinyvgg(params: Params, data_dir: Path, subsets_dir: Path, model_file: Path,
                  metrics_file: Path, plots_file: Path, runs_dir: Path) -> dict:
    """Train TinyVGG from scratch on the TinyVGG subset; write model, metrics, plots and TensorBoard."""
    dataset, subsets = data.load(data_dir), load_subsets(subsets_dir, "tinyvgg_train", "test")
    p = params.tinyvgg
    train_idx, test_idx = subsets["tinyvgg_train"], subsets["test"]
    train_set = TensorDataset(models.uint8_to_float(dataset.train.images[train_idx]),
                              torch.as_tensor(dataset.train.labels[train_idx]))
    test_set = TensorDataset(models.uint8_to_float(dataset.test.images[test_idx]),
                             torch.as_tensor(dataset.test.labels[test_idx]))
    image_size = dataset.train.images.shape[1]
    device = engine.select_device()
    engine.seed_everything(params.seed, device)
    model = models.TinyVGG(p.hidden_units, len(dataset.classes), image_size)
    run = TensorBoardRun(runs_dir)
    run.log_graph(trace_graph(model, test_set.tensors[0][:1]))
    checkpoints = Checkpoints(CHECKPOINT_DIR / "train_tinyvgg", keep_every_epoch=False)
    history = fit(model, train_set, test_set, p, p.epochs, params.seed, device, run, checkpoints, desc="tinyvgg")
    metrics = final_metrics(history) | models.count_parameters(model)
    run.log_hparams({"model": "tinyvgg", "train_size": len(train_idx), "epochs": p.epochs,
                     "hidden_units": p.hidden_units, "optimizer": p.optimizer, "lr": p.lr,
                     "batch_size": p.batch_size}, _hparam_metrics(metrics))
    run.close()
    save_torch(model_file, models.tinyvgg_checkpoint(model.cpu(), dataset.classes, p.hidden_units, image_size))
    write_history(plots_file, history)
    write_json(metrics_file, metrics)
    shutil.rmtree(checkpoints.directory, ignore_errors=True)
    return metrics


def _hparam_metrics(metrics: dict) -> dict[str, float]:
    return {key: metrics[key] for key in ("test_acc", "test_loss")}


def model_summaries(backbone: backbones.Backbone, n_classes: int) -> str:
    """torchinfo summaries of the pretrained model, then with frozen features and the new head."""
    size = backbone.transform.crop_size[0]
    options = dict(input_size=(1, 3, size, size), verbose=0, depth=2,
                   col_names=("input_size", "output_size", "num_params", "trainable"), row_settings=("var_names",))
    before = summary(models.TransferModel(backbone.features, backbone.imagenet_head), **options)
    frozen = copy.deepcopy(backbone.features)
    models.freeze(frozen)
    head = models.transfer_head(backbone.info.name, n_classes)
    after = summary(models.TransferModel(frozen, head), **options)
    name = backbone.info.name
    return (f"# {name}: pretrained ({backbone.info.source})\n{before}\n\n"
            f"# {name}: frozen features, new head Dropout(p={backbone.info.dropout}) + "
            f"Linear({backbone.num_features}, {n_classes})\n{after}\n")


def model_graph(backbone: backbones.Backbone, n_classes: int) -> tuple[bytes, bytes]:
    """The TensorBoard graph of the backbone with a new head, traced on the CPU (before the
    features may move to a GPU)."""
    size = backbone.transform.crop_size[0]
    model = models.TransferModel(backbone.features, models.transfer_head(backbone.info.name, n_classes))
    return trace_graph(model, torch.zeros(1, 3, size, size))


def train_transfer(params: Params, data_dir: Path, subsets_dir: Path, models_dir: Path,
                   metrics_file: Path, plots_dir: Path, runs_dir: Path, summaries_dir: Path,
                   cache_dir: Path | None = None) -> dict:
    """Run every experiment of the grid; backbone features are computed once per distinct image
    on this machine, and a rerun whose images are all cached never builds a backbone. `cache_dir`
    defaults to the machine-wide cache."""
    dataset, subsets = data.load(data_dir), load_subsets(subsets_dir, "transfer_train", "test")
    p = params.transfer
    device = engine.select_device()
    n_classes = len(dataset.classes)
    test_labels = torch.as_tensor(dataset.test.labels[subsets["test"]])
    grid = expand_grid(params)
    checkpoints = (Checkpoints(Path(cache_dir or machine_cache()) / "heads", keep_every_epoch=True) if p.freeze
                   else Checkpoints(CHECKPOINT_DIR / "train_transfer", keep_every_epoch=False))
    all_metrics = {}
    shutil.rmtree(runs_dir, ignore_errors=True)
    with contextlib.ExitStack() as stack:
        models_tmp, plots_tmp, summaries_tmp = (stack.enter_context(atomic_dir(d))
                                                for d in (models_dir, plots_dir, summaries_dir))
        for name in params.model:
            cache = FeatureCache(name, p.image_size, cache_dir)
            write_text(summaries_tmp / f"{name}.txt",
                       cache.derived(f"summary_{n_classes}_classes", lambda b: model_summaries(b, n_classes)))
            graph = cache.derived(f"graph_{n_classes}_classes", lambda b: model_graph(b, n_classes))
            train_inputs, test_inputs = _backbone_inputs(cache, dataset, subsets, p.freeze, p.batch_size, device)
            # shortest first, so a longer run of the same model and train size continues it
            for experiment in sorted((e for e in grid if e.model == name), key=lambda e: e.epochs):
                train_idx = subsets["transfer_train"][str(experiment.train_size)]
                engine.seed_everything(params.seed, device)
                head = models.transfer_head(name, n_classes)
                if p.freeze:
                    trained = saved = head
                    parameter_counts = models.frozen_transfer_parameters(name, head)
                else:
                    saved = models.TransferModel(copy.deepcopy(cache.backbone.features), head)
                    trained = nn.Sequential(cache.backbone.transform, saved)
                    parameter_counts = models.count_parameters(saved)
                train_set = TensorDataset(train_inputs(train_idx), torch.as_tensor(dataset.train.labels[train_idx]))
                run = TensorBoardRun(runs_dir / experiment.run_name)
                run.log_graph(graph)
                history = fit(trained, train_set, TensorDataset(test_inputs, test_labels), p, experiment.epochs,
                              params.seed, device, run, checkpoints, desc=experiment.name)
                metrics = final_metrics(history) | parameter_counts
                run.log_hparams({"model": name, "train_size": experiment.train_size, "epochs": experiment.epochs,
                                 "freeze": p.freeze, "optimizer": p.optimizer, "lr": p.lr,
                                 "batch_size": p.batch_size}, _hparam_metrics(metrics))
                run.close()
                save_torch(models_tmp / f"{experiment.name}.pt", models.transfer_checkpoint(
                    saved.cpu(), dataset.classes, name, p.image_size, p.freeze, dataset.train.images.shape[1]))
                write_history(plots_tmp / f"{experiment.name}.json", history)
                all_metrics[experiment.name] = metrics
        all_metrics = {e.name: all_metrics[e.name] for e in grid}
        write_json(metrics_file, all_metrics)
    if not checkpoints.keep_every_epoch:
        shutil.rmtree(checkpoints.directory, ignore_errors=True)
    return all_metrics


def _backbone_inputs(cache: FeatureCache, dataset: data.Dataset, subsets: dict, freeze: bool,
                     batch_size: int, device: torch.device):
    """(train indices -> inputs, test inputs): cached features when frozen, images when fine-tuning."""
    test_idx = subsets["test"]
    if not freeze:
        def as_batch(images: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(images).permute(0, 3, 1, 2)
        return (lambda idx: as_batch(dataset.train.images[idx])), as_batch(dataset.test.images[test_idx])
    union = sorted(set().union(*subsets["transfer_train"].values()))
    images = np.concatenate([dataset.train.images[union], dataset.test.images[test_idx]])
    features = cache.get(images, batch_size, device)
    row = {index: i for i, index in enumerate(union)}
    return (lambda idx: features[[row[i] for i in idx]]), features[len(union):]
