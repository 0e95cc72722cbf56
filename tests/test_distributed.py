"""N processes train one model: real torch.distributed (gloo on loopback, started by torch's elastic
launcher), compared with the one-process run."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import TensorDataset

from helpers.projects import copy_project, experiment_run, project_env, run, write_params
from helpers.tensorboard import events
from transferlab import backbones, distributed, networks
from transferlab.checkpoints import Checkpoints
from transferlab.errors import UserError
from transferlab.features import FeatureCache
from transferlab.params import TrainingParams
from transferlab.torchfiles import load_torch
from transferlab.tracking import TensorBoardRun
from transferlab.training import TrainingRun, fit

CPU = torch.device("cpu")
SETTINGS = TrainingParams(batch_size=8, optimizer="adam", lr=1e-3, weight_decay=0.0)
# At 32 px lite0's last feature map is 1 x 1, where BatchNorm cannot train on one image: train
# sizes whose every global batch of 8 splits into parts of at least 2. One size by default; a second
# only repeats the same launches (fine-tuning lite0 on two processes is among the suite's dearest
# steps), so it waits for `make test-full`.
TRAIN_SIZES = [pytest.param([12], id="one size"), pytest.param([12, 20], id="two sizes", marks=pytest.mark.full)]


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_parts_cover_every_batch_in_order(size):
    for batch_len in range(12):
        parts = [distributed.Group(rank, size).part(batch_len) for rank in range(size)]
        covered = [index for part in parts for index in range(batch_len)[part]]
        assert covered == list(range(batch_len))
        lengths = [part.stop - part.start for part in parts]
        assert max(lengths) - min(lengths) <= 1


def _tinyvgg_run(processes: int, model: nn.Module | None = None) -> TrainingRun:
    """TinyVGG on 50 random 16 px images (the last batch of 8 has 2), seeded."""
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.rand(50, 3, 16, 16, generator=generator), torch.randint(0, 3, (50,), generator=generator)
    torch.manual_seed(0)
    model = model or networks.TinyVGG(4, 3, 16)
    train, test = TensorDataset(images, labels), TensorDataset(images[:20], labels[:20])
    return TrainingRun(model, train, test, SETTINGS, seed=42, processes=processes)


def _fit(run: TrainingRun, tmp_path: Path, epochs: int = 3) -> tuple[dict, Path]:
    board = TensorBoardRun(tmp_path / f"runs_{run.processes}")
    checkpoints = Checkpoints(tmp_path / f"states_{run.processes}", keep_every_epoch=True)
    history = fit(run, epochs, CPU, board, checkpoints, desc="tinyvgg")
    board.close()
    return history, checkpoints.directory / run.fingerprint()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run = _tinyvgg_run(1)
    history, _ = _fit(run, tmp_path_factory.mktemp("one"))
    return history, run.model.state_dict()


@pytest.mark.slow
def test_two_processes_train_tinyvgg_to_the_one_process_weights(one_process, tmp_path):
    run = _tinyvgg_run(2)
    history, states = _fit(run, tmp_path)
    one_history, one_weights = one_process
    for key, weights in run.model.state_dict().items():
        torch.testing.assert_close(weights, one_weights[key], atol=1e-5, rtol=0)
    for key, values in history.items():
        assert values == pytest.approx(one_history[key], abs=1e-5)
    # The leader alone wrote: one state per epoch, each epoch logged once.
    assert sorted(path.name for path in states.glob("epoch_*.pt")) == [f"epoch_000{e}.pt" for e in (1, 2, 3)]
    assert [event.step for event in events(tmp_path / "runs_2").Scalars("Loss/train")] == [1, 2, 3]


@pytest.mark.slow
def test_two_processes_resume_from_the_latest_state(one_process, tmp_path, capfd):
    _, states = _fit(_tinyvgg_run(2), tmp_path)
    (states / "epoch_0003.pt").unlink()  # as if killed during epoch 3
    rerun = _tinyvgg_run(2)
    history, _ = _fit(rerun, tmp_path)
    assert "resuming after epoch 2/3" in capfd.readouterr().err
    for key, weights in rerun.model.state_dict().items():
        torch.testing.assert_close(weights, one_process[1][key], atol=1e-5, rtol=0)
    assert [event.step for event in events(tmp_path / "runs_2").Scalars("Loss/train")] == [1, 2, 3]


class FailingInSecondProcess(nn.Module):
    """TinyVGG whose forward, in process 1 of a group, raises or kills its own process."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.network = how, networks.TinyVGG(4, 3, 16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if dist.is_initialized() and dist.get_rank() == 1:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("the second process cannot go on")
        return self.network(images)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "expected"),
    [("raise", "ValueError: the second process cannot go on"), ("kill", "SIGKILL")],
)
def test_a_failed_process_is_one_line(how, expected, tmp_path):
    run = _tinyvgg_run(2, FailingInSecondProcess(how))
    with pytest.raises(UserError, match=rf"^process \d of 2 failed: .*{expected}") as failure:
        _fit(run, tmp_path)
    assert "\n" not in str(failure.value)
    assert not list((tmp_path / "states_2").glob("*/epoch_*.pt")), "no epoch completed"


