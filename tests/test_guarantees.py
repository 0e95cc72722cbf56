"""The guarantees of docs/guarantees.md, on the real pipeline: determinism, interrupt safety and resume."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers.images import make_image_folder
from helpers.projects import (
    copy_project,
    locked_outputs,
    make_project,
    pipeline_params,
    project_env,
    run,
    tiny_params,
    write_params,
)
from transferlab.torchfiles import load_torch

pytestmark = pytest.mark.slow

TINYVGG_OUTPUTS = [
    "models/tinyvgg.pt",
    "reports/tinyvgg.json",
    "plots/tinyvgg/loss.json",
    "plots/tinyvgg/accuracy.json",
]
CHECKPOINTS = Path("checkpoints/train_tinyvgg")  # <run fingerprint>/epoch_NNNN.pt, the newest kept
EPOCHS = 400  # ~10 s of TinyVGG on a quiet machine (minutes on a busy one): the kill lands mid-training


def long_tinyvgg_params(source: Path) -> dict:
    """Enough TinyVGG epochs that a kill reliably lands mid-training."""
    params = tiny_params(source)
    params["data"]["image_size"] = 32
    params["tinyvgg"].update(epochs=EPOCHS, hidden_units=8)
    return params


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", n_train=20, n_test=8, size=24)


@pytest.fixture(scope="module")
def long_tinyvgg(tmp_path_factory, pipeline_project) -> Path:
    """A copy of the session's project (conftest) with TinyVGG's epochs raised to EPOCHS: a params
    change, so `dvc repro` trains TinyVGG again (and runs the stages after it). Not run: tests copy it."""
    project = copy_project(pipeline_project, tmp_path_factory.mktemp("long_tinyvgg") / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tinyvgg"]["epochs"] = EPOCHS
    write_params(project, params)
    return project


@pytest.fixture(scope="module")
def reference(tmp_path_factory, long_tinyvgg) -> Path:
    """An uninterrupted `dvc repro` of `long_tinyvgg`."""
    project = copy_project(long_tinyvgg, tmp_path_factory.mktemp("reference") / "project")
    result = run(["dvc", "repro"], project)
    assert "Running stage 'train_tinyvgg'" in result.stdout and "Running stage 'train_transfer'" not in result.stdout
    return project


def without_tensorboard(outputs: dict[str, str]) -> dict[str, str]:
    return {path: md5 for path, md5 in outputs.items() if not path.startswith("runs/")}


def test_two_clean_runs_give_identical_outputs(pipeline_project, pipeline_source, tmp_path):
    """A second cold run, in a fresh copy with a machine-wide cache of its own, against the
    session's (conftest), cold too: the whole pipeline."""
    second = make_project(tmp_path / "project", pipeline_params(pipeline_source))
    run(["dvc", "repro", "--force"], second)
    expected = without_tensorboard(locked_outputs(pipeline_project))
    assert len(expected) >= 12
    assert without_tensorboard(locked_outputs(second)) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_two_clean_runs_on_the_gpu_give_identical_outputs_with_deterministic_kernels(source, tmp_path):
    """On a GPU (the other tests force the CPU): two clean runs of the whole pipeline (TinyVGG and
    the frozen grid) give identical outputs, and no kernel reports that it has no deterministic
    implementation (`engine.seed_everything` makes such kernels warn). Fine-tuning is left out: the
    backward of AdaptiveAvgPool2d, in every EfficientNet, has none on CUDA (docs/guarantees.md)."""
    params = long_tinyvgg_params(source)
    params["tinyvgg"]["epochs"] = 3
    gpu = {"TRANSFERLAB_DEVICE": "cuda"}
    locked, logs = [], []
    for name in ("first", "second"):
        project = make_project(tmp_path / name, params)
        result = run(["dvc", "repro"], project, env_extra=gpu)
        locked.append(without_tensorboard(locked_outputs(project)))
        logs.append(result.stdout + result.stderr)
    assert locked[0] == locked[1]
    for log in logs:
        assert "does not have a deterministic implementation" not in log, log


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_training_leaves_no_partial_output_and_resumes(long_tinyvgg, reference, tmp_path, sig):
    """`dvc repro` of a copy of `long_tinyvgg`, killed mid-training: TinyVGG's old outputs are gone,
    nothing half-written took their place, and the rerun resumes to the reference's outputs."""
    project = copy_project(long_tinyvgg, tmp_path / "project")
    lock_before = (project / "dvc.lock").read_text()

    # As in a terminal: its own process group, and SIGINT at its default even when this test runs in
    # a background job (whose shell sets SIGINT to ignored, which every child would inherit).
    process = subprocess.Popen(
        ["dvc", "repro"],
        cwd=project,
        env=project_env(project),
        start_new_session=True,
        preexec_fn=_default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list((project / CHECKPOINTS).glob("*/epoch_*.pt")):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "training never checkpointed"
        time.sleep(0.02)
    time.sleep(0.3)
    os.killpg(process.pid, sig)  # the whole process group, as Ctrl-C in a terminal does
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0, output

    newest = max((project / CHECKPOINTS).glob("*/epoch_*.pt"))
    epochs_done = len(load_torch(newest)["history"]["train_loss"])
    assert newest.name == f"epoch_{epochs_done:04d}.pt"
    assert 0 < epochs_done < EPOCHS, "the kill must land mid-training"
    assert (project / "dvc.lock").read_text() == lock_before
    for path in TINYVGG_OUTPUTS:  # DVC removed the old outputs; nothing half-written took their place
        assert (long_tinyvgg / path).exists(), path
        assert not (project / path).exists(), path
    assert not list(project.glob("**/.*.tmp")) or sig == signal.SIGKILL

    rerun = run(["dvc", "repro"], project)
    assert f"resuming after epoch {epochs_done}/{EPOCHS}" in rerun.stderr + rerun.stdout
    assert not (project / CHECKPOINTS).exists(), "checkpoints are cleared once the stage completes"
    assert not list(project.glob("**/.*.tmp"))
    expected = without_tensorboard(locked_outputs(reference))
    assert without_tensorboard(locked_outputs(project)) == expected
    assert json.loads((project / "reports/tinyvgg.json").read_text()) == json.loads(
        (reference / "reports/tinyvgg.json").read_text()
    )
