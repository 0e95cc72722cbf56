"""selection: ranking on validation, test accuracy reported with its interval, McNemar against the
winner, seed groups, best.json, the confusion plots, the TensorBoard run and the exported model.

evaluate's two outputs (evaluation.json, predicted_classes.pt) are built here to the contract; the
models are tiny real TinyVGG model files (a file in the transfer folder is loaded by its kind, not
its folder), so the PR curves, predictions figure and export run for real, in about a second."""

import copy
import json
import types

import numpy as np
import pytest
import torch

from helpers.tensorboard import events
from transferlab import data, model_files, subsets
from transferlab.errors import UserError
from transferlab.kinds import TinyVGGModel
from transferlab.params import SelectBestParams
from transferlab.paths import SelectBestPaths
from transferlab.selection import MARK, rank, ranking_key, seed_groups, select_best
from transferlab.stats import accuracy_interval, mean_std
from transferlab.torchfiles import load_torch, save_torch

CLASSES = ["cat", "dog", "frog"]
N_VAL, N_TEST = 40, 30
A = "500_images-effnet_b0-5_epochs-seed_0"  # best on validation
C = "500_images-effnet_b0-5_epochs-seed_1"  # A's configuration, another seed; close to A on validation
B = "500_images-effnet_b2-5_epochs-seed_0"  # best on test, lowest val loss
T = "tinyvgg"
# per model: validation images it gets right, test images it gets right, val loss, parameter counts
MODELS = {
    A: (range(36), range(20), 0.40, (12_810, 4_000_000)),
    C: (range(2, 37), range(24), 0.45, (12_810, 4_000_000)),
    B: (range(30), range(27), 0.30, (14_090, 7_700_000)),
    T: (range(12), range(10), 1.70, (2_000, 2_000)),
}
SEEDS = {A: 0, C: 1, B: 0}
VAL_LABELS = torch.arange(N_VAL) % 3
TEST_LABELS = torch.arange(N_TEST) % 3


def answers(labels: torch.Tensor, right: range) -> torch.Tensor:
    """Predicted classes: right on the images `right`, the next class elsewhere."""
    predicted = (labels + 1) % 3
    predicted[list(right)] = labels[list(right)]
    return predicted.to(torch.uint8)


def hparams(name: str) -> dict:
    if name == T:
        return {"model": "tinyvgg", "train_size": 60, "epochs": 3, "hidden_units": 2, "optimizer": "adam"} | {
            "lr": 0.001,
            "weight_decay": 0.0,
            "batch_size": 8,
            "processes": 1,
            "seed": 42,
        }
    return {
        "model": "effnet_b2" if name == B else "effnet_b0",
        "train_size": 500,
        "epochs": 5,
        "trainable_stages": 0,
        "lr": 0.001,
        "weight_decay": 0.0,
        "train_seed": SEEDS[name],
        "freeze": True,
        "runtime": "torch",
        "optimizer": "adam",
        "batch_size": 32,
        "processes": 1,
    }


def evaluate_outputs() -> tuple[dict, dict]:
    """evaluation.json and predicted_classes.pt, as evaluate writes them, for MODELS."""
    results, predicted = {}, {"classes": CLASSES, "val_labels": VAL_LABELS, "test_labels": TEST_LABELS}
    predicted |= {"val": {}, "test": {}}
    for name, (val_right, test_right, val_loss, (trainable, total)) in MODELS.items():
        predicted["val"][name] = answers(VAL_LABELS, val_right)
        predicted["test"][name] = answers(TEST_LABELS, test_right)
        results[name] = {
            "val_acc": round(len(val_right) / N_VAL, 6),
            "val_loss": val_loss,
            "test_acc": round(len(test_right) / N_TEST, 6),
            "test_loss": 0.5,
            "trainable_params": trainable,
            "total_params": total,
            "per_class_test_acc": {cls: 0.5 for cls in CLASSES},
            "hparams": hparams(name),
        }
    return results, predicted


