"""The train_transfer stage: the grid of pretrained backbones with new heads, on the one engine.

Every combination of the axes `model`, `trainable_stages`, `train_size`, `epochs`, `lr`,
`weight_decay` and `train_seed` is one experiment, validated every epoch on the validation subset.
Per backbone and depth, every distinct image the grid needs (train and validation) goes through the
backbone (its frozen part) once (when frozen: see `transfer_kinds`), then each experiment trains on
those inputs. Experiments that differ only in `epochs` share one training run: the shortest trains
first, and the next continues from its saved state (`training.fit`).
"""

import copy
import dataclasses
import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchinfo import summary

from transferlab import backbones, data, engine, networks, registry, runtimes
from transferlab.features import FeatureCache
from transferlab.outputs import atomic_dir, write_json, write_text
from transferlab.params import Params, TrainingParams
from transferlab.paths import TransferPaths
from transferlab.subsets import load as load_subsets
from transferlab.torchfiles import save_torch
from transferlab.tracking import TensorBoardRun, final_metrics, trace_graph, write_curves
from transferlab.training import TrainingRun, fit
from transferlab.transfer_kinds import TransferKind, kind_of


@dataclass(frozen=True)
class Experiment:
    """One point of the grid; its name holds every axis, so it never changes when the grid does."""

    model: str
    train_size: int
    epochs: int
    trainable_stages: int = 0
    lr: float = 0.001
    weight_decay: float = 0.0
    train_seed: int = 42

    @property
    def backbone_label(self) -> str:
        return registry.label(self.model, self.trainable_stages)

    @property
    def run_name(self) -> str:
        """TensorBoard run path, course style: 500_images/effnet_b0/lr_0.001-wd_0-seed_42/5_epochs."""
        optimisation = f"lr_{self.lr:g}-wd_{self.weight_decay:g}-seed_{self.train_seed}"
        return f"{self.train_size}_images/{self.backbone_label}/{optimisation}/{self.epochs}_epochs"

    @property
    def name(self) -> str:
        return self.run_name.replace("/", "-")


def expand_grid(params: Params) -> list[Experiment]:
    """Every combination of the grid axes."""
    axes = itertools.product(
        params.model,
        params.trainable_stages,
        params.train_size,
        params.epochs,
        params.lr,
        params.weight_decay,
        params.train_seed,
    )
    return [
        Experiment(model, size, epochs, stages, lr, weight_decay, seed)
        for model, stages, size, epochs, lr, weight_decay, seed in axes
    ]


def train_transfer(params: Params, paths: TransferPaths, cache_dir: Path | None = None) -> dict[str, dict]:
    """Run every experiment of the grid; write models, metrics, plots, TensorBoard runs and model
    summaries. `cache_dir`: the machine-wide cache, by default `cache.root()`."""
    grid = expand_grid(params)
    context = GridContext(params, paths, cache_dir)
    results, histories = {}, {}
    shutil.rmtree(paths.runs_dir, ignore_errors=True)
    with atomic_dir(paths.models_dir) as models_dir, atomic_dir(paths.summaries_dir) as summaries_dir:
        for name, stages in itertools.product(params.model, params.trainable_stages):
            backbone = BackboneRuns(context, name, stages)
            write_text(summaries_dir / f"{backbone.label}.txt", backbone.summary)
            runs = (e for e in grid if (e.model, e.trainable_stages) == (name, stages))
            # shortest first, so a longer run of the same model and train size continues it
            for experiment in sorted(runs, key=lambda e: e.epochs):
                model, histories[experiment.name], results[experiment.name] = backbone.train(experiment)
                save_torch(models_dir / f"{experiment.name}.pt", model.model_file(backbone.hparams(experiment)))
        results = {e.name: results[e.name] for e in grid}  # in grid order, not training order
        write_curves(paths.plots_dir, {e.name: histories[e.name] for e in best_per_backbone_and_size(grid, results)})
        write_json(paths.metrics_file, results)
    for kind, states in context.training_states.items():
        if not kind.keeps_training_states:
            shutil.rmtree(states.directory, ignore_errors=True)
    return results


def best_per_backbone_and_size(grid: list[Experiment], results: dict[str, dict]) -> list[Experiment]:
    """Per backbone (and depth) and train size, the experiment with the best final validation
    accuracy: the curves DVC plots, a handful of lines whatever the other axes' sizes (TensorBoard
    has every experiment's)."""
    best: dict[tuple[str, int], Experiment] = {}
    for experiment in grid:
        key = (experiment.backbone_label, experiment.train_size)
        if key not in best or results[experiment.name]["val_acc"] > results[best[key].name]["val_acc"]:
            best[key] = experiment
    return list(best.values())


def log_graph_once(run_dir: Path, graph: tuple[bytes, bytes]) -> None:
    """A backbone's graph with its new head in a run of its own (`graphs/<label>`), once, not in
    every experiment's run."""
    board = TensorBoardRun(run_dir)
    board.log_graph(graph)
    board.close()


class GridContext:
    """What every experiment of the grid shares: params, data, subsets, device, training states."""

    def __init__(self, params: Params, paths: TransferPaths, cache_dir: Path | None):
        self.params, self.paths, self.cache_dir = params, paths, cache_dir
        self.dataset = data.load(paths.dataset_dir)
        self.subsets = load_subsets(paths.subsets_dir, "transfer_train", "val")
        self.device = engine.select_device()
        self.kinds = {stages: kind_of(params.transfer.freeze, stages) for stages in params.trainable_stages}
        # Fine-tuning trains in PyTorch; the runtime choice is about frozen features.
        self.runtime = (
            runtimes.resolve(params.transfer.runtime, self.device) if params.transfer.freeze else runtimes.TORCH
        )
        self.training_states = {kind: kind.training_states(cache_dir, params.epochs) for kind in self.kinds.values()}

    @property
    def n_classes(self) -> int:
        return len(self.dataset.classes)


