"""Experiment tracking: TensorBoard runs beside DVC metrics and plots files.

TensorBoard: one run directory per model (no sub-runs), its curves as `Loss/train`, `Loss/val`,
`Accuracy/train`, `Accuracy/val`, and a custom-scalars layout that draws train and validation of
each in one chart named `Loss` and `Accuracy`. evaluate, which sees every model's validation and
test scores, logs each model as an HParams session and the experiment's HParams configuration
(every hparam's discrete domain, the metrics) once (`log_hparams_config`).

DVC: curves are long-format files, one per metric (`loss.json`, `accuracy.json`), one row per
experiment, split and epoch, so one chart per metric overlays the experiments of a stage.
"""

import numbers
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from transferlab import registry
from transferlab.outputs import atomic_dir, write_json

CURVES = {"Loss": "loss", "Accuracy": "acc"}  # TensorBoard chart name -> history key suffix
SPLITS = ("train", "val")
# what the HParams dashboard compares models by: chosen on validation, reported on test
HPARAM_METRICS = ("val_acc", "val_loss", "test_acc", "test_loss")


class TensorBoardRun:
    """One TensorBoard run directory: per-epoch `Loss` and `Accuracy` (train and val), the model
    graph, hyperparameters for the HParams dashboard, and figures."""

    def __init__(self, log_dir: str | Path, fresh: bool = True):
        """`fresh`: replace what a previous run logged there (a rerun never appends); `False` adds
        to this run from another process (a worker of multi-process training)."""
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        if fresh:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        self.writer = SummaryWriter(str(self.log_dir))

    def log_epochs(self, history: dict[str, list[float]], first: int = 1) -> None:
        """Log epochs `first`.. of `history` (1-based) as `Loss/train`, `Loss/val`, ... in this run;
        the first epoch also writes the layout that shows train and validation in one chart.

        Scalars go to this run, never to a sub-run per line (`add_scalars` writes one run per line,
        five entries in TensorBoard's run list for one model)."""
        if first == 1:
            self.writer.add_custom_scalars(
                {"Curves": {chart: ["Multiline", [f"{chart}/{split}" for split in SPLITS]] for chart in CURVES}}
            )
        for epoch in range(first, len(history["train_loss"]) + 1):
            for chart, key in CURVES.items():
                for split in SPLITS:
                    self.writer.add_scalar(f"{chart}/{split}", history[f"{split}_{key}"][epoch - 1], epoch)

    def log_graph(self, traced: tuple[bytes, bytes]) -> None:
        """Write a graph from `trace_graph` (trace once, log it into every run of that model)."""
        from tensorboard.compat.proto.config_pb2 import RunMetadata
        from tensorboard.compat.proto.graph_pb2 import GraphDef

        graph_def, run_metadata = traced
        self.writer.file_writer.add_graph((GraphDef.FromString(graph_def), RunMetadata.FromString(run_metadata)))

    def log_hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        """This run as one HParams session: its hyperparameters and final metrics. Not the
        experiment's configuration (`log_hparams_config`): TensorBoard reads the first one it
        finds, so one run alone, which sees every model's values, writes it."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        _, session_start, session_end = hparams_summaries(hparams_values(hparams), {})
        self.writer.file_writer.add_summary(session_start)
        self.writer.file_writer.add_summary(session_end)
        for key, value in metrics.items():
            self.writer.add_scalar(f"hparam/{key}", value)

    def log_hparams_config(self, sessions: list[dict]) -> None:
        """The HParams experiment: every hyperparameter the `sessions` (their `log_hparams` dicts)
        have, as a discrete domain of the values they take, and the final validation and test metrics."""
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        seen: dict[str, set] = {}
        for session in sessions:
            for key, value in hparams_values(session).items():
                seen.setdefault(key, set()).add(value)
        # one type per domain, as TensorBoard requires: numbers as floats, anything mixed as text
        domains = {
            key: sorted(float(v) for v in values)
            if all(isinstance(v, numbers.Number) for v in values)
            else sorted({str(v) for v in values})
            for key, values in seen.items()
        }
        example = {key: domain[0] for key, domain in domains.items()}
        metrics = {f"hparam/{key}": 0.0 for key in HPARAM_METRICS}
        experiment, _, _ = hparams_summaries(example, metrics, domains)
        # `differs`: the dashboard shows the hparams that vary first (five by default)
        content = experiment.value[0].metadata.plugin_data
        data = HParamsPluginData.FromString(content.content)
        for info in data.experiment.hparam_infos:
            info.differs = len(domains[info.name]) > 1
        content.content = data.SerializeToString()
        self.writer.file_writer.add_summary(experiment)

    def log_figure(self, tag: str, figure) -> None:
        self.writer.add_figure(tag, figure)

    def log_pr_curves(self, model: str, probabilities: torch.Tensor, labels: torch.Tensor, classes: list[str]):
        """One precision-recall curve per class (one-vs-rest on the softmax probabilities), tagged
        `<model>/<class>` so TensorBoard groups a model's classes together."""
        for index, name in enumerate(classes):
            self.writer.add_pr_curve(f"{model}/{name}", labels == index, probabilities[:, index])

    def log_embedding(self, tag: str, features: torch.Tensor, classes: list[str], images: torch.Tensor):
        """Points for the projector: `features` (N x D), labelled with class names, each shown as
        its image (`images`: N x 3 x H x W floats in [0, 1]). Stored at 4 decimals (the projector
        reads text: full precision doubles the files and changes nothing it shows)."""
        self.writer.add_embedding(features.double().round(decimals=4), metadata=classes, label_img=images, tag=tag)

    def close(self) -> None:
        self.writer.close()


