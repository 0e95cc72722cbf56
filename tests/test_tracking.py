"""TensorBoard runs, cached graphs and DVC plots files."""

import json

import torch
from torch import nn
from torch.utils.tensorboard._pytorch_graph import graph

from helpers.tensorboard import events
from transferlab.tracking import TensorBoardRun, final_metrics, trace_graph, write_history


def small_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * 6 * 6, 3)
    )


def test_trace_graph_is_what_add_graph_builds_and_keeps_the_mode():
    model, example = small_model(), torch.zeros(1, 3, 8, 8)
    graph_def, run_metadata = trace_graph(model, example)
    expected_def, expected_metadata = graph(model, example)
    assert graph_def == expected_def.SerializeToString()
    assert run_metadata == expected_metadata.SerializeToString()
    assert model.training
    model.eval()
    trace_graph(model, example)
    assert not model.training


def test_run_logs_graph_epochs_and_hparams(tmp_path):
    history = {
        "train_loss": [2.0, 1.5, 1.0],
        "train_acc": [0.1, 0.2, 0.3],
        "test_loss": [2.1, 1.6, 1.2],
        "test_acc": [0.1, 0.25, 0.35],
    }
    (tmp_path / "run" / "stale").mkdir(parents=True)
    run = TensorBoardRun(tmp_path / "run")
    assert not (tmp_path / "run" / "stale").exists(), "a rerun replaces the run"
    run.log_graph(trace_graph(small_model(), torch.zeros(1, 3, 8, 8)))
    run.log_epochs({key: values[:1] for key, values in history.items()})
    run.log_epochs(history, first=2)
    run.log_hparams({"model": "small", "epochs": 3}, {"test_acc": 0.35})
    run.close()
    assert [node.op for node in events(tmp_path / "run").Graph().node if node.op]
    loss = events(tmp_path / "run" / "Loss_test").Scalars("Loss")
    assert [(e.step, round(e.value, 4)) for e in loss] == [(1, 2.1), (2, 1.6), (3, 1.2)]
    assert "_hparams_/session_start_info" in events(tmp_path / "run").PluginTagToContent("hparams")


def test_history_files_and_final_metrics(tmp_path):
    history = {"train_loss": [2.0, 1.0], "test_acc": [0.25, 0.123456789]}
    write_history(tmp_path / "plots.json", history)
    assert json.loads((tmp_path / "plots.json").read_text()) == [
        {"epoch": 1, "train_loss": 2.0, "test_acc": 0.25},
        {"epoch": 2, "train_loss": 1.0, "test_acc": 0.123456789},
    ]
    assert final_metrics(history) == {"train_loss": 1.0, "test_acc": 0.123457}
