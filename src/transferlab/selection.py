"""The select_best stage: every model ranked on the validation subset, the winner exported.

Every choice is made on validation; the test subset is scored once per model by evaluate and only
reported here, each test accuracy with its 95% interval (`stats.accuracy_interval`). Whether the
validation set can tell a model from the winner at all is McNemar's exact test on the validation
images (`stats.mcnemar_p`): p >= 0.05 and the two cannot be told apart. Models trained with several
seeds (equal hyperparameters but `train_seed`) are also reported as mean ± std over their seeds.

Writes the leaderboard (Markdown), the headline metrics (metrics/best.json, the only DVC metrics
file, small and flat), the test confusion plots of the winner and TinyVGG for DVC, their PR curves,
confusion and predictions figures for TensorBoard, the predictions PNG and the exported model.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferlab import data, engine, model_files, stats
from transferlab.errors import UserError
from transferlab.evaluation import logits_on, trained_model_paths
from transferlab.features import FeatureCaches
from transferlab.figures import confusion_figure, predictions_figure
from transferlab.kinds import Model
from transferlab.outputs import atomic_dir, atomic_path, write_json, write_text
from transferlab.params import Params, Resize
from transferlab.paths import SelectBestPaths
from transferlab.subsets import load as load_subsets
from transferlab.torchfiles import load_torch, save_torch
from transferlab.tracking import TensorBoardRun

ALPHA = 0.05  # McNemar p at or above it: the validation set cannot tell the model from the winner
MARK = "≈"
BASELINE = "tinyvgg"
SEED_KEY = "train_seed"


@dataclass(frozen=True)
class Row:
    """One model of the leaderboard: its evaluate metrics, its test accuracy's 95% interval and
    McNemar's p against the winner on the validation images (None for the winner itself)."""

    name: str
    metrics: dict
    interval: tuple[float, float]
    p: float | None

    @property
    def tied(self) -> bool:
        """Whether the validation set cannot tell this model from the winner."""
        return self.p is not None and self.p >= ALPHA


@dataclass(frozen=True)
class SeedGroup:
    """Models equal in every hyperparameter but `train_seed`: one configuration, several seeds."""

    label: str
    names: list[str]
    seeds: list[int]

    def mean_std(self, results: dict[str, dict], key: str) -> tuple[float, float]:
        return stats.mean_std([results[name][key] for name in self.names])


def ranking_key(metric: str):
    """Sort key: the validation metric (val_acc highest or val_loss lowest first), ties broken by
    lower validation loss, then fewer parameters, then name."""

    def key(item: tuple[str, dict]):
        m = item[1]
        primary = -m["val_acc"] if metric == "val_acc" else m["val_loss"]
        return (primary, m["val_loss"], m["total_params"], item[0])

    return key


def rank(results: dict[str, dict], metric: str) -> list[tuple[str, dict]]:
    return sorted(results.items(), key=ranking_key(metric))


def correctness(predicted: dict, split: str, name: str) -> torch.Tensor:
    """Per image of `split` (val or test), whether model `name` predicted its class."""
    return predicted[split][name].long() == predicted[f"{split}_labels"]


def compare(ranked: list[tuple[str, dict]], predicted: dict) -> list[Row]:
    """The leaderboard's rows, in ranked order: each model's test interval and, but for the winner,
    McNemar's p against the winner on the validation images."""
    winner = correctness(predicted, "val", ranked[0][0])
    rows = []
    for i, (name, metrics) in enumerate(ranked):
        test = correctness(predicted, "test", name)
        interval = stats.accuracy_interval(int(test.sum()), len(test))
        p = None if i == 0 else stats.mcnemar_p(winner.numpy(), correctness(predicted, "val", name).numpy())
        rows.append(Row(name, metrics, interval, p))
    return rows


def seed_groups(results: dict[str, dict], metric: str) -> list[SeedGroup]:
    """The configurations trained with two seeds or more, ranked by their mean validation metric."""
    members: dict[str, list[str]] = {}
    for name, metrics in sorted(results.items()):
        hparams = metrics.get("hparams", {})
        if SEED_KEY in hparams:
            config = json.dumps({k: v for k, v in hparams.items() if k != SEED_KEY}, sort_keys=True)
            members.setdefault(config, []).append(name)
    groups = [
        SeedGroup(_common_name(names), names, [results[n]["hparams"][SEED_KEY] for n in names])
        for names in members.values()
        if len(names) >= 2
    ]
    sign = -1 if metric == "val_acc" else 1
    return sorted(groups, key=lambda g: (sign * g.mean_std(results, metric)[0], g.label))


