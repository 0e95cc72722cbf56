"""A team on one DVC remote: a real S3 server (moto's, on loopback), a bare git repository as
`origin`, teammates' clones. A runs the tiny pipeline and pushes everything, then an experiment
with its run cache; B pulls and trains nothing, from dvc.lock or, for the experiment's params,
from the run cache alone. End to end, the real `dvc` and `git`."""

import json
import logging
import socket
from pathlib import Path

import pytest
import yaml

from helpers.images import make_image_folder
from helpers.projects import GIT_IDENTITY, commit_all, make_project, run, tiny_params, write_params
from helpers.stage_marks import marker_env, stages_started

pytestmark = pytest.mark.slow

BUCKET = "transferlab"
SUBSETS = ("data/subsets/tinyvgg_train.json", "data/subsets/transfer_train.json", "data/subsets/test.json")
PUSHED_OUTPUTS = ("models/best.pt", "models/tinyvgg.pt", "reports/evaluation.json", "reports/leaderboard.md")
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint(monkeypatch_module) -> str:
    """A real S3 server on 127.0.0.1 (moto's server mode, a port the OS chose) with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in CREDENTIALS.items():
        monkeypatch_module.setenv(key, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request in failure reports
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def team(tmp_path_factory, s3_endpoint) -> dict[str, Path]:
    """Clone A after `dvc repro`, an experiment (`EXPERIMENT`, not committed), and pushing git, DVC
    data, run cache and the experiment with its run cache; `origin`, the bare git repository they
    went to; `experiment_subsets`, the experiment's subsets."""
    root = tmp_path_factory.mktemp("team")
    source = make_image_folder(root / "images", classes=("red", "green", "blue"), n_train=20, n_test=8, size=24)
    params = tiny_params(source)
    params.update(train_size=6, epochs=1)
    origin = root / "origin.git"
    run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(origin)], root)
    a = make_project(root / "a" / "project", params)
    run(["git", "remote", "add", "origin", str(origin)], a)
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc"], a)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3_endpoint], a)
    run(["dvc", "repro"], a)
    commit_all(a, "baseline, with its remote")
    run(["dvc", "push", "--run-cache"], a)
    # A model registry's version of the artifact: a GTO-style annotated tag <name>@v<semver>.
    run(["git", *GIT_IDENTITY, "tag", "-a", "cifar10-classifier@v1.0.0", "-m", "baseline model"], a)
    run(["git", "push", "-q", "--follow-tags", "origin", "HEAD:main"], a)
    pushed = {output: (a / output).read_bytes() for output in PUSHED_OUTPUTS}
    # (its outputs stay in A's workspace; its run-cache entries go to the remote with it)
    run(["dvc", "exp", "run", "-n", "two-epochs", *(f"-S{key}={value}" for key, value in EXPERIMENT.items())], a)
    subsets = {name: (a / name).read_bytes() for name in SUBSETS}
    run(["dvc", "exp", "push", "--run-cache", "origin", "two-epochs"], a)
    return {"a": a, "origin": origin, "root": root, "pushed": pushed, "experiment_subsets": subsets}


def clone(team: dict[str, Path], name: str) -> Path:
    """A teammate's fresh clone of `origin`, on a machine of its own (its own feature cache)."""
    path = team["root"] / name / "project"
    path.parent.mkdir()
    run(["git", "clone", "-q", str(team["origin"]), str(path)], path.parent)
    return path


def test_a_teammate_pulls_and_reproduces_without_training(team):
    """From the committed dvc.lock and the outputs it names (no run cache needed)."""
    b = clone(team, "b")
    run(["dvc", "pull"], b)
    repro = run(["dvc", "repro"], b)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "Data and pipelines are up to date." in repro.stdout
    assert not (b.parent / "machine_cache").exists()  # no backbone, no feature: nothing was computed
    assert {output: (b / output).read_bytes() for output in PUSHED_OUTPUTS} == team["pushed"]
    assert run(["dvc", "status"], b).stdout.strip() == "Data and pipelines are up to date."


EXPERIMENT = {"epochs": 2, "train_size": 9}  # the pushed experiment's params, never committed


