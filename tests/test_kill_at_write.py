"""Kill injection at the pipeline's writes: a stage is killed at its atomic writes (outputs, cache
entries, training states), by SIGKILL just before the rename that completes the write (the
temporary whole, a replaced directory already gone) or by SIGINT just after it (between one
write and the next). Each time, through the real `dvc repro`:

- the stage fails and `dvc.lock` is unchanged;
- every output file present is byte-identical to the uninterrupted run's: none partial or mixed;
- after SIGINT no temporary is left, in the project or the cache; after SIGKILL the next write
  sweeps them;
- the next run writes no training state or cache entry again that a killed run had completed
  (it resumes), compared by path relative to the project and the cache, and the rerun completes
  with outputs byte-identical to the uninterrupted run's.

Every write is classified by its path into a kind (`KINDS`; an unclassified write fails). By
default every kind is killed once (`DEFAULT_CHAINS`): each stage's kinds in the order the stage
writes them, each run killed at the first write of its kind, the next run resuming from it, and
a last run completing. `KILL_MATRIX=full` kills every stage of `FULL_CASES` at every write, by
both signals, each kill followed by a rerun (tens of minutes).

The harness is `helpers/kill_at_write/sitecustomize.py` (it wraps `os.replace` in the stage's
process only). TensorBoard runs are written live by design and are left out (docs/guarantees.md).
"""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers.images import make_image_folder
from helpers.projects import locked_outputs, machine_cache, make_project, project_env, tiny_params, write_params

pytestmark = pytest.mark.slow

HARNESS = Path(__file__).parent / "helpers" / "kill_at_write"
SIGKILL_BEFORE, SIGINT_AFTER = ("KILL", "before"), ("INT", "after")
FULL = os.environ.get("KILL_MATRIX") == "full"

# The kinds of write, by the harness's key of the target (`cache:` relative to the machine cache,
# `project:` relative to the project); each write is of exactly one kind.
KINDS = {
    "download": r"^project:data/prepared$",
    "subset": r"^project:data/subsets/[^/]+\.json$",
    "training state": r"^project:checkpoints/[^/]+/[^/]+/epoch_\d+\.pt$",
    "head state": r"^cache:heads/[^/]+/epoch_\d+\.pt$",
    "tail state": r"^cache:tails/[^/]+/epoch_\d+\.pt$",
    "feature shard": r"^cache:features/[^/]+/(onnxruntime|torch)-[^/]+/[^/]+\.pt$",
    "activation shard": r"^cache:features/[^/]+/before_last_\d+_stages/(onnxruntime|torch)-[^/]+/[^/]+\.pt$",
    "onnx export": r"^cache:features/[^/]+/derived/onnx_[^/]+\.pt$",
    "derived artefact": r"^cache:features/[^/]+/derived/(?!onnx_)[^/]+\.pt$",
    "projector": r"^cache:projector/[^/]+\.pt$",
    "model file": r"^project:models/",
    "model summaries": r"^project:reports/(\.model_summaries\.[^/]+\.tmp/[^/]+|model_summaries)$",
    "leaderboard": r"^project:reports/leaderboard\.md$",
    "metrics": r"^project:(metrics|reports)/[^/]+\.(json|pt)$",
    "plots": r"^project:(plots/.+|reports/predictions\.png)$",
}

# (fixture, stage, [(kind, how), ...]): each kind killed once, in the order the stage writes them.
DEFAULT_CHAINS = [
    ("frozen", "download", [("download", SIGKILL_BEFORE)]),
    ("frozen", "subset", [("subset", SIGINT_AFTER)]),
    (
        "frozen",
        "train_tinyvgg",
        [
            ("training state", SIGINT_AFTER),
            ("model file", SIGKILL_BEFORE),
            ("plots", SIGINT_AFTER),
            ("metrics", SIGKILL_BEFORE),
        ],
    ),
    (
        "frozen",
        "train_transfer",
        [
            ("derived artefact", SIGKILL_BEFORE),
            ("feature shard", SIGINT_AFTER),
            ("model summaries", SIGKILL_BEFORE),
            ("head state", SIGINT_AFTER),
        ],
    ),
    (
        "partial",
        "train_transfer",
        [("onnx export", SIGINT_AFTER), ("activation shard", SIGKILL_BEFORE), ("tail state", SIGINT_AFTER)],
    ),
    ("frozen", "evaluate", [("projector", SIGINT_AFTER)]),
    ("frozen", "select_best", [("leaderboard", SIGKILL_BEFORE)]),
]

FULL_CASES = [
    ("frozen", "download"),
    ("frozen", "subset"),
    ("frozen", "train_tinyvgg"),
    ("frozen", "train_transfer"),
    ("fine_tuned", "train_transfer"),
    ("frozen", "evaluate"),
    ("fine_tuned", "evaluate"),
    ("partial", "train_transfer"),
    ("frozen", "select_best"),
]