def _common_name(names: list[str]) -> str:
    """The configuration's name: the `-`-separated parts of its models' names that every one of
    them shares (what remains when the seed part is removed); its models' names if none."""
    parts = [name.split("-") for name in names]
    shared = [part for part in parts[0] if all(part in other for other in parts[1:])]
    return "-".join(shared) or ", ".join(names)


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _p_text(row: Row) -> str:
    if row.p is None:
        return "—"
    text = "<0.001" if row.p < 0.001 else f"{row.p:.3f}"
    return f"{text} {MARK}" if row.tied else text


def leaderboard_markdown(rows: list[Row], groups: list[SeedGroup], results: dict[str, dict], metric: str) -> str:
    """Every model ranked on validation, then (when some were trained with several seeds) every
    such configuration ranked by its mean."""
    lines = [
        "# Leaderboard",
        "",
        f"Ranked on the validation subset by {metric} (ties: lower val loss, then fewer parameters, then name). "
        "Test accuracy is reported with its 95% interval (Wilson) and never used to choose. "
        f"p: McNemar's exact test against #1 on the validation images; {MARK} marks a model the "
        f"validation set cannot tell apart from #1 (p ≥ {ALPHA}).",
        "",
        "| rank | model | val acc | val loss | test acc | 95% interval | p vs #1 | trainable params | total params |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    lines += [
        f"| {i} | {row.name} | {_percent(row.metrics['val_acc'])} | {row.metrics['val_loss']:.4f} "
        f"| {_percent(row.metrics['test_acc'])} | {_percent(row.interval[0])}–{_percent(row.interval[1])} "
        f"| {_p_text(row)} | {row.metrics['trainable_params']:,} | {row.metrics['total_params']:,} |"
        for i, row in enumerate(rows, start=1)
    ]
    if groups:
        lines += ["", *_seed_table(groups, results, metric)]
    return "\n".join(lines) + "\n"


def _seed_table(groups: list[SeedGroup], results: dict[str, dict], metric: str) -> list[str]:
    def spread(group: SeedGroup, key: str, fmt) -> str:
        mean, std = group.mean_std(results, key)
        return f"{fmt(mean)} ± {fmt(std)}"

    lines = [
        "## Over seeds",
        "",
        f"Configurations trained with several seeds ({SEED_KEY}), ranked by their mean {metric}: "
        "mean ± sample standard deviation over the seeds.",
        "",
        "| rank | configuration | seeds | val acc | val loss | test acc |",
        "|---:|---|---|---:|---:|---:|",
    ]
    return lines + [
        f"| {i} | {g.label} | {', '.join(map(str, g.seeds))} | {spread(g, 'val_acc', _percent)} "
        f"| {spread(g, 'val_loss', '{:.4f}'.format)} | {spread(g, 'test_acc', _percent)} |"
        for i, g in enumerate(groups, start=1)
    ]


def headline(rows: list[Row], groups: list[SeedGroup], metric: str, results: dict[str, dict]) -> dict:
    """metrics/best.json: flat, few keys, names independent of the grid (so `dvc exp show` fits a
    terminal and `dvc metrics diff` compares the headlines of two runs)."""
    winner = rows[0]
    best = {
        "name": winner.name,
        "selected_by": metric,
        "val_acc": winner.metrics["val_acc"],
        "test_acc": winner.metrics["test_acc"],
        "test_acc_low": round(winner.interval[0], 6),
        "test_acc_high": round(winner.interval[1], 6),
        "tied": sum(row.tied for row in rows),
        "models": len(rows),
        "tinyvgg_test_acc": results[BASELINE]["test_acc"],
    }
    for group in groups:
        if winner.name in group.names:
            mean, std = group.mean_std(results, "test_acc")
            best |= {"test_acc_seed_mean": round(mean, 6), "test_acc_seed_std": round(std, 6)}
    return best


def confusion_records(predicted: dict, name: str) -> list[dict]:
    """DVC's confusion plot of model `name` on the test images: one `{"actual", "predicted"}` row each."""
    classes = predicted["classes"]
    return [
        {"actual": classes[a], "predicted": classes[p]}
        for a, p in zip(predicted["test_labels"].tolist(), predicted["test"][name].tolist(), strict=True)
    ]