def switched_to_the_experiments_params(project: Path) -> None:
    """params.yaml as the pushed experiment had it; the committed dvc.lock stays the baseline's."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params.update(EXPERIMENT)
    write_params(project, params)


def marked_repro(project: Path, args: list[str]) -> tuple[str, list[str]]:
    """`dvc args` with the stage marker: its output, and the stage commands that ran, in order."""
    log = project.parent / "stages_run.log"
    result = run(["dvc", *args], project, env_extra=marker_env(log))
    return result.stdout, stages_started(log)


def test_the_run_cache_restores_what_no_lock_names_without_running_a_command(team):
    """B's dvc.lock is the baseline's (train_size 6); B sets the experiment's params (train_size
    9), whose subsets only the remote's run cache names: `dvc pull --run-cache` (the run cache's
    entries, the lock's outputs) then `dvc repro --pull subset` (the outputs the entry names, from
    the remote) restores the subsets and runs no stage command: DVC says so, and the stage marker
    saw no stage process. (The stages whose metrics and plots are `cache: false` cannot be restored
    on another machine: DVC 3 pushes a run-cache entry, not the uncached files it names.)"""
    b = clone(team, "rc")
    switched_to_the_experiments_params(b)
    run(["dvc", "pull", "--run-cache"], b)
    output, ran = marked_repro(b, ["repro", "--pull", "subset"])
    assert ran == [], output
    assert "Running stage" not in output, output
    assert "Stage 'subset' is cached - skipping run, checking out outputs" in output, output
    restored = {name: (b / name).read_bytes() for name in team["experiment_subsets"]}
    assert restored == team["experiment_subsets"]
    assert [len(chosen) for chosen in json.loads(restored["data/subsets/transfer_train.json"]).values()] == [9]
    assert run(["dvc", "status", "subset"], b).stdout.strip() == "Data and pipelines are up to date."


def test_without_the_run_cache_the_experiments_params_run_the_stage(team):
    """The control: the same clone and params without the run cache (`dvc pull`, and `--no-run-cache`
    for `dvc repro --pull`, which fetches the remote's run cache itself otherwise): the stage's
    command runs (DVC says so, the marker saw it), to the same subsets."""
    c = clone(team, "norc")
    switched_to_the_experiments_params(c)
    run(["dvc", "pull"], c)
    output, ran = marked_repro(c, ["repro", "--pull", "--no-run-cache", "subset"])
    assert ran == ["subset"], output
    assert "Running stage 'subset'" in output, output
    assert "is cached - skipping run" not in output, output
    assert {name: (c / name).read_bytes() for name in team["experiment_subsets"]} == team["experiment_subsets"]


def test_a_teammate_sees_the_pushed_experiment_with_its_metrics(team):
    b = clone(team, "c")
    run(["dvc", "exp", "pull", "origin", "two-epochs"], b)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], b).stdout)
    experiments = {e["name"]: e["revs"][0]["data"] for commit in shown for e in commit.get("experiments") or []}
    assert set(experiments) == {"two-epochs"}
    data = experiments["two-epochs"]
    assert {key: data["params"]["params.yaml"]["data"][key] for key in EXPERIMENT} == EXPERIMENT
    assert list(data["metrics"]) == ["metrics/best.json"]  # the headline: a handful of columns
    best = data["metrics"]["metrics/best.json"]["data"]
    assert best["models"] == 2 and 0 <= best["test_acc_low"] <= best["test_acc"] <= best["test_acc_high"] <= 1
    run(["dvc", "exp", "apply", "two-epochs"], b)
    run(["dvc", "pull", "reports/transfer.json"], b)  # the per-experiment detail, from the remote
    transfer = json.loads((b / "reports/transfer.json").read_text())
    assert list(transfer) == ["9_images-effnet_lite0-lr_0.001-wd_0-seed_42-2_epochs"]


def test_the_best_model_is_an_artifact_anyone_can_get(team, tmp_path):
    """The latest registered version (git tag cifar10-classifier@v1.0.0), from the remote."""
    run(["dvc", "artifacts", "get", str(team["origin"]), "cifar10-classifier", "-o", "best.pt"], tmp_path)
    assert (tmp_path / "best.pt").read_bytes() == team["pushed"]["models/best.pt"]


def free_port() -> int:
    """A port nothing listens on (the OS gave it, and it was closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("problem", ["wrong endpoint", "missing bucket"])
def test_a_bad_remote_is_dvcs_one_clear_error_and_nothing_local_is_lost(team, s3_endpoint, problem):
    a = team["a"]
    if problem == "wrong endpoint":
        url, endpoint = f"s3://{BUCKET}/dvc", f"http://127.0.0.1:{free_port()}"
    else:
        url, endpoint = "s3://no-such-bucket/dvc", s3_endpoint
    name = problem.replace(" ", "-")
    run(["dvc", "remote", "add", "--local", name, url], a)
    run(["dvc", "remote", "modify", "--local", name, "endpointurl", endpoint], a)
    before = {path: (a / path).read_bytes() for path in ("models/best.pt", "dvc.lock", "metrics/best.json")}
    pushed = run(["dvc", "push", "-r", name, "models/best.pt"], a, check=False, env_extra={"AWS_MAX_ATTEMPTS": "1"})
    assert pushed.returncode != 0
    errors = [line for line in pushed.stderr.splitlines() if line.startswith("ERROR")]
    assert errors, pushed.stderr
    assert "Traceback" not in pushed.stderr
    assert {path: (a / path).read_bytes() for path in before} == before