def trace_graph(model: nn.Module, example_input: torch.Tensor) -> tuple[bytes, bytes]:
    """The model graph as SummaryWriter.add_graph builds it (GraphDef, RunMetadata), serialised so
    it can be cached: tracing a backbone takes seconds, so it is traced once and reused.

    The model is traced once without `check_trace` (add_graph's trace reruns the model twice to
    check it, and only warns), then add_graph's converter traces the compiled module; the
    GraphDef is the same, in less time."""
    from torch.utils.tensorboard._pytorch_graph import graph

    was_training = model.training
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches
        traced = torch.jit.trace(model, example_input, check_trace=False)
        graph_def, run_metadata = graph(traced, example_input)
    model.train(was_training)
    return graph_def.SerializeToString(), run_metadata.SerializeToString()


def final_metrics(history: dict[str, list[float]]) -> dict[str, float]:
    return {key: round(values[-1], 6) for key, values in history.items()}


def curve_records(histories: dict[str, dict[str, list[float]]], key: str) -> list[dict]:
    """Long-format rows of one metric (`loss` or `acc`) for DVC plots: one per experiment, split
    and epoch, `{"experiment", "split", "epoch", <key>}`; a chart colours by experiment and dashes
    by split."""
    return [
        {"experiment": name, "split": split, "epoch": epoch, key: value}
        for name, history in histories.items()
        for split in SPLITS
        for epoch, value in enumerate(history[f"{split}_{key}"], start=1)
    ]


def write_curves(directory: str | Path, histories: dict[str, dict[str, list[float]]]) -> None:
    """`loss.json` and `accuracy.json` in `directory` (replaced as a whole): every experiment's
    per-epoch curves, one file per metric so that loss and accuracy never share a chart's axis."""
    with atomic_dir(directory) as tmp:
        for chart, key in CURVES.items():
            write_json(tmp / f"{chart.lower()}.json", curve_records(histories, key))


def hparams_values(hparams: dict) -> dict:
    """`hparams` as the HParams dashboard takes them: numbers and strings (a bool as `true`/`false`,
    which TensorBoard would otherwise show as 0/1); unset values left out."""
    return {
        key: str(value).lower() if isinstance(value, bool) else value
        for key, value in hparams.items()
        if isinstance(value, str | numbers.Number)
    }


def accuracy_by_train_size(results: dict[str, dict], baselines: set[str]) -> list[dict]:
    """Rows for the summary chart, test accuracy against train size, `{"model", "train_size",
    "val_acc", "test_acc", "kind"}`: per pretrained backbone (and depth trained, `registry.label`)
    and train size, its experiment with the best validation accuracy over the grid's other axes
    (chosen on validation, its test accuracy reported); each of the `baselines` (models trained
    from scratch, TinyVGG) as a level across those train sizes, labelled with the images it
    trained on. `results`: each model's scores with its `hparams`, by name."""
    best: dict[tuple[str, int], dict] = {}
    for name in results.keys() - baselines:
        hparams = results[name]["hparams"]
        key = (registry.label(hparams["model"], hparams.get("trainable_stages", 0)), hparams["train_size"])
        if key not in best or results[name]["val_acc"] > best[key]["val_acc"]:
            best[key] = results[name]
    sizes = sorted({size for _, size in best})
    rows = [
        {"model": model, "train_size": size, "val_acc": m["val_acc"], "test_acc": m["test_acc"], "kind": "transfer"}
        for (model, size), m in sorted(best.items())
    ]
    for name in sorted(baselines & results.keys()):
        m, hparams = results[name], results[name]["hparams"]
        label = f"{hparams['model']} ({hparams['train_size']:,} images, from scratch)"
        rows += [
            {"model": label, "train_size": size, "val_acc": m["val_acc"], "test_acc": m["test_acc"], "kind": "baseline"}
            for size in sizes
        ]
    return rows


def print_metrics(results: dict[str, dict]) -> None:
    """One line per model on stdout: its final validation accuracy and loss."""
    for name, metrics in results.items():
        print(f"{name}: val_acc {metrics['val_acc']:.4f}, val_loss {metrics['val_loss']:.4f}")
