"""selection: the ranking rule and the leaderboard."""

import random

import pytest

from transferlab.selection import leaderboard_markdown, rank, ranking_key


def m(acc, loss, total, trainable=None):
    return {
        "test_acc": acc,
        "test_loss": loss,
        "total_params": total,
        "trainable_params": total if trainable is None else trainable,
    }


RESULTS = {
    "tinyvgg": m(0.40, 1.70, 20_000),
    "500_images-effnet_b0-5_epochs": m(0.80, 0.60, 4_000_000, 12_810),
    "500_images-effnet_b2-5_epochs": m(0.80, 0.55, 7_700_000, 14_090),  # same acc, lower loss
    "1000_images-effnet_b0-5_epochs": m(0.85, 0.65, 4_000_000, 12_810),  # best acc, not best loss
    "1000_images-effnet_b2-5_epochs": m(0.78, 0.50, 7_700_000, 14_090),  # best loss
}


def names(ranked):
    return [name for name, _ in ranked]


def test_rank_by_accuracy_ties_by_lower_loss():
    assert names(rank(RESULTS, "test_acc")) == [
        "1000_images-effnet_b0-5_epochs",
        "500_images-effnet_b2-5_epochs",
        "500_images-effnet_b0-5_epochs",
        "1000_images-effnet_b2-5_epochs",
        "tinyvgg",
    ]


def test_rank_by_accuracy_then_loss_then_fewer_parameters():
    results = {
        "big": m(0.9, 0.3, 5_000),
        "small": m(0.9, 0.3, 1_000),
        "lossy": m(0.9, 0.31, 10),
        "worse": m(0.89, 0.01, 1),
    }
    assert names(rank(results, "test_acc")) == ["small", "big", "lossy", "worse"]


def test_rank_by_loss():
    assert names(rank(RESULTS, "test_loss")) == [
        "1000_images-effnet_b2-5_epochs",
        "500_images-effnet_b2-5_epochs",
        "500_images-effnet_b0-5_epochs",
        "1000_images-effnet_b0-5_epochs",
        "tinyvgg",
    ]
    results = {"big": m(0.9, 0.3, 5_000), "small": m(0.5, 0.3, 1_000), "best": m(0.1, 0.2, 9_000)}
    assert names(rank(results, "test_loss")) == ["best", "small", "big"]


def test_rank_keeps_the_metrics_and_does_not_depend_on_input_order():
    items = list(RESULTS.items())
    random.Random(0).shuffle(items)
    ranked = rank(dict(items), "test_acc")
    assert ranked == rank(RESULTS, "test_acc")
    assert all(metrics is RESULTS[name] for name, metrics in ranked)


def test_rank_full_ties_are_broken_by_name():
    results = {"b": m(0.5, 0.5, 10), "a": m(0.5, 0.5, 10)}
    assert names(rank(results, "test_acc")) == ["a", "b"]


def test_ranking_key_ignores_extra_metrics():
    item = ("x", {**m(0.7, 0.4, 99), "per_class_acc": {"cat": 1.0}})
    assert ranking_key("test_acc")(item) == (-0.7, 0.4, 99, "x")
    assert ranking_key("test_loss")(item) == (0.4, 0.4, 99, "x")


def test_leaderboard_rows_in_ranked_order():
    ranked = rank(RESULTS, "test_acc")
    text = leaderboard_markdown(ranked, "test_acc")
    lines = text.splitlines()
    assert text.endswith("\n")
    assert lines[0] == "# Leaderboard (sorted by test_acc; ties: lower loss, then fewer parameters)"
    assert lines[2] == "| rank | experiment | test acc | test loss | trainable params | total params |"
    assert lines[3] == "|---:|---|---:|---:|---:|---:|"
    rows = lines[4:]
    assert len(rows) == len(RESULTS)
    assert rows[0] == "| 1 | 1000_images-effnet_b0-5_epochs | 85.00% | 0.6500 | 12,810 | 4,000,000 |"
    assert rows[-1] == "| 5 | tinyvgg | 40.00% | 1.7000 | 20,000 | 20,000 |"
    for i, (row, name) in enumerate(zip(rows, names(ranked), strict=True), start=1):
        assert row.startswith(f"| {i} | {name} |")


def test_leaderboard_names_the_metric():
    text = leaderboard_markdown(rank(RESULTS, "test_loss"), "test_loss")
    assert text.splitlines()[0].startswith("# Leaderboard (sorted by test_loss;")
    assert text.splitlines()[4].startswith("| 1 | 1000_images-effnet_b2-5_epochs | 78.00% | 0.5000 |")


@pytest.mark.parametrize("metric", ["test_acc", "test_loss"])
def test_leaderboard_of_one_model(metric):
    text = leaderboard_markdown(rank({"tinyvgg": m(0.123456, 2.0, 1_234)}, metric), metric)
    assert text.splitlines()[4:] == ["| 1 | tinyvgg | 12.35% | 2.0000 | 1,234 | 1,234 |"]