def shown(winner: str) -> list[str]:
    """The models drawn for the reader: the winner, and TinyVGG, the baseline, unless it won."""
    return [winner] if winner == BASELINE else [winner, BASELINE]


def select_best(params: Params, paths: SelectBestPaths, cache_dir: Path | None = None) -> dict:
    """Rank every model on validation, write the leaderboard, the headline, the confusion plots,
    the TensorBoard run and the predictions figure, and export the winner."""
    metric = params.select_best.metric
    results = json.loads(paths.evaluation_file.read_text())
    predicted = load_torch(paths.predicted_file)
    _check_same_models(results, predicted, paths)
    rows = compare(rank(results, metric), predicted)
    groups = seed_groups(results, metric)
    winner = rows[0].name
    with atomic_dir(paths.confusion_dir) as tmp:
        for name in shown(winner):
            write_json(tmp / f"{'winner' if name == winner else name}.json", confusion_records(predicted, name))
    model = _report_models(params, paths, predicted, winner, cache_dir)
    save_torch(paths.best_model_file, exported(model, winner, params.data.resize))
    write_text(paths.leaderboard_file, leaderboard_markdown(rows, groups, results, metric))
    best = headline(rows, groups, metric, results)
    write_json(paths.best_metrics_file, best)
    return best


def _check_same_models(results: dict, predicted: dict, paths: SelectBestPaths) -> None:
    missing = [name for name in results if name not in predicted["val"] or name not in predicted["test"]]
    if missing or BASELINE not in results:
        what = f"no predicted classes for {', '.join(missing)}" if missing else f"no {BASELINE}"
        raise UserError(f"{paths.evaluation_file} and {paths.predicted_file} do not match ({what}): rerun evaluate")


def _report_models(params: Params, paths: SelectBestPaths, predicted: dict, winner: str, cache_dir: Path | None):
    """The TensorBoard run (PR curves and confusion figures of the winner and TinyVGG, the winner's
    predictions) and the predictions PNG; returns the winner's model."""
    images = _test_images(paths, predicted["test_labels"])
    files = trained_model_paths(paths.tinyvgg_file, paths.transfer_dir)
    board = TensorBoardRun(paths.runs_dir)
    models, probabilities, caches = {}, {}, FeatureCaches(cache_dir)
    for name in shown(winner):
        models[name] = model_files.load(files[name])
        probabilities[name] = logits_on(models[name], images, caches, engine.select_device()).softmax(dim=1)
        _log_model(board, name, probabilities[name], predicted)
    figure = _predictions(params, images, predicted, probabilities[winner])
    board.log_figure(f"predictions/{winner}", figure)
    board.close()
    with atomic_path(paths.predictions_file) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return models[winner]


def _test_images(paths: SelectBestPaths, labels: torch.Tensor) -> np.ndarray:
    """The test subset's images, checked against the labels evaluate scored."""
    dataset = data.load(paths.dataset_dir)
    indices = load_subsets(paths.subsets_dir, "test")["test"]
    if not torch.equal(torch.as_tensor(dataset.test.labels[indices]), labels):
        raise UserError(f"{paths.predicted_file} was not scored on this test subset: rerun evaluate")
    return dataset.test.images[indices]


def _log_model(board: TensorBoardRun, name: str, probabilities: torch.Tensor, predicted: dict) -> None:
    """A model's per-class PR curves and confusion figure on the test images."""
    labels, classes = predicted["test_labels"], predicted["classes"]
    board.log_pr_curves(name, probabilities, labels, classes)
    board.log_figure(f"confusion/{name}", confusion_figure(labels, predicted["test"][name].long(), classes, name))


def _predictions(params: Params, images: np.ndarray, predicted: dict, probabilities: torch.Tensor):
    """The predictions figure on `select_best.predictions` test images drawn with the seed."""
    size = min(params.select_best.predictions, len(images))
    chosen = sorted(int(i) for i in np.random.default_rng(params.seed).choice(len(images), size=size, replace=False))
    labels = predicted["test_labels"][chosen].numpy()
    return predictions_figure(images[chosen], labels, probabilities[chosen], predicted["classes"])


def exported(model: Model, name: str, resize: Resize) -> dict:
    """The exported model: its model file (weights, class names, what rebuilds it), its name, how
    the download stage fitted images to squares (`data.resize`) and its input transform, for
    `transferlab predict` and for readers."""
    transform = repr(model.backbone.transform) if model.backbone else "uint8 / 255"
    return {**model.file, "name": name, "resize": resize, "transform": transform}
