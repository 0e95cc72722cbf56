"""Helpers for tests that run the real pipeline in a temporary copy of the project."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the repository root (this file: tests/helpers/)
PROJECT_FILES = [
    "stages",
    "src",
    "data/cifar10.yaml",
    "dvc.yaml",
    "params.yaml",
    ".dvc",
    ".dvcignore",
    ".gitignore",
    "pyproject.toml",
]
GIT_IDENTITY = ["-c", "user.name=test", "-c", "user.email=test@example.com"]


def run(
    args: list[str], cwd: Path, check: bool = True, env_extra: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command in project `cwd` with the test interpreter's environment (its dvc, python) on
    the CPU, and the project's own machine-wide cache (`machine_cache` beside it)."""
    env = {**project_env(Path(cwd)), **(env_extra or {})}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def project_env(project: Path) -> dict[str, str]:
    """The environment for commands in `project`: each test project is a machine of its own."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TRANSFERLAB_DEVICE": "cpu",
        "TRANSFERLAB_CACHE_DIR": str(machine_cache(project)),
    }
    env.pop("TRANSFERLAB_DEBUG", None)
    return env


def machine_cache(project: Path) -> Path:
    """The machine-wide cache directory the tests give `project`."""
    return project.parent / "machine_cache"


def tiny_params(source: Path) -> dict:
    """Small, fast params: lite0 at 32 px, a 2 x 2 grid, TinyVGG at 16 px."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source=str(source), image_size=16)
    params["subset"] = {"tinyvgg_train_size": 30, "val_size": 9, "test_size": 12}
    params["tinyvgg"].update(epochs=2, hidden_units=4, batch_size=8)
    params.update(model="effnet_lite0", train_size=[9, 15], epochs=[1, 2])
    params["transfer"].update(image_size=32, batch_size=8)
    params["select_best"]["predictions"] = 4
    return params


def pipeline_params(source: Path) -> dict:
    """`tiny_params` as the session's shared project (`pipeline_project` in conftest) runs them: the
    heads take 2 steps an epoch there, so a larger step than the default lets them learn the colours
    (TinyVGG, 8 steps from scratch, does not; it is not held to a level)."""
    params = tiny_params(source)
    params["lr"] = 0.05
    return params


def write_params(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, params: dict) -> Path:
    """A copy of the project as a fresh git repository with `params`."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache")
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    write_params(dest, params)
    run(["git", "init", "-q"], dest)
    commit_all(dest, "init")
    return dest


def copy_project(source: Path, dest: Path) -> Path:
    """A copy of project `source` at `dest` (its git repository, DVC cache and outputs) with a copy of
    its machine-wide cache beside it: the state `source`'s machine reached, at the cost of a file
    copy instead of a `dvc repro`. `dest`'s parent must hold nothing else."""
    shutil.copytree(source, dest, symlinks=True)
    if machine_cache(source).is_dir():
        shutil.copytree(machine_cache(source), machine_cache(dest), symlinks=True)
    return dest


def commit_all(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", *GIT_IDENTITY, "commit", "-qm", message], project)


def locked_outputs(project: Path) -> dict[str, str]:
    """path -> md5 of every stage output recorded in dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def experiment_run(name: str) -> str:
    """An experiment's TensorBoard run under runs/transfer, from its name:
    9_images-effnet_lite0-lr_0.05-wd_0-seed_42-1_epochs -> 9_images/effnet_lite0/lr_0.05-wd_0-seed_42/1_epochs."""
    size, model, *axes, epochs = name.split("-")
    return f"{size}/{model}/{'-'.join(axes)}/{epochs}"
