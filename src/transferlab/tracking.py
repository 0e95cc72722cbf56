"""Experiment tracking: TensorBoard runs beside DVC metrics and plots files."""

import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from transferlab.outputs import write_json


class TensorBoardRun:
    """One TensorBoard run directory: per-epoch `Loss` and `Accuracy` (train and test), the model
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
        """Log epochs `first`.. of `history` (1-based)."""
        for epoch in range(first, len(history["train_loss"]) + 1):
            row = {key: values[epoch - 1] for key, values in history.items()}
            self.writer.add_scalars("Loss", {"train": row["train_loss"], "test": row["test_loss"]}, epoch)
            self.writer.add_scalars("Accuracy", {"train": row["train_acc"], "test": row["test_acc"]}, epoch)

    def log_graph(self, traced: tuple[bytes, bytes]) -> None:
        """Write a graph from `trace_graph` (trace once, log it into every run of that model)."""
        from tensorboard.compat.proto.config_pb2 import RunMetadata
        from tensorboard.compat.proto.graph_pb2 import GraphDef

        graph_def, run_metadata = traced
        self.writer.file_writer.add_graph((GraphDef.FromString(graph_def), RunMetadata.FromString(run_metadata)))

    def log_hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")

    def log_figure(self, tag: str, figure) -> None:
        self.writer.add_figure(tag, figure)

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


def history_records(history: dict[str, list[float]]) -> list[dict[str, float]]:
    """Per-epoch rows for a DVC plots file: [{"epoch": 1, "train_loss": ..., ...}, ...]."""
    keys = list(history)
    return [
        {"epoch": epoch, **{key: history[key][epoch - 1] for key in keys}}
        for epoch in range(1, len(history[keys[0]]) + 1)
    ]


def final_metrics(history: dict[str, list[float]]) -> dict[str, float]:
    return {key: round(values[-1], 6) for key, values in history.items()}


def write_history(path: str | Path, history: dict[str, list[float]]) -> None:
    write_json(path, history_records(history))


def print_metrics(results: dict[str, dict]) -> None:
    """One line per model on stdout: its final test accuracy and loss."""
    for name, metrics in results.items():
        print(f"{name}: test_acc {metrics['test_acc']:.4f}, test_loss {metrics['test_loss']:.4f}")
