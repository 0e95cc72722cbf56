"""Kill injection at every write: each stage is killed at each of its atomic writes (outputs, cache
entries, training states), by SIGKILL just before the rename that completes the write (the
temporary whole, a replaced directory already gone) or by SIGINT just after it (between one
write and the next): odd writes by SIGKILL, even ones by SIGINT, so both signals reach every kind
of write; `KILL_MATRIX=full` kills at every write with both (about twice the time). Each time,
through the real `dvc repro`:

- the stage fails and `dvc.lock` is unchanged;
- every output file present is byte-identical to the uninterrupted run's: none partial or mixed;
- after SIGINT no temporary is left; after SIGKILL the next write sweeps them;
- the rerun completes with outputs byte-identical to the uninterrupted run's, and writes no
  training state or cache entry again that the killed run had completed (it resumes).

The harness is `helpers/kill_at_write/sitecustomize.py` (it wraps `os.replace` in the stage's
process only). TensorBoard runs are written live by design and are left out (docs/guarantees.md).
"""

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers.images import make_image_folder
from helpers.projects import locked_outputs, make_project, project_env, tiny_params

pytestmark = pytest.mark.slow

HARNESS = Path(__file__).parent / "helpers" / "kill_at_write"
SIGKILL_BEFORE, SIGINT_AFTER = ("KILL", "before"), ("INT", "after")


def kills_at(n: int) -> list[tuple[str, str]]:
    """How write n is killed: SIGKILL just before its rename, SIGINT just after it, or both."""
    if os.environ.get("KILL_MATRIX") == "full":
        return [SIGKILL_BEFORE, SIGINT_AFTER]
    return [SIGKILL_BEFORE] if n % 2 else [SIGINT_AFTER]


def kill_params(source: Path, freeze: bool, trainable_stages: int = 0) -> dict:
    """The tiny params with a 1 x 1 x 2 grid (fewer writes, the same kinds), PyTorch features (no
    export: its cache write is `derived`'s, as the graph's and summaries'). 12 images: batches of
    8 and 4 (at 32 px lite0's BatchNorm cannot fine-tune on a batch of one 1 x 1 map)."""
    params = tiny_params(source)
    params.update(train_size=12, trainable_stages=trainable_stages)
    params["transfer"].update(freeze=freeze, runtime="torch")
    return params


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_image_folder(
        tmp_path_factory.mktemp("data") / "images", classes=("red", "green", "blue"), n_train=20, n_test=8, size=24
    )


def _repro_project(tmp_path_factory, source: Path, freeze: bool, trainable_stages: int = 0) -> Path:
    """A project after one uninterrupted `dvc repro`."""
    params = kill_params(source, freeze, trainable_stages)
    path = make_project(tmp_path_factory.mktemp("kill") / "project", params)
    _dvc(path, ["repro"], check=True)
    return path


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, source) -> Path:
    return _repro_project(tmp_path_factory, source, freeze=True)


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, source) -> Path:
    return _repro_project(tmp_path_factory, source, freeze=False)


@pytest.fixture(scope="module")
def partial(tmp_path_factory, source) -> Path:
    """The last stage trained on cached activations (their shards, the tails' states)."""
    return _repro_project(tmp_path_factory, source, freeze=True, trainable_stages=1)