def kill_params(source: Path, freeze: bool, trainable_stages: int = 0, runtime: str = "torch") -> dict:
    """The tiny params with a 1 x 1 x 2 grid (fewer writes, the same kinds). 12 images: batches of
    8 and 4 (at 32 px lite0's BatchNorm cannot fine-tune on a batch of one 1 x 1 map)."""
    params = tiny_params(source)
    params.update(train_size=12, trainable_stages=trainable_stages)
    params["transfer"].update(freeze=freeze, runtime=runtime)
    return params


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_image_folder(
        tmp_path_factory.mktemp("data") / "images", classes=("red", "green", "blue"), n_train=20, n_test=8, size=24
    )


def _counted_repro(project: Path, args: list[str]) -> None:
    """An uninterrupted `dvc repro`, its writes logged in `<project>/../writes.log` (from an empty
    machine cache: the fixtures' projects are new)."""
    env = harness_env("count", project.parent / "writes.log", machine_cache(project))
    _dvc(project, args, check=True, **env)


def _repro_project(tmp_path_factory, source: Path, **params) -> Path:
    """A project after one uninterrupted, counted `dvc repro`."""
    path = make_project(tmp_path_factory.mktemp("kill") / "project", kill_params(source, **params))
    _counted_repro(path, ["repro"])
    return path


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, source) -> Path:
    """Frozen lite0 with PyTorch features (feature shards, heads' states, derived artefacts)."""
    return _repro_project(tmp_path_factory, source, freeze=True)


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, source) -> Path:
    return _repro_project(tmp_path_factory, source, freeze=False)


@pytest.fixture(scope="module")
def partial(tmp_path_factory, source, frozen) -> Path:
    """The last stage trained on cached activations of ONNX Runtime (the export, the activation
    shards, the tails' states): a copy of `frozen` (its data, subsets, TinyVGG) with these params,
    `train_transfer` reproduced on an empty machine cache."""
    path = tmp_path_factory.mktemp("kill") / "project"
    shutil.copytree(frozen, path, symlinks=True, ignore=lambda folder, _: ["tmp"] if folder.endswith(".dvc") else [])
    write_params(path, kill_params(source, freeze=True, trainable_stages=1, runtime="onnxruntime"))
    _counted_repro(path, ["repro", "--single-item", "train_transfer"])
    return path


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


def temporaries(*folders: Path) -> list[Path]:
    """Temporaries of atomic writes left in the project or the machine cache."""
    return [
        path
        for folder in folders
        for path in folder.rglob(".*.tmp")
        if ".dvc" not in path.parts and ".git" not in path.parts
    ]


def harness_env(plan: str, log: Path, cache: Path, **extra) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HARNESS), os.environ.get("PYTHONPATH")])),
        "KILL_AT_WRITE": plan,
        "KILL_LOG": str(log),
        "TRANSFERLAB_CACHE_DIR": str(cache),
        **extra,
    }


def log_lines(log: Path) -> list[list[str]]:
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def completed(log: Path) -> list[str]:
    """The keys of the writes a run completed, in order (`cache:...` or `project:...`)."""
    return [key for tag, _, key, _ in log_lines(log) if tag != "KILLED"]


def killed_at(log: Path) -> str | None:
    return next((key for tag, _, key, _ in log_lines(log) if tag == "KILLED"), None)


def counted_writes(project: Path, stage: str) -> list[str]:
    """The keys of `stage`'s writes in the fixture's uninterrupted run."""
    return [key for tag, _, key, _ in log_lines(project.parent / "writes.log") if tag == stage]


def kind(key: str) -> str:
    [found] = [name for name, pattern in KINDS.items() if re.search(pattern, key)] or ["unclassified"]
    return found


def cache_or_state(key: str) -> bool:
    """A training state or machine-cache entry (not a stage output)."""
    return key.startswith("cache:") or key.startswith("project:checkpoints/")