@pytest.fixture
def project(tmp_path):
    """A select_best workspace: a dataset whose test subset is N_TEST images, a tiny TinyVGG model
    file per model; `project.run(results, predicted, metric)` writes evaluate's outputs and runs
    select_best, returning best.json's dict."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_TEST + 3, 8, 8, 3), dtype=np.uint8)
    test_idx = [i for i in range(N_TEST + 3) if i not in (1, 5, 9)]  # a subset, not the whole split
    test_labels = np.zeros(N_TEST + 3, dtype=np.int64)
    test_labels[test_idx] = TEST_LABELS.numpy()
    train = data.Split(images[:6], np.arange(6, dtype=np.int64) % 3)
    data.save(data.Dataset(CLASSES, train, data.Split(images, test_labels)), tmp_path / "prepared")
    subsets.save({name: [] for name in subsets.SUBSET_NAMES} | {"test": test_idx}, tmp_path / "subsets")
    paths = SelectBestPaths(
        *(tmp_path / p for p in ("prepared", "subsets", "evaluation.json", "predicted_classes.pt")),
        *(tmp_path / p for p in ("tinyvgg.pt", "transfer", "best.json", "leaderboard.md", "best.pt")),
        *(tmp_path / p for p in ("predictions.png", "confusion", "runs")),
    )
    for i, name in enumerate(MODELS):
        torch.manual_seed(i)
        model_file = TinyVGGModel.new(CLASSES, 2, 8).model_file(hparams(name))
        save_torch(paths.tinyvgg_file if name == T else paths.transfer_dir / f"{name}.pt", model_file)

    def run(results=None, predicted=None, metric="val_acc"):
        default_results, default_predicted = evaluate_outputs()
        paths.evaluation_file.write_text(json.dumps(results or default_results))
        save_torch(paths.predicted_file, predicted or default_predicted)
        params = types.SimpleNamespace(
            seed=0, data=types.SimpleNamespace(resize="pad"), select_best=SelectBestParams(metric=metric, predictions=4)
        )
        return select_best(params, paths, tmp_path / "cache")

    return types.SimpleNamespace(paths=paths, run=run)


def without(name: str) -> tuple[dict, dict]:
    results, predicted = evaluate_outputs()
    del results[name], predicted["val"][name], predicted["test"][name]
    return results, predicted


def leaderboard_rows(text: str) -> list[list[str]]:
    """The first table's rows, as cells."""
    rows = [line for line in text.split("## ")[0].splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


# --- ranking --------------------------------------------------------------------------------------


def test_ranks_on_validation_even_when_test_would_pick_another(project):
    results, _ = evaluate_outputs()
    assert max(results, key=lambda n: results[n]["test_acc"]) == B  # test would pick B
    best = project.run()
    assert best["name"] == A and best["selected_by"] == "val_acc"
    rows = leaderboard_rows(project.paths.leaderboard_file.read_text())
    assert [row[:2] for row in rows] == [["1", A], ["2", C], ["3", B], ["4", T]]


def test_ranks_by_validation_loss(project):
    best = project.run(metric="val_loss")
    assert best["name"] == B and best["selected_by"] == "val_loss"
    assert [row[1] for row in leaderboard_rows(project.paths.leaderboard_file.read_text())] == [B, A, C, T]


def m(val_acc, val_loss, total, test_acc=0.5):
    return {"val_acc": val_acc, "val_loss": val_loss, "total_params": total, "test_acc": test_acc}


def test_ties_lower_val_loss_then_fewer_parameters_then_name():
    results = {
        "big": m(0.9, 0.3, 5_000),
        "small": m(0.9, 0.3, 1_000),
        "b": m(0.9, 0.3, 1_000),
        "lossy": m(0.9, 0.31, 10),
        "worse": m(0.89, 0.01, 1, test_acc=1.0),
    }
    assert [name for name, _ in rank(results, "val_acc")] == ["b", "small", "big", "lossy", "worse"]
    assert [name for name, _ in rank(results, "val_loss")] == ["worse", "b", "small", "big", "lossy"]


def test_ranking_key_never_reads_test_metrics():
    item = ("x", {"val_acc": 0.7, "val_loss": 0.4, "total_params": 99})  # no test metric at all
    assert ranking_key("val_acc")(item) == (-0.7, 0.4, 99, "x")
    assert ranking_key("val_loss")(item) == (0.4, 0.4, 99, "x")


# --- the leaderboard --------------------------------------------------------------------------------


def test_leaderboard_reports_test_interval_and_marks_models_validation_cannot_tell_apart(project):
    project.run()
    text = project.paths.leaderboard_file.read_text()
    header = text.split("| rank")[0]
    assert "validation" in header and "never used to choose" in header and "95% interval" in header
    assert f"{MARK} marks a model the validation set cannot tell apart from #1" in header
    rows = {row[1]: row for row in leaderboard_rows(text)}
    low, high = accuracy_interval(20, N_TEST)
    assert rows[A] == ["1", A, "90.00%", "0.4000", "66.67%", f"{low:.2%}–{high:.2%}", "—", "12,810", "4,000,000"]
    # C: 2 images only A gets right, 1 only C: p = 1, cannot be told apart
    assert rows[C][6] == f"1.000 {MARK}"
    # B: 6 images only A gets right, none only B: p = 2 / 2**6, told apart
    assert rows[B][6] == "0.031"
    assert rows[T][6] == "<0.001"
    assert rows[B][5] == "{:.2%}–{:.2%}".format(*accuracy_interval(27, N_TEST))


def test_leaderboard_counts_test_interval_from_the_predicted_classes(project):
    results, predicted = evaluate_outputs()
    predicted["test"][A] = answers(TEST_LABELS, range(15))  # what was predicted, not the reported test_acc
    project.run(results, predicted)
    rows = {row[1]: row for row in leaderboard_rows(project.paths.leaderboard_file.read_text())}
    assert rows[A][5] == "{:.2%}–{:.2%}".format(*accuracy_interval(15, N_TEST))


def test_seed_groups_table(project):
    project.run()
    text = project.paths.leaderboard_file.read_text()
    assert "## Over seeds" in text
    table = [line for line in text.split("## Over seeds")[1].splitlines() if line.startswith("| ")]
    assert table[0] == "| rank | configuration | seeds | val acc | val loss | test acc |"
    val_mean, val_std = mean_std([0.9, 0.875])
    test_mean, test_std = mean_std([20 / 30, 24 / 30])
    assert table[1:] == [
        f"| 1 | 500_images-effnet_b0-5_epochs | 0, 1 | {val_mean:.2%} ± {val_std:.2%} | 0.4250 ± 0.0354 "
        f"| {test_mean:.2%} ± {test_std:.2%} |"
    ]


def test_seed_groups_are_models_equal_but_for_train_seed():
    results, _ = evaluate_outputs()
    results["other_seed_of_b"] = copy.deepcopy(results[B]) | {"val_acc": 0.95}  # mean 0.85, A and C's 0.8875
    results["other_seed_of_b"]["hparams"]["train_seed"] = 7
    results["other_lr"] = copy.deepcopy(results[A])
    results["other_lr"]["hparams"] |= {"lr": 0.01, "train_seed": 2}  # another configuration, alone
    groups = seed_groups(results, "val_acc")
    assert [(g.names, g.seeds) for g in groups] == [([A, C], [0, 1]), ([B, "other_seed_of_b"], [0, 7])]
    # the name parts its models share, or (none shared) their names
    assert [g.label for g in groups] == ["500_images-effnet_b0-5_epochs", f"{B}, other_seed_of_b"]
    # by mean val loss: B's 0.30 before A and C's 0.425
    assert [g.names for g in seed_groups(results, "val_loss")] == [[B, "other_seed_of_b"], [A, C]]


def test_no_seed_table_without_repeated_seeds(project):
    best = project.run(*without(C))
    assert "Over seeds" not in project.paths.leaderboard_file.read_text()
    assert "test_acc_seed_mean" not in best


# --- best.json ------------------------------------------------------------------------------------


def test_best_json_is_small_flat_and_names_nothing_of_the_grid(project):
    best = project.run()
    assert json.loads(project.paths.best_metrics_file.read_text()) == best
    low, high = accuracy_interval(20, N_TEST)
    results, _ = evaluate_outputs()
    mean, std = mean_std([results[A]["test_acc"], results[C]["test_acc"]])
    assert best == {
        "name": A,
        "selected_by": "val_acc",
        "val_acc": 0.9,
        "test_acc": round(20 / 30, 6),
        "test_acc_low": round(low, 6),
        "test_acc_high": round(high, 6),
        "tied": 1,  # C
        "models": 4,
        "tinyvgg_test_acc": round(10 / 30, 6),
        "test_acc_seed_mean": round(mean, 6),
        "test_acc_seed_std": round(std, 6),
    }


def test_best_json_without_seeds_for_the_winner(project):
    best = project.run(metric="val_loss")  # B: one seed
    assert set(best) == {
        "name",
        "selected_by",
        "val_acc",
        "test_acc",
        "test_acc_low",
        "test_acc_high",
        "tied",
        "models",
        "tinyvgg_test_acc",
    }
    # against B on validation: A 6 images only A gets right, none only B (p 0.031); C 7 and 2 (p 0.18)
    assert best["name"] == B and best["tied"] == 1


# --- plots, TensorBoard, export -------------------------------------------------------------------


def test_confusion_files_of_winner_and_tinyvgg(project):
    project.run()
    folder = project.paths.confusion_dir
    assert sorted(p.name for p in folder.iterdir()) == ["tinyvgg.json", "winner.json"]
    winner = json.loads((folder / "winner.json").read_text())
    assert len(winner) == N_TEST
    assert sum(row["actual"] == row["predicted"] for row in winner) == 20  # A's, not TinyVGG's 10
    assert winner[:3] == [{"actual": c, "predicted": c} for c in CLASSES]  # A gets the first 20 right
    assert winner[20:23] == [{"actual": CLASSES[i % 3], "predicted": CLASSES[(i + 1) % 3]} for i in range(20, 23)]
    tinyvgg = json.loads((folder / "tinyvgg.json").read_text())
    assert sum(row["actual"] == row["predicted"] for row in tinyvgg) == 10


def test_confusion_file_when_tinyvgg_wins(project):
    results, predicted = evaluate_outputs()
    results[T]["val_acc"] = 0.99
    best = project.run(results, predicted)
    assert best["name"] == T
    assert [p.name for p in project.paths.confusion_dir.iterdir()] == ["winner.json"]
    rows = json.loads((project.paths.confusion_dir / "winner.json").read_text())
    assert sum(row["actual"] == row["predicted"] for row in rows) == 10
    assert project.paths.predictions_file.exists()


def test_tensorboard_run_and_predictions_png(project):
    project.run()
    run = events(project.paths.runs_dir)
    assert sorted(run.PluginTagToContent("pr_curves")) == sorted(f"{m}/{c}" for m in (A, T) for c in CLASSES)
    assert sorted(run.Tags()["images"]) == sorted([f"confusion/{A}", f"confusion/{T}", f"predictions/{A}"])
    assert project.paths.predictions_file.read_bytes().startswith(b"\x89PNG")


def test_exports_the_winner(project):
    project.run()
    exported = load_torch(project.paths.best_model_file)
    assert exported["name"] == A and exported["transform"] == "uint8 / 255"
    assert exported["resize"] == "pad"  # predict fits a photo to the square as the dataset's were
    saved = load_torch(project.paths.transfer_dir / f"{A}.pt")
    model = model_files.from_model_file(exported)
    for key, tensor in saved["state_dict"].items():
        assert torch.equal(model.saved.state_dict()[key], tensor)


# --- evaluate's outputs that do not match ------------------------------------------------------------


def test_refuses_predicted_classes_missing_a_model(project):
    results, predicted = evaluate_outputs()
    del predicted["val"][C]
    with pytest.raises(UserError, match=f"no predicted classes for {C}.*rerun evaluate"):
        project.run(results, predicted)


def test_refuses_predicted_classes_of_another_test_subset(project):
    results, predicted = evaluate_outputs()
    predicted["test_labels"] = (TEST_LABELS + 1) % 3
    with pytest.raises(UserError, match="not scored on this test subset"):
        project.run(results, predicted)
