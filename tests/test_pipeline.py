"""End to end: the real `dvc repro` in a temporary copy of the project, on a tiny dataset."""

import json
import math
from pathlib import Path

import pytest

from helpers.images import make_image_folder
from helpers.projects import commit_all, make_project, run, tiny_params
from helpers.tensorboard import events

EXPERIMENTS = [
    "9_images-effnet_lite0-1_epochs",
    "9_images-effnet_lite0-2_epochs",
    "15_images-effnet_lite0-1_epochs",
    "15_images-effnet_lite0-2_epochs",
]

pytestmark = pytest.mark.slow


def scalars(run_dir: Path, tag: str) -> list[float]:
    return [event.value for event in events(run_dir).Scalars(tag)]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_image_folder) -> Path:
    """A project copy after one complete `dvc repro`."""
    params = tiny_params(tiny_image_folder)
    # The heads take 2 steps an epoch here: a larger step than the default lets them learn the
    # colours in so few (TinyVGG, 8 steps from scratch, does not; it is not held to a level).
    params["transfer"]["lr"] = 0.05
    path = make_project(tmp_path_factory.mktemp("e2e") / "project", params)
    run(["dvc", "repro"], path)
    return path


@pytest.fixture(scope="module")
def tiny_image_folder(tmp_path_factory) -> Path:
    return make_image_folder(
        tmp_path_factory.mktemp("data") / "images", classes=("red", "green", "blue"), n_train=20, n_test=8, size=24
    )


def test_repro_writes_every_output(project):
    for path in [
        "data/prepared/train_images.npy",
        "data/subsets/test.json",
        "models/tinyvgg.pt",
        "models/best.pt",
        "reports/leaderboard.md",
        "reports/predictions.png",
        "reports/model_summaries/effnet_lite0.txt",
        "plots/tinyvgg.json",
    ]:
        assert (project / path).is_file(), path
    assert sorted(p.stem for p in (project / "models/transfer").glob("*.pt")) == sorted(EXPERIMENTS)
    assert sorted(p.stem for p in (project / "plots/transfer").glob("*.json")) == sorted(EXPERIMENTS)
    assert sorted(p.stem for p in (project / "plots/confusion").glob("*.json")) == sorted([*EXPERIMENTS, "tinyvgg"])
    summary = (project / "reports/model_summaries/effnet_lite0.txt").read_text()
    assert "Linear" in summary and "Trainable params" in summary


def test_metrics_are_sensible_and_consistent(project):
    tinyvgg = json.loads((project / "metrics/tinyvgg.json").read_text())
    transfer = json.loads((project / "metrics/transfer.json").read_text())
    evaluation = json.loads((project / "metrics/evaluation.json").read_text())
    best = json.loads((project / "metrics/best.json").read_text())
    assert sorted(transfer) == sorted(EXPERIMENTS)
    assert sorted(evaluation) == sorted([*EXPERIMENTS, "tinyvgg"])
    for name, metrics in {"tinyvgg": tinyvgg, **transfer}.items():
        assert 0 <= metrics["test_acc"] <= 1 and math.isfinite(metrics["test_loss"]) and metrics["test_loss"] > 0
        # evaluate re-scores the saved model: it must agree with the last training epoch
        assert evaluation[name]["test_acc"] == pytest.approx(metrics["test_acc"], abs=1e-6)
        assert evaluation[name]["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
    # Each class is one colour: the transfer models are well above chance (1/3 with 3 classes).
    accuracies = [transfer[name]["test_acc"] for name in EXPERIMENTS]
    assert min(accuracies) > 1 / 3 and sum(accuracies) / len(accuracies) >= 0.55, accuracies
    for name in EXPERIMENTS:  # frozen backbone: only the head trains
        assert transfer[name]["trainable_params"] == 1280 * 3 + 3 < transfer[name]["total_params"]
    ranked = sorted(
        evaluation,
        key=lambda n: (-evaluation[n]["test_acc"], evaluation[n]["test_loss"], evaluation[n]["total_params"]),
    )
    assert best["name"] == ranked[0]
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert leaderboard.index(ranked[0]) < leaderboard.index(ranked[-1])
    history = json.loads((project / "plots/transfer/15_images-effnet_lite0-2_epochs.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]


def test_tensorboard_runs_hold_scalars_per_epoch(project):
    assert len(scalars(project / "runs/tinyvgg/Loss_train", "Loss")) == 2
    assert len(scalars(project / "runs/tinyvgg/Accuracy_test", "Accuracy")) == 2
    for name in EXPERIMENTS:
        run_dir = project / "runs/transfer" / name.replace("-", "/")
        epochs = int(name.split("-")[-1].split("_")[0])
        assert len(scalars(run_dir / "Loss_test", "Loss")) == epochs
        assert len(scalars(run_dir / "Accuracy_train", "Accuracy")) == epochs
        run = events(run_dir)
        assert any(node.op for node in run.Graph().node), "model graph"
        assert "_hparams_/session_start_info" in run.PluginTagToContent("hparams")
    assert events(project / "runs/tinyvgg").Graph().node
    assert events(project / "runs/best").Tags()["images"], "predictions figure"


def test_second_repro_reruns_nothing(project):
    result = run(["dvc", "repro"], project)
    assert "Running stage" not in result.stdout, result.stdout


def test_exp_run_and_metrics_diff(project):
    commit_all(project, "baseline")
    run(["dvc", "exp", "run", "-S", "model=effnet_lite0", "-S", "epochs=2"], project)
    transfer = json.loads((project / "metrics/transfer.json").read_text())
    assert sorted(transfer) == sorted(n for n in EXPERIMENTS if n.endswith("2_epochs"))
    diff = run(["dvc", "metrics", "diff"], project)
    assert "metrics/transfer.json" in diff.stdout
    run(
        ["dvc", "exp", "run", "-S", "model=[effnet_lite0,effnet_lite2]", "-S", "train_size=9", "-S", "epochs=1"],
        project,
    )
    transfer = json.loads((project / "metrics/transfer.json").read_text())
    assert sorted(transfer) == ["9_images-effnet_lite0-1_epochs", "9_images-effnet_lite2-1_epochs"]
    assert (project / "runs/transfer/9_images/effnet_lite2/1_epochs").is_dir()
    # Back to the baseline params: every stage comes back from DVC's run cache, runs/ included.
    run(["git", "checkout", "--", "params.yaml"], project)
    restored = run(["dvc", "repro"], project)
    assert "Running stage 'train_transfer'" not in restored.stdout, restored.stdout
    assert "Stage 'train_transfer' is cached" in restored.stdout
    for name in EXPERIMENTS:
        assert list((project / "runs/transfer" / name.replace("-", "/")).glob("*/events.out.tfevents.*"))
