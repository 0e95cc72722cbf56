"""Files from the internet: checkpoints and weights whose pickle carries a payload, truncated or
garbage files, and a download that does not match its hash. Each is refused with one line; a
payload never runs, whatever torch's default for `weights_only` (the subprocesses here set
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which makes torch.load run pickles unless a call forbids it)."""

import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.models import EfficientNet_B0_Weights
from torchvision.models._api import Weights, WeightsEnum

from helpers.hostile import UNSAFE_DEFAULT, Payload, hostile_checkpoint
from helpers.images import make_image_folder
from helpers.projects import copy_project, project_env
from transferlab import backbones, networks
from transferlab.errors import UserError
from transferlab.torchfiles import load_torch, save_torch

B0_WEIGHTS = EfficientNet_B0_Weights.IMAGENET1K_V1


def test_the_payload_is_real(tmp_path):
    """Loaded without protection, the hostile file runs its payload: the tests below can fail."""
    marker = tmp_path / "payload_ran"
    torch.load(hostile_checkpoint(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_load_torch_refuses_a_payload_whatever_torchs_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "payload_ran"
    path = hostile_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(UserError, match=r"evil\.pt is unsafe or corrupt, not loaded") as refused:
        load_torch(path)
    assert "weights_only" not in str(refused.value), "no advice to lower the protection"
    assert not marker.exists()


def test_lite_weights_with_a_payload_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "payload_ran"
    path = tmp_path / "efficientnet_lite0.pth"
    torch.save({"conv_stem.weight": Payload(marker)}, path)
    with pytest.raises(UserError, match="unsafe or corrupt"):
        backbones._load_in_order(networks.TinyVGG(2, 3, 8), str(path))
    assert not marker.exists()


def test_torchvision_weights_with_a_payload_in_the_hub_cache_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    marker = tmp_path / "payload_ran"
    (tmp_path / "checkpoints").mkdir()
    torch.save({"features.0.0.weight": Payload(marker)}, tmp_path / "checkpoints" / Path(B0_WEIGHTS.url).name)
    with pytest.raises(UserError, match="unsafe or corrupt, not loaded.*; delete it and retry") as refused:
        backbones._download_state_dict("effnet_b0", B0_WEIGHTS)
    assert "weights_only" not in str(refused.value)
    assert not marker.exists()


@pytest.fixture
def weights_server(tmp_path):
    """A local HTTP server (127.0.0.1, a free port) serving `tmp_path / "served"`."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_download_that_does_not_match_its_hash_is_refused_and_not_kept(weights_server, tmp_path, monkeypatch):
    """torchvision's weights URLs end in the first hex digits of the file's SHA-256; a download
    whose hash differs (a tampered mirror, a truncated transfer) is not kept."""
    served, url = weights_server
    name = "efficientnet_b0-0123abcd.pth"  # the hash prefix the file claims
    save_torch(served / name, networks.TinyVGG(2, 3, 8).state_dict())
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    served_weights = Weights(url=f"{url}/{name}", transforms=B0_WEIGHTS.transforms, meta=B0_WEIGHTS.meta)
    weights = WeightsEnum("ServedWeights", {"IMAGENET1K_V1": served_weights}).IMAGENET1K_V1
    with pytest.raises(UserError, match="does not match its published hash; not kept"):
        backbones._download_state_dict("effnet_b0", weights)
    assert [path for path in hub.rglob("*") if path.is_file()] == [], "nothing kept, not even a partial file"


# --- through the entry points: predict, evaluate, select_best, training -------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory, pipeline_project) -> Path:
    """A copy of the session's tiny project after one complete `dvc repro` (conftest)."""
    return copy_project(pipeline_project, tmp_path_factory.mktemp("hostile") / "project")


def _stage_command(project: Path, stage: str) -> list[str]:
    """A stage's command from dvc.yaml, run directly (DVC would retrain a modified dependency)."""
    return yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage]["cmd"].split()


def _run_unsafe_default(command: list[str], project: Path) -> subprocess.CompletedProcess:
    env = {**project_env(project), **UNSAFE_DEFAULT}
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)


def _bad_files(tmp: Path, marker: Path, model: Path) -> dict[str, Path]:
    """A payload, a truncated real checkpoint, garbage bytes, and a safe file that is no model."""
    tmp.mkdir(exist_ok=True)
    truncated, garbage, not_a_model = tmp / "truncated.pt", tmp / "garbage.pt", tmp / "not_a_model.pt"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    garbage.write_bytes(b"\x80\x02garbage" * 50)
    torch.save({"weights": torch.zeros(3)}, not_a_model)
    return {
        "payload": hostile_checkpoint(tmp / "evil.pt", marker),
        "truncated": truncated,
        "garbage": garbage,
        "not a model": not_a_model,
    }


def _assert_refused_in_one_line(result: subprocess.CompletedProcess, kind: str, marker: Path) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    expected = "is not a model file" if kind == "not a model" else "is unsafe or corrupt, not loaded"
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["payload", "truncated", "garbage", "not a model"])
def test_predict_refuses_a_bad_model_file(project, kind, tmp_path):
    marker = tmp_path / "payload_ran"
    bad = _bad_files(tmp_path / "files", marker, project / "models/best.pt")[kind]
    image = next(make_image_folder(tmp_path / "images", n_train=1, n_test=1, size=24).rglob("*.png"))
    command = [sys.executable, "-m", "transferlab", "predict", str(image), "--model", str(bad)]
    _assert_refused_in_one_line(_run_unsafe_default(command, project), kind, marker)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["evaluate", "select_best"])
@pytest.mark.parametrize("kind", ["payload", "truncated", "not a model"])
def test_evaluate_and_select_best_refuse_a_bad_model_file_and_keep_their_outputs(project, stage, kind, tmp_path):
    marker = tmp_path / "payload_ran"
    models_dir = project / "models"
    backup = tmp_path / "models_backup"
    shutil.copytree(models_dir, backup)
    outputs = {path: path.read_bytes() for path in (project / "metrics").glob("*.json")}
    try:
        bad = _bad_files(tmp_path / "files", marker, models_dir / "tinyvgg.pt")[kind]
        for model in [models_dir / "tinyvgg.pt", *(models_dir / "transfer").glob("*.pt")]:
            shutil.copy(bad, model)
        result = _run_unsafe_default(_stage_command(project, stage), project)
        _assert_refused_in_one_line(result, kind, marker)
        assert {path: path.read_bytes() for path in outputs} == outputs, "existing outputs untouched"
    finally:
        shutil.rmtree(models_dir)
        shutil.copytree(backup, models_dir)
