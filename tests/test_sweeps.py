"""DVC's sweeps on one machine-wide feature cache: the queue's workers share it, and damage to it
is recomputed, never fatal. End to end, the real `dvc`, on a tiny generated dataset."""

import json
import time
from pathlib import Path

import pytest

from helpers.hostile import UNSAFE_DEFAULT, hostile_checkpoint
from helpers.images import make_image_folder
from helpers.projects import commit_all, machine_cache, make_project, run, tiny_params
from helpers.stage_marks import intervals_by_workspace, marker_env
from transferlab.features import FeatureCache

pytestmark = pytest.mark.slow

VAL_SIZE, TEST_SIZE = 9, 12


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """A committed project after `dvc repro` of one experiment (lite0, 6 images, 1 epoch)."""
    source = make_image_folder(
        tmp_path_factory.mktemp("data") / "images", classes=("red", "green", "blue"), n_train=20, n_test=8, size=24
    )
    params = tiny_params(source)
    params.update(train_size=6, epochs=1)
    params["subset"].update(val_size=VAL_SIZE, test_size=TEST_SIZE)
    project = make_project(tmp_path_factory.mktemp("sweep") / "project", params)
    run(["dvc", "repro"], project)
    commit_all(project, "baseline")
    return project


def lite0_cache(cache_dir: Path) -> FeatureCache:
    """The cache the pipeline's lite0 features go to (params.yaml's runtime, auto: ONNX Runtime)."""
    return FeatureCache("effnet_lite0", 32, cache_dir, runtime="onnxruntime")


def wait_for_queue(project: Path, env: dict, timeout: float = 600) -> str:
    """Poll `dvc queue status` until nothing is queued or running; its last output."""
    deadline = time.monotonic() + timeout
    while True:
        status = run(["dvc", "queue", "status"], project, env_extra=env).stdout
        if not any(state in status for state in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(2)


def experiments_shown(project: Path) -> dict[str, dict]:
    """`dvc exp show --json`: experiment name -> its params and metrics (the baseline's are skipped)."""
    shown = {}
    for commit in json.loads(run(["dvc", "exp", "show", "--json"], project).stdout):
        for experiment in commit.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision["data"]
                shown[experiment["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": {path: m["data"] for path, m in data["metrics"].items()},
                }
    return shown


@pytest.mark.parametrize(
    "damage",
    ["truncated feature shard", "garbage head state", "feature shard with a payload", "head state with a payload"],
)
def test_a_damaged_cache_is_one_line_and_the_same_result(baseline, damage, tmp_path):
    """(Before the sweep below, which changes the workspace.) A payload never runs, whatever
    torch's default."""
    cache_dir, marker = machine_cache(baseline), tmp_path / "payload_ran"
    # the shard train_transfer wrote (train and validation images; evaluate's, the test images, came later)
    shard = min(lite0_cache(cache_dir).shards_dir.glob("*.pt"), key=lambda path: path.stat().st_mtime_ns)
    [head_state] = (cache_dir / "heads").glob("*/epoch_0001.pt")
    damaged = shard if "shard" in damage else head_state
    if damage == "truncated feature shard":
        damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    elif damage == "garbage head state":
        damaged.write_bytes(b"garbage" * 100)
    else:
        hostile_checkpoint(damaged, marker)
    before = (baseline / "reports/transfer.json").read_text()
    result = run(["dvc", "repro", "--force", "--single-item", "train_transfer"], baseline, env_extra=UNSAFE_DEFAULT)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert not marker.exists()
    [notice] = [line for line in output.splitlines() if line.startswith("warning: cache entry")]
    assert str(damaged) in notice and notice.endswith("removed, it will be recomputed")
    assert (baseline / "reports/transfer.json").read_text() == before


def test_queued_experiments_run_in_parallel_on_one_cache(baseline):
    # An empty machine-wide cache, so the two queued experiments are the first to need these images.
    env = {"TRANSFERLAB_CACHE_DIR": str(baseline.parent / "sweep_cache")}
    marked = baseline.parent / "sweep_stages.log"  # each stage process's start and end, and workspace
    run(["dvc", "exp", "run", "--queue", "-S", "train_size=9,15"], baseline, env_extra=env)
    # The workers take the env from here.
    run(["dvc", "queue", "start", "-j", "2"], baseline, env_extra={**env, **marker_env(marked)})
    try:
        status = wait_for_queue(baseline, env)
    finally:
        run(["dvc", "queue", "stop"], baseline, env_extra=env)
    assert status.count("Success") == 2 and "Failed" not in status, status
    # The two ran at the same time: each in a workspace of its own, from its first stage's start to
    # its last stage's end, the two spans intersect.
    spans = intervals_by_workspace(marked)
    assert len(spans) == 2 and Path(baseline) not in map(Path, spans), spans
    [(start_1, end_1), (start_2, end_2)] = spans.values()
    assert max(start_1, start_2) < min(end_1, end_2), spans

    shown = experiments_shown(baseline)
    assert sorted(e["params"]["train_size"] for e in shown.values()) == [9, 15]
    for experiment in shown.values():  # each with its flat headline to sort by, and nothing else
        assert list(experiment["metrics"]) == ["metrics/best.json"]
        best = experiment["metrics"]["metrics/best.json"]
        assert best["models"] == 2 and 0 <= best["test_acc"] <= 1 and 0 <= best["tinyvgg_test_acc"] <= 1

    # Both needed the validation and test subsets and the 9 images both train subsets share: each
    # is stored once.
    stats = lite0_cache(Path(env["TRANSFERLAB_CACHE_DIR"])).stats()
    assert stats["images"] == stats["entries"] == 15 + VAL_SIZE + TEST_SIZE

    # Later experiments that need only images seen before compute nothing, in a temporary
    # workspace as in the main one.
    for command in (
        ["dvc", "exp", "run", "--temp", "-S", "train_size=12"],
        ["dvc", "exp", "run", "-S", "train_size=3"],
    ):
        rerun = run(command, baseline, env_extra=env)
        assert "Running stage 'train_transfer'" in rerun.stdout  # it ran, and needed no backbone pass:
        assert "computing" not in rerun.stderr + rerun.stdout
        assert lite0_cache(Path(env["TRANSFERLAB_CACHE_DIR"])).stats() == stats