def _random_backbone(name: str, image_size: int | None) -> backbones.Backbone:
    return backbones.load(name, image_size, pretrained=False)


@pytest.mark.slow
def test_features_split_over_processes_equal_one_process(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 24, 24, 3), dtype=np.uint8)
    one = FeatureCache("effnet_lite0", 32, tmp_path / "one", load=_random_backbone)
    two = FeatureCache("effnet_lite0", 32, tmp_path / "two", load=_random_backbone, processes=2)
    torch.manual_seed(0)
    expected = one.get(images, batch_size=4, device=CPU)
    torch.manual_seed(0)
    features = two.get(images, batch_size=4, device=CPU)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)
    assert two.stats() == {"images": 10, "entries": 10, "shards": 1}


# --- through the stages: `dvc repro` in a project copy -----------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory, pipeline_project) -> Path:
    """A copy of the session's tiny project, whose train_tinyvgg ran in one process (`processes: 1`)."""
    return copy_project(pipeline_project, tmp_path_factory.mktemp("distributed") / "project")


def _set_params(project: Path, **changes) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (params[section] if section else params)[name] = value
    write_params(project, params)


@pytest.mark.slow
def test_train_tinyvgg_on_two_processes_matches_one(project):
    one_process = load_torch(project / "models/tinyvgg.pt")["state_dict"]
    one_metrics = json.loads((project / "reports/tinyvgg.json").read_text())
    _set_params(project, processes=2)
    result = run(["dvc", "repro", "train_tinyvgg"], project)
    assert "Running stage 'train_tinyvgg'" in result.stdout and "Running stage 'subset'" not in result.stdout
    for key, weights in load_torch(project / "models/tinyvgg.pt")["state_dict"].items():
        torch.testing.assert_close(weights, one_process[key], atol=1e-5, rtol=0)
    metrics = json.loads((project / "reports/tinyvgg.json").read_text())
    assert metrics == pytest.approx(one_metrics, abs=1e-5)
    assert [event.step for event in events(project / "runs/tinyvgg").Scalars("Loss/val")] == [1, 2]


def _start_repro(project: Path, stage: str) -> subprocess.Popen:
    """`dvc repro stage` as from a terminal: its own process group, SIGINT at its default."""
    return subprocess.Popen(
        ["dvc", "repro", stage],
        cwd=project,
        env=project_env(project),
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _workers(process: subprocess.Popen) -> list[psutil.Process]:
    """The training worker processes the elastic launcher started under `process`."""
    children = psutil.Process(process.pid).children(recursive=True)
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "expected"),
    [("one worker", r"error: process \d of 2 failed: Signal 9 \(SIGKILL\)"), ("Ctrl-C", r"error: interrupted")],
)
def test_a_killed_worker_or_ctrl_c_is_one_line_and_leaves_no_output(project, kill, expected):
    _set_params(project, processes=2, **{"tinyvgg.epochs": 2000})
    shutil.rmtree(project / "checkpoints", ignore_errors=True)  # what an earlier kill left to resume from
    lock_before = (project / "dvc.lock").read_text()
    process = _start_repro(project, "train_tinyvgg")
    deadline = time.monotonic() + 300
    while not list((project / "checkpoints/train_tinyvgg").glob("*/epoch_*.pt")):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "training never saved a state"
        time.sleep(0.05)
    if kill == "one worker":
        _workers(process)[-1].kill()
    else:
        os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0, output
    assert re.search(expected, output), output
    assert "Traceback" not in output, output
    assert (project / "dvc.lock").read_text() == lock_before
    assert not (project / "models/tinyvgg.pt").exists() and not (project / "reports/tinyvgg.json").exists()
    _set_params(project, processes=2, **{"tinyvgg.epochs": 2})
    run(["dvc", "repro", "train_tinyvgg"], project)  # back to the finished two-process run


@pytest.mark.slow
@pytest.mark.parametrize("train_sizes", TRAIN_SIZES)
def test_fine_tuning_on_two_processes_writes_every_output_once(project, train_sizes):
    _set_params(project, processes=2, train_size=train_sizes, **{"transfer.freeze": False})
    result = run(["dvc", "repro", "train_transfer"], project)
    metrics = json.loads((project / "reports/transfer.json").read_text())
    fine_tuned = [f"{n}_images-effnet_lite0-lr_0.05-wd_0-seed_42-{e}_epochs" for n in train_sizes for e in (1, 2)]
    assert sorted(metrics) == sorted(fine_tuned)
    for name in fine_tuned:
        model_file = load_torch(project / f"models/transfer/{name}.pt")
        assert model_file["config"]["frozen"] is False
        epochs = int(name.split("-")[-1].split("_")[0])
        run_dir = project / "runs/transfer" / experiment_run(name)
        assert [event.step for event in events(run_dir).Scalars("Loss/train")] == list(range(1, epochs + 1))
        assert 0 <= metrics[name]["val_acc"] <= 1
    assert result.stderr.count("resuming after epoch 1/2") == len(train_sizes), "2 epochs continue the 1-epoch runs"
    assert not (project / "checkpoints/train_transfer").exists()
