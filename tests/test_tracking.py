"""TensorBoard runs, cached graphs and DVC plots files."""

import json

import pytest
import torch
from torch import nn
from torch.utils.tensorboard._pytorch_graph import graph

from helpers.tensorboard import events
from transferlab.tracking import (
    TensorBoardRun,
    accuracy_by_train_size,
    final_metrics,
    trace_graph,
    write_curves,
)

HISTORY = {
    "train_loss": [2.0, 1.5, 1.0],
    "train_acc": [0.1, 0.2, 0.3],
    "val_loss": [2.1, 1.6, 1.2],
    "val_acc": [0.1, 0.25, 0.35],
}


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


def test_run_logs_graph_epochs_and_hparams_in_one_run(tmp_path):
    (tmp_path / "run" / "stale").mkdir(parents=True)
    run = TensorBoardRun(tmp_path / "run")
    assert not (tmp_path / "run" / "stale").exists(), "a rerun replaces the run"
    run.log_graph(trace_graph(small_model(), torch.zeros(1, 3, 8, 8)))
    run.log_epochs({key: values[:1] for key, values in HISTORY.items()})
    run.log_epochs(HISTORY, first=2)
    run.log_hparams(
        {"model": "small", "epochs": 3, "freeze": True, "image_size": None}, {"val_acc": 0.35, "test_acc": 0.3}
    )
    run.close()
    assert [p.name for p in (tmp_path / "run").iterdir() if p.is_dir()] == [], "no sub-run per line"
    board = events(tmp_path / "run")
    assert [node.op for node in board.Graph().node if node.op]
    assert [(e.step, round(e.value, 4)) for e in board.Scalars("Loss/val")] == [(1, 2.1), (2, 1.6), (3, 1.2)]
    assert [(e.step, round(e.value, 4)) for e in board.Scalars("Accuracy/val")] == [(1, 0.1), (2, 0.25), (3, 0.35)]
    assert [e.value for e in board.Scalars("Accuracy/train")] == pytest.approx([0.1, 0.2, 0.3])
    assert not {tag for tag in board.Tags()["scalars"] if tag.endswith("/test")}, "training never sees the test set"
    assert [e.value for e in board.Scalars("hparam/val_acc")] == pytest.approx([0.35])
    assert [e.value for e in board.Scalars("hparam/test_acc")] == pytest.approx([0.3])
    assert custom_scalar_charts(tmp_path / "run") == {
        "Loss": ["Loss/train", "Loss/val"],
        "Accuracy": ["Accuracy/train", "Accuracy/val"],
    }
    hparams = board.PluginTagToContent("hparams")
    assert "_hparams_/experiment" not in hparams, "the experiment's configuration is written once, elsewhere"
    start = plugin_data(hparams["_hparams_/session_start_info"]).session_start_info.hparams
    assert {k: v.WhichOneof("kind") for k, v in start.items()} == {
        "model": "string_value",
        "epochs": "number_value",
        "freeze": "string_value",  # true/false, not 1/0
    }
    assert start["freeze"].string_value == "true"


def test_hparams_config_has_every_value_as_a_discrete_domain(tmp_path):
    run = TensorBoardRun(tmp_path / "run")
    run.log_hparams_config(
        [
            {"model": "tinyvgg", "train_size": 100, "epochs": 10, "hidden_units": 10, "lr": 0.001},
            {"model": "effnet_lite0", "train_size": 20, "epochs": 5, "freeze": True, "lr": 0.001},
            {"model": "effnet_lite2", "train_size": 20, "epochs": 10, "freeze": True, "lr": 0.01},
        ]
    )
    run.close()
    content = events(tmp_path / "run").PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data(content).experiment
    domains = {
        info.name: [getattr(v, v.WhichOneof("kind")) for v in info.domain_discrete.values]
        for info in experiment.hparam_infos
    }
    assert domains == {
        "model": ["effnet_lite0", "effnet_lite2", "tinyvgg"],
        "train_size": [20, 100],
        "epochs": [5, 10],
        "hidden_units": [10],
        "lr": [0.001, 0.01],
        "freeze": ["true"],
    }
    differs = {info.name for info in experiment.hparam_infos if info.differs}
    assert differs == {"model", "train_size", "epochs", "lr"}, "shown first by the dashboard"
    assert [m.name.tag for m in experiment.metric_infos] == [  # chosen on validation, reported on test
        "hparam/val_acc",
        "hparam/val_loss",
        "hparam/test_acc",
        "hparam/test_loss",
    ]


