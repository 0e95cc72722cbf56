"""Shared fixtures: tiny ImageFolder trees, a private machine-wide cache, params.yaml as a dict,
train_transfer on a tiny grid, and one tiny project after one cold `dvc repro` per session
(`pipeline_project`; tests take copies, `copy_project`).

Plain helpers live in tests/helpers/ (import them from there, never from conftest)."""

import copy
import os
from pathlib import Path

import pytest
import yaml

from helpers.images import make_image_folder
from helpers.projects import ROOT, make_project, pipeline_params, run
from helpers.sources import read_source
from transferlab import params
from transferlab.paths import TransferPaths

PARAMS_YAML = ROOT / "params.yaml"


@pytest.fixture(scope="session", autouse=True)
def _test_machine_cache(tmp_path_factory):
    """No test touches the user's machine-wide cache: the session has its own."""
    os.environ["TRANSFERLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("machine_cache"))


@pytest.fixture(scope="session")
def pipeline_source(tmp_path_factory) -> Path:
    """The shared project's data: 20 train and 8 test images a class, red, green and blue, 24 px."""
    return make_image_folder(
        tmp_path_factory.mktemp("pipeline_data") / "images",
        classes=("red", "green", "blue"),
        n_train=20,
        n_test=8,
        size=24,
    )


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory, pipeline_source) -> Path:
    """A tiny project (`pipeline_params`: lite0 at 32 px on a 2 x 2 grid, TinyVGG at 16 px) after one
    complete, cold `dvc repro`, its machine-wide cache (features, the ONNX export, head states)
    beside it. Built once per session and never changed: a test that needs a project after a run
    takes a copy (`helpers.projects.copy_project(pipeline_project, tmp_path / "project")`)."""
    project = make_project(tmp_path_factory.mktemp("pipeline") / "project", pipeline_params(pipeline_source))
    run(["dvc", "repro"], project)
    return project


@pytest.fixture
def image_folder_factory():
    """`make_image_folder` as a fixture: image_folder_factory(tmp_path / "ds", classes=(...), ...)."""
    return make_image_folder


@pytest.fixture(scope="session")
def _params_yaml_dict() -> dict:
    return yaml.safe_load(PARAMS_YAML.read_text())


@pytest.fixture
def params_dict(_params_yaml_dict) -> dict:
    """The repository's params.yaml, parsed; a deep copy each test may modify freely."""
    return copy.deepcopy(_params_yaml_dict)


@pytest.fixture
def grid_run(tmp_path, monkeypatch, image_folder_factory):
    """train_transfer(**overrides) on 6 tiny train images of 3 classes, lite0 at 32 px, with the
    cache folder `cache`; each call writes into its own folder and returns (results, that folder)."""
    from transferlab import data, subsets
    from transferlab.transfer import train_transfer

    monkeypatch.chdir(tmp_path)
    dataset = read_source(image_folder_factory(tmp_path / "images", n_train=4, n_test=2, size=8), 8)
    data.save(dataset, tmp_path / "prepared")
    subsets.save(
        subsets.make_subsets(dataset.train.labels, dataset.test.labels, dataset.classes, 0, 6, (6,), 3, 6),
        tmp_path / "subsets",
    )
    calls = []

    def run(freeze=True, cache="features", **axes):
        raw = yaml.safe_load(PARAMS_YAML.read_text())
        raw.update(model="effnet_lite0", train_size=6, **axes)
        raw["transfer"].update(freeze=freeze, image_size=32, batch_size=3)
        out = tmp_path / f"run{len(calls)}"
        calls.append(out)
        paths = TransferPaths(
            tmp_path / "prepared",
            tmp_path / "subsets",
            out / "models",
            out / "metrics.json",
            out / "plots",
            out / "runs",
            out / "summaries",
        )
        results = train_transfer(params.parse(raw), paths, tmp_path / cache)
        return results, out

    run.dataset = dataset
    return run
