"""Shared fixtures: tiny ImageFolder trees, a private machine-wide cache, params.yaml as a dict.

Plain helpers live in tests/helpers/ (import them from there, never from conftest)."""

import copy
import os

import pytest
import yaml

from helpers.images import make_image_folder
from helpers.projects import ROOT

PARAMS_YAML = ROOT / "params.yaml"


@pytest.fixture(scope="session", autouse=True)
def _test_machine_cache(tmp_path_factory):
    """No test touches the user's machine-wide cache: the session has its own."""
    os.environ["TRANSFERLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("machine_cache"))


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
