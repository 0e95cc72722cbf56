"""The select_best stage: rank every model, export the best, draw its predictions."""

import json
from pathlib import Path

import numpy as np

from transferlab import data, engine, model_files
from transferlab.evaluation import logits_on, trained_model_paths
from transferlab.figures import predictions_figure
from transferlab.kinds import Model
from transferlab.outputs import atomic_path, write_json, write_text
from transferlab.params import Params
from transferlab.paths import SelectBestPaths
from transferlab.subsets import load as load_subsets
from transferlab.torchfiles import save_torch
from transferlab.tracking import TensorBoardRun


def ranking_key(metric: str):
    """Sort key: the chosen metric first, ties broken by lower loss, then fewer parameters."""

    def key(item: tuple[str, dict]):
        m = item[1]
        primary = -m["test_acc"] if metric == "test_acc" else m["test_loss"]
        return (primary, m["test_loss"], m["total_params"], item[0])

    return key


def rank(results: dict[str, dict], metric: str) -> list[tuple[str, dict]]:
    return sorted(results.items(), key=ranking_key(metric))


def leaderboard_markdown(ranked: list[tuple[str, dict]], metric: str) -> str:
    lines = [
        f"# Leaderboard (sorted by {metric}; ties: lower loss, then fewer parameters)",
        "",
        "| rank | experiment | test acc | test loss | trainable params | total params |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {i} | {name} | {m['test_acc']:.2%} | {m['test_loss']:.4f} | {m['trainable_params']:,} "
        f"| {m['total_params']:,} |"
        for i, (name, m) in enumerate(ranked, start=1)
    ]
    return "\n".join(lines) + "\n"


def select_best(params: Params, paths: SelectBestPaths, cache_dir: Path | None = None) -> dict:
    """Pick the best model by `select_best.metric`, export it, write the leaderboard, the headline
    metrics and a predictions figure."""
    metric = params.select_best.metric
    results = json.loads(paths.evaluation_file.read_text())
    ranked = rank(results, metric)
    best_name, best_metrics = ranked[0]
    model = model_files.load(trained_model_paths(paths.tinyvgg_file, paths.transfer_dir)[best_name])
    figure = _predictions(model, paths, params, cache_dir)
    with atomic_path(paths.predictions_file) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    board = TensorBoardRun(paths.runs_dir)
    board.log_figure(f"predictions/{best_name}", figure)
    board.close()
    save_torch(paths.best_model_file, exported(model, best_name))
    write_text(paths.leaderboard_file, leaderboard_markdown(ranked, metric))
    # flat, with names that do not depend on the grid: `dvc exp show --sort-by` ranks a sweep by them
    best = {
        "name": best_name,
        "selected_by": metric,
        **{k: v for k, v in best_metrics.items() if k != "per_class_acc"},
        "tinyvgg_test_acc": results["tinyvgg"]["test_acc"],
    }
    write_json(paths.best_metrics_file, best)
    return best


def exported(model: Model, name: str) -> dict:
    """The exported model: its model file (weights, class names, what rebuilds it), its name and
    its input transform, for `transferlab predict` and for readers."""
    transform = repr(model.backbone.transform) if model.backbone else "uint8 / 255"
    return {**model.file, "name": name, "transform": transform}


def _predictions(model: Model, paths: SelectBestPaths, params: Params, cache_dir: Path | None):
    """The predictions figure on `select_best.predictions` test images drawn with the seed."""
    dataset = data.load(paths.dataset_dir)
    test_idx = load_subsets(paths.subsets_dir, "test")["test"]
    size = min(params.select_best.predictions, len(test_idx))
    chosen = sorted(np.random.default_rng(params.seed).choice(test_idx, size=size, replace=False))
    images, labels = dataset.test.images[chosen], dataset.test.labels[chosen]
    probabilities = logits_on(model, images, cache_dir, engine.select_device()).softmax(dim=1)
    return predictions_figure(images, labels, probabilities, model.classes)
