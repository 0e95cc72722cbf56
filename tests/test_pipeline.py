"""End to end: the real `dvc repro` in a temporary copy of the project, on a tiny dataset."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["stages", "src", "dvc.yaml", "params.yaml", ".dvc", ".dvcignore", ".gitignore", "pyproject.toml"]
EXPERIMENTS = ["9_images-effnet_lite0-1_epochs", "9_images-effnet_lite0-2_epochs",
               "15_images-effnet_lite0-1_epochs", "15_images-effnet_lite0-2_epochs"]

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TRANSFERLAB_DEVICE": "cpu"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def tiny_params(source: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"source": str(source), "image_size": 16}
    params["subset"] = {"tinyvgg_train_size": 30, "test_size": 12}
    params["tinyvgg"].update(epochs=2, hidden_units=4, batch_size=8)
    params.update(model="effnet_lite0", train_size=[9, 15], epochs=[1, 2])
    params["transfer"].update(image_size=32, batch_size=8)
    params["select_best"]["predictions"] = 4
    return params


def make_project(dest: Path, source: Path) -> Path:
    """A copy of the project as a fresh git repository, with tiny params."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache")
    for name in PROJECT_FILES:
        src = ROOT / name
        (shutil.copytree(src, dest / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, dest / name))
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(source), sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], dest)
    return dest


def commit_all(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], project)


def scalars(run_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars(tag)]


@pytest.fixture(scope="module")
def project(tmp_path_factory, request) -> Path:
    """A project copy after one complete `dvc repro`."""
    source = request.getfixturevalue("tiny_image_folder")
    path = make_project(tmp_path_factory.mktemp("e2e") / "project", source)
    run(["dvc", "repro"], path)
    return path


@pytest.fixture(scope="module")
def tiny_image_folder(tmp_path_factory) -> Path:
    from conftest import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=("red", "green", "blue"),
                             n_train=20, n_test=8, size=24)


def test_repro_writes_every_output(project):
    for path in ["data/prepared/train_images.npy", "data/subsets.json", "models/tinyvgg.pt",
                 "models/best.pt", "reports/leaderboard.md", "reports/predictions.png",
                 "reports/model_summaries/effnet_lite0.txt", "plots/tinyvgg.json"]:
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
    for name in EXPERIMENTS:  # frozen backbone: only the head trains
        assert transfer[name]["trainable_params"] == 1280 * 3 + 3 < transfer[name]["total_params"]
    ranked = sorted(evaluation, key=lambda n: (-evaluation[n]["test_acc"], evaluation[n]["test_loss"],
                                               evaluation[n]["total_params"]))
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
    assert any((project / "runs/best").iterdir())


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
    # Back to the baseline params: every stage comes back from DVC's run cache, runs/ included.
    run(["git", "checkout", "--", "params.yaml"], project)
    restored = run(["dvc", "repro"], project)
    assert "Running stage 'train_transfer'" not in restored.stdout, restored.stdout
    assert "Stage 'train_transfer' is cached" in restored.stdout
    for name in EXPERIMENTS:
        assert list((project / "runs/transfer" / name.replace("-", "/")).glob("*/events.out.tfevents.*"))