def test_pr_curves_and_embedding(tmp_path):
    run = TensorBoardRun(tmp_path / "run")
    labels = torch.tensor([0, 1, 1, 0])
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    run.log_pr_curves("m", probabilities, labels, ["cat", "dog"])
    run.log_embedding(
        "feats", torch.arange(8.0).reshape(4, 2) / 3, ["cat", "dog", "dog", "cat"], torch.rand(4, 3, 8, 8)
    )
    run.close()
    assert sorted(events(tmp_path / "run").PluginTagToContent("pr_curves")) == ["m/cat", "m/dog"]
    config = (tmp_path / "run" / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "feats:00000"' in config and "sprite.png" in config
    folder = next((tmp_path / "run").glob("*/feats"))
    assert (folder / "metadata.tsv").read_text().split() == ["cat", "dog", "dog", "cat"]
    rows = [line.split("\t") for line in (folder / "tensors.tsv").read_text().splitlines()]
    assert rows[1] == ["0.6667", "1.0"], "4 decimals"


def test_curve_files_one_per_metric_in_long_format(tmp_path):
    write_curves(tmp_path / "plots", {"a": HISTORY, "b": {k: v[:1] for k, v in HISTORY.items()}})
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["accuracy.json", "loss.json"]
    loss = json.loads((tmp_path / "plots" / "loss.json").read_text())
    assert loss[:4] == [
        {"experiment": "a", "split": "train", "epoch": 1, "loss": 2.0},
        {"experiment": "a", "split": "train", "epoch": 2, "loss": 1.5},
        {"experiment": "a", "split": "train", "epoch": 3, "loss": 1.0},
        {"experiment": "a", "split": "val", "epoch": 1, "loss": 2.1},
    ]
    assert {row["split"] for row in loss} == {"train", "val"}
    assert len(loss) == 2 * 3 + 2 * 1
    accuracy = json.loads((tmp_path / "plots" / "accuracy.json").read_text())
    assert {row["experiment"] for row in accuracy} == {"a", "b"} and all("loss" not in row for row in accuracy)


def scored(model, train_size, val_acc, test_acc, **hparams) -> dict:
    """One model's entry of evaluate's results: its scores and its hyperparameters."""
    return {"val_acc": val_acc, "test_acc": test_acc, "hparams": {"model": model, "train_size": train_size, **hparams}}


def test_accuracy_by_train_size_takes_each_backbones_best_on_validation_and_the_baseline_level():
    results = {
        "tinyvgg": scored("tinyvgg", 10000, 0.52, 0.5),
        "500-lite0-5": scored("lite0", 500, 0.61, 0.6),
        "500-lite0-10": scored("lite0", 500, 0.66, 0.65),
        "1000-lite0-5": scored("lite0", 1000, 0.69, 0.7),
        "500-lite2-5": scored("lite2", 500, 0.63, 0.62),
    }
    assert accuracy_by_train_size(results, {"tinyvgg"}) == [
        {"model": "lite0", "train_size": 500, "val_acc": 0.66, "test_acc": 0.65, "kind": "transfer"},
        {"model": "lite0", "train_size": 1000, "val_acc": 0.69, "test_acc": 0.7, "kind": "transfer"},
        {"model": "lite2", "train_size": 500, "val_acc": 0.63, "test_acc": 0.62, "kind": "transfer"},
        {
            "model": "tinyvgg (10,000 images, from scratch)",
            "train_size": 500,
            "val_acc": 0.52,
            "test_acc": 0.5,
            "kind": "baseline",
        },
        {
            "model": "tinyvgg (10,000 images, from scratch)",
            "train_size": 1000,
            "val_acc": 0.52,
            "test_acc": 0.5,
            "kind": "baseline",
        },
    ]


def test_accuracy_by_train_size_chooses_on_validation_never_on_test():
    """The experiment with the best validation accuracy is reported with its test accuracy, even
    when another experiment of the same backbone and size scored higher on test."""
    results = {
        "lr_0.01": scored("lite0", 500, 0.70, 0.60, lr=0.01),
        "lr_0.001": scored("lite0", 500, 0.65, 0.68, lr=0.001),
        "lr_0.0001": scored("lite0", 500, 0.55, 0.69, lr=0.0001),
    }
    assert accuracy_by_train_size(results, set()) == [
        {"model": "lite0", "train_size": 500, "val_acc": 0.70, "test_acc": 0.60, "kind": "transfer"}
    ]


def test_accuracy_by_train_size_draws_each_depth_trained_as_a_line_of_its_own():
    results = {
        "frozen": scored("effnet_lite0", 500, 0.67, 0.66, trainable_stages=0),
        "last_stage": scored("effnet_lite0", 500, 0.72, 0.71, trainable_stages=1),
    }
    assert accuracy_by_train_size(results, set()) == [
        {"model": "effnet_lite0", "train_size": 500, "val_acc": 0.67, "test_acc": 0.66, "kind": "transfer"},
        {"model": "effnet_lite0+1_stages", "train_size": 500, "val_acc": 0.72, "test_acc": 0.71, "kind": "transfer"},
    ]


def custom_scalar_charts(run_dir) -> dict[str, list[str]]:
    """The custom-scalars layout a run wrote: chart title -> its multiline tags."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    board = events(run_dir)
    (tag,) = board.PluginTagToContent("custom_scalars")
    layout = layout_pb2.Layout.FromString(board.Tensors(tag)[0].tensor_proto.string_val[0])
    return {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}


def plugin_data(content: bytes):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    return HParamsPluginData.FromString(content)


def test_final_metrics():
    assert final_metrics({"train_loss": [2.0, 1.0], "val_acc": [0.25, 0.123456789]}) == {
        "train_loss": 1.0,
        "val_acc": 0.123457,
    }