class BackboneRuns:
    """The experiments of one backbone with its last `stages` stages trainable: each distinct
    image's inputs made once, then training."""

    def __init__(self, context: GridContext, name: str, stages: int):
        self.context, self.name, self.stages = context, name, stages
        self.label = registry.label(name, stages)
        p, n_classes = context.params.transfer, context.n_classes
        self.cache = FeatureCache(
            name,
            p.image_size,
            context.cache_dir,
            runtime=context.runtime,
            processes=context.params.processes,
            trainable_stages=stages,
        )
        self.kind: type[TransferKind] = context.kinds[stages]
        self.kind.prepare(self.cache)
        self.training_states = context.training_states[self.kind]
        data_image_size = context.dataset.train.images.shape[1]
        self.config = self.kind.make_config(name, p.image_size, data_image_size, context.runtime, stages)
        # Summary and graph first: they are traced on the CPU, before the inputs may move it to a GPU.
        self.summary = self.cache.derived(
            f"summary_{n_classes}_classes{self.cache.boundary}", lambda b: model_summaries(b, n_classes, stages)
        )
        graph = self.cache.derived(f"graph_{n_classes}_classes", lambda b: model_graph(b, n_classes))
        log_graph_once(context.paths.runs_dir / "graphs" / self.label, graph)
        # every train image of the grid and the validation images, each through the backbone once
        rows = sorted(set().union(*context.subsets["transfer_train"].values())) + context.subsets["val"]
        train = context.dataset.train
        self.inputs = self.kind.inputs_of(self.cache, train.images[rows], p.batch_size, context.device)
        self.row = {index: i for i, index in enumerate(rows)}
        self.val_set = self.subset(context.subsets["val"])

    def subset(self, indices: list[int]) -> TensorDataset:
        """The inputs and labels of train-split `indices`."""
        labels = torch.as_tensor(self.context.dataset.train.labels[indices])
        return TensorDataset(self.inputs[[self.row[i] for i in indices]], labels)

    def train(self, experiment: Experiment) -> tuple[TransferKind, dict, dict]:
        """Train one experiment (continuing a shorter one of the same run); its model, history
        and final metrics."""
        context, seed, p = self.context, experiment.train_seed, self.context.params.transfer
        train_set = self.subset(context.subsets["transfer_train"][str(experiment.train_size)])
        engine.seed_everything(seed, context.device)
        model = self.kind.new(self.cache, context.dataset.classes, self.config)
        board = TensorBoardRun(context.paths.runs_dir / experiment.run_name)
        # Heads train in one process (seconds); whole networks on `processes`.
        processes = 1 if p.freeze else context.params.processes
        settings = TrainingParams(p.batch_size, p.optimizer, experiment.lr, experiment.weight_decay)
        history = fit(
            TrainingRun(model.scorer, train_set, self.val_set, settings, seed, processes),
            experiment.epochs,
            context.device,
            board,
            self.training_states,
            desc=experiment.name,
        )
        metrics = final_metrics(history) | model.parameter_counts()
        board.close()
        return model, history, metrics

    def hparams(self, experiment: Experiment) -> dict:
        """The experiment's hyperparameters (its grid axes, then the shared settings), carried in its
        model file so that later stages (HParams, the leaderboard) know them without parsing names."""
        p = self.context.params.transfer
        return dataclasses.asdict(experiment) | {
            "freeze": p.freeze,
            "runtime": self.context.runtime,
            "optimizer": p.optimizer,
            "batch_size": p.batch_size,
            "processes": self.context.params.processes,
        }


def model_summaries(backbone: backbones.Backbone, n_classes: int, trainable_stages: int = 0) -> str:
    """torchinfo summaries of the pretrained model, then with frozen features (but for the last
    `trainable_stages` stages) and the new head."""
    size = backbone.transform.crop_size[0]
    options = dict(
        input_size=(1, 3, size, size),
        verbose=0,
        depth=2,
        col_names=("input_size", "output_size", "num_params", "trainable"),
        row_settings=("var_names",),
    )
    before = summary(networks.TransferModel(backbone.features, backbone.imagenet_head), **options)
    frozen = copy.deepcopy(backbone.features)
    networks.freeze(frozen)
    if trainable_stages:
        networks.set_trainable(backbones.split(frozen, trainable_stages)[1], True)
    head = networks.transfer_head(backbone.info.name, n_classes)
    after = summary(networks.TransferModel(frozen, head), **options)
    name = backbone.info.name
    trained = f" but the last {trainable_stages} stages and the conv head" if trainable_stages else ""
    return (
        f"# {name}: pretrained ({backbone.info.source})\n{before}\n\n"
        f"# {name}: frozen features{trained}, new head Dropout(p={backbone.info.dropout}) + "
        f"Linear({backbone.num_features}, {n_classes})\n{after}\n"
    )


def model_graph(backbone: backbones.Backbone, n_classes: int) -> tuple[bytes, bytes]:
    """The TensorBoard graph of the backbone with a new head, traced on the CPU (before the
    features may move to a GPU)."""
    size = backbone.transform.crop_size[0]
    model = networks.TransferModel(backbone.features, networks.transfer_head(backbone.info.name, n_classes))
    return trace_graph(model, torch.zeros(1, 3, size, size))