class Stage:
    """One stage of a fixture's project: its reference outputs, and the runs that kill and rerun it."""

    def __init__(self, project: Path, stage: str, cache: Path, tmp_path: Path):
        self.project, self.stage, self.cache, self.tmp_path = project, stage, cache, tmp_path
        self.outputs = stage_outputs(project, stage)
        self.reference = snapshot(project, self.outputs)
        self.locked = without_tensorboard(locked_outputs(project))
        self.lock = (project / "dvc.lock").read_text()
        self.done: set[str] = set()  # training states and cache entries completed since the last clean run
        self.runs = 0

    def _run(self, plan: str, **env) -> tuple[subprocess.CompletedProcess, Path]:
        self.runs += 1
        log = self.tmp_path / f"run{self.runs}.log"
        # --force: run the stage, never restore the uninterrupted run's outputs from DVC's cache
        args = ["repro", "--force", "--single-item", self.stage]
        result = _dvc(self.project, args, **harness_env(plan, log, self.cache, **env))
        redone = [key for key in completed(log) if key in self.done]
        assert redone == [], f"the run wrote again what a killed run had completed: {redone}"
        return result, log

    def kill(self, plan: str, how: tuple[str, str], case: str) -> str:
        """Run the stage, killed as `plan` says; check what it leaves; the key it was killed at."""
        sig, when = how
        killed, log = self._run(plan, KILL_SIGNAL=sig, KILL_WHEN=when)
        case = f"{case}, {sig} {when} ({killed_at(log)})"
        assert killed.returncode != 0, case
        assert killed_at(log) is not None, case + killed.stderr
        assert "Traceback" not in killed.stderr, case + killed.stderr
        assert (self.project / "dvc.lock").read_text() == self.lock, case
        present = snapshot(self.project, self.outputs)
        assert all(self.reference.get(path) == content for path, content in present.items()), case
        if sig == "INT":
            assert temporaries(self.project, self.cache) == [], case
        self.done |= {key for key in completed(log) if cache_or_state(key)}
        return killed_at(log)

    def rerun(self, case: str) -> None:
        """Run the stage to the end: the uninterrupted run's outputs, no temporary left."""
        rerun, _ = self._run("count")
        assert rerun.returncode == 0, case + rerun.stdout + rerun.stderr
        assert without_tensorboard(locked_outputs(self.project)) == self.locked, case
        assert snapshot(self.project, self.outputs) == self.reference, case
        assert temporaries(self.project, self.cache) == [], case
        self.lock = (self.project / "dvc.lock").read_text()
        self.done = set()


def stage_cache(project: Path, stage: str, tmp_path: Path) -> Path:
    """The training stages and evaluate start from an empty cache, so their cache writes (evaluate's:
    features of the test images, the projector) are killed too; the others use the project's (they
    write none)."""
    return tmp_path / "kill_cache" if stage.startswith("train_") or stage == "evaluate" else machine_cache(project)


def test_every_kind_of_write_is_killed_by_default_and_every_write_has_a_kind(frozen, partial):
    writes = {key for project in (frozen, partial) for tag, _, key, _ in log_lines(project.parent / "writes.log")}
    assert [key for key in writes if kind(key) == "unclassified"] == []
    assert {kind(key) for key in writes} == set(KINDS)
    assert sorted(k for _, _, chain in DEFAULT_CHAINS for k, _ in chain) == sorted(KINDS)


@pytest.mark.skipif(FULL, reason="KILL_MATRIX=full: every write, below")
@pytest.mark.parametrize(("mode", "stage", "chain"), DEFAULT_CHAINS, ids=[f"{m}-{s}" for m, s, _ in DEFAULT_CHAINS])
def test_a_kill_at_each_kind_of_write_leaves_no_partial_output_and_the_rerun_matches(
    request, mode, stage, chain, tmp_path
):
    project = request.getfixturevalue(mode)
    writes = counted_writes(project, stage)
    for kind_name, _ in chain:
        assert any(kind(key) == kind_name for key in writes), f"{stage} writes no {kind_name}: {writes}"
    run = Stage(project, stage, stage_cache(project, stage, tmp_path), tmp_path)
    for kind_name, how in chain:  # each run resumes from the one killed before it
        key = run.kill(f"match:{KINDS[kind_name]}", how, f"{stage}: {kind_name}")
        assert kind(key) == kind_name, key
    run.rerun(f"{stage} after {len(chain)} kills")


@pytest.mark.skipif(not FULL, reason="KILL_MATRIX=full only (every write, both signals)")
@pytest.mark.parametrize(("mode", "stage"), FULL_CASES)
def test_a_kill_at_any_write_leaves_no_partial_output_and_the_rerun_matches(request, mode, stage, tmp_path):
    project = request.getfixturevalue(mode)
    writes = counted_writes(project, stage)
    assert writes, stage
    for n in range(1, len(writes) + 1):
        for how in (SIGKILL_BEFORE, SIGINT_AFTER):
            cache = stage_cache(project, stage, tmp_path / f"{n}_{how[0]}")
            run = Stage(project, stage, cache, tmp_path / f"{n}_{how[0]}")
            run.tmp_path.mkdir()
            case = f"write {n}/{len(writes)} ({writes[n - 1]})"
            assert kind(run.kill(str(n), how, case)) == kind(writes[n - 1]), case
            run.rerun(case)
            if cache.is_relative_to(tmp_path):
                shutil.rmtree(cache, ignore_errors=True)


def test_a_planted_stale_temporary_is_swept(frozen):
    project = frozen
    planted = [project / "reports" / ".leaderboard.md.planted.tmp", project / "plots" / ".confusion.planted.tmp"]
    planted[0].write_text("left by a killed process")
    planted[1].mkdir()
    (planted[1] / "tinyvgg.json").write_text("{")
    _dvc(project, ["repro", "--force", "--single-item", "select_best"], check=True)
    assert not any(path.exists() for path in planted)
    assert os.listdir(project / "plots" / "confusion")