def _dvc(project: Path, args: list[str], check: bool = False, **env) -> subprocess.CompletedProcess:
    """`dvc args` in `project` as from a terminal (SIGINT at its default), with extra `env`."""
    result = subprocess.run(
        ["dvc", *args],
        cwd=project,
        env={**project_env(project), **env},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        capture_output=True,
        text=True,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def without_tensorboard(outputs: dict[str, str]) -> dict[str, str]:
    return {path: md5 for path, md5 in outputs.items() if not path.startswith("runs/")}


def stage_outputs(project: Path, stage: str) -> list[str]:
    """A stage's outs, metrics and plots, as dvc.yaml lists them."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage]
    entries = [*spec.get("outs", []), *spec.get("metrics", []), *spec.get("plots", [])]
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries]


def snapshot(project: Path, outputs: list[str]) -> dict[str, bytes]:
    """Every file of `outputs` (TensorBoard runs left out) -> its bytes."""
    files = {}
    for output in outputs:
        if output.startswith("runs/"):
            continue
        path = project / output
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            files[str(file.relative_to(project))] = file.read_bytes()
    return files


def temporaries(project: Path) -> list[Path]:
    return [path for path in project.rglob(".*.tmp") if ".dvc" not in path.parts and ".git" not in path.parts]


def harness_env(plan: str, log: Path, cache: Path, **extra) -> dict[str, str]:
    return {
        "PYTHONPATH": str(HARNESS),
        "KILL_AT_WRITE": plan,
        "KILL_LOG": str(log),
        "TRANSFERLAB_CACHE_DIR": str(cache),
        **extra,
    }


def written(log: Path) -> list[str]:
    """The targets of a counted run's renames, in order."""
    return [line.split("\t", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []


def cache_or_state(target: str) -> bool:
    """A training state or machine-cache entry (not a stage output)."""
    return "/checkpoints/" in f"/{target}" or "machine_cache" in target or "kill_cache" in target


@pytest.mark.parametrize(
    ("mode", "stage"),
    [
        ("frozen", "train_tinyvgg"),
        ("frozen", "train_transfer"),
        ("fine_tuned", "train_transfer"),
        ("fine_tuned", "evaluate"),
        ("partial", "train_transfer"),
        ("frozen", "select_best"),
    ],
)
def test_a_kill_at_any_write_leaves_no_partial_output_and_the_rerun_matches(request, mode, stage, tmp_path):
    project = request.getfixturevalue(mode)
    outputs = stage_outputs(project, stage)
    reference, locked = snapshot(project, outputs), without_tensorboard(locked_outputs(project))
    # The training stages start from an empty cache, so their cache writes are killed too; the
    # scoring stages read the project's (they write none).
    cold = stage.startswith("train_")

    def cache_dir(name: str) -> Path:
        return tmp_path / f"kill_cache_{name}" if cold else project.parent / "machine_cache"

    counted = tmp_path / "count.log"
    _dvc(
        project,
        ["repro", "--force", "--single-item", stage],
        check=True,
        **harness_env("count", counted, cache_dir("count")),
    )
    writes = written(counted)
    assert len(writes) >= 4, writes
    assert snapshot(project, outputs) == reference and without_tensorboard(locked_outputs(project)) == locked
    lock = (project / "dvc.lock").read_text()  # as the counted run left it (its TensorBoard runs)

    for n in range(1, len(writes) + 1):
        for sig, when in kills_at(n):
            case = f"{sig} {when} write {n}/{len(writes)} ({writes[n - 1]})"
            cache = cache_dir(f"{n}_{sig}")
            killed_log, rerun_log = tmp_path / f"{n}_{sig}_killed.log", tmp_path / f"{n}_{sig}_rerun.log"
            env = harness_env(str(n), killed_log, cache, KILL_SIGNAL=sig, KILL_WHEN=when)
            killed = _dvc(project, ["repro", "--force", "--single-item", stage], **env)
            assert killed.returncode != 0, case
            assert "Traceback" not in killed.stderr, case + killed.stderr
            assert (project / "dvc.lock").read_text() == lock, case
            present = snapshot(project, outputs)
            assert all(reference.get(path) == content for path, content in present.items()), case
            if sig == "INT":
                assert temporaries(project) == [], case

            completed = writes[: n if when == "after" else n - 1]
            # --force: run the stage, never restore the uninterrupted run's outputs from DVC's cache
            rerun_args = ["repro", "--force", "--single-item", stage]
            rerun = _dvc(project, rerun_args, **harness_env("count", rerun_log, cache))
            assert rerun.returncode == 0, case + rerun.stdout + rerun.stderr
            assert without_tensorboard(locked_outputs(project)) == locked, case
            assert snapshot(project, outputs) == reference, case
            assert temporaries(project) == [], case
            redone = [t for t in written(rerun_log) if cache_or_state(t) and t in completed]
            assert redone == [], f"{case}: the rerun wrote again what the killed run had completed: {redone}"
            lock = (project / "dvc.lock").read_text()
            if cold:
                shutil.rmtree(cache, ignore_errors=True)


def test_a_planted_stale_temporary_is_swept(frozen):
    project = frozen
    planted = [project / "metrics" / ".evaluation.json.planted.tmp", project / "plots" / ".confusion.planted.tmp"]
    planted[0].write_text("left by a killed process")
    planted[1].mkdir()
    (planted[1] / "tinyvgg.json").write_text("{")
    _dvc(project, ["repro", "--force", "--single-item", "evaluate"], check=True)
    assert not any(path.exists() for path in planted)
    assert os.listdir(project / "plots" / "confusion")
