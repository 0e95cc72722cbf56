"""A team on one DVC remote: a real S3 server (moto's, on loopback), a bare git repository as
`origin`, two clones. A runs the tiny pipeline and pushes everything; B pulls and trains nothing.
End to end, the real `dvc` and `git`."""

import json
import logging
import socket
from pathlib import Path

import pytest

from helpers.images import make_image_folder
from helpers.projects import GIT_IDENTITY, commit_all, make_project, run, tiny_params

pytestmark = pytest.mark.slow

BUCKET = "transferlab"
PUSHED_OUTPUTS = ("models/best.pt", "models/tinyvgg.pt", "metrics/evaluation.json", "reports/leaderboard.md")
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
    """Clone A after `dvc repro`, an experiment, and pushing git, DVC data, run cache and the
    experiment; `origin`, the bare git repository they went to."""
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
    run(["dvc", "exp", "run", "-n", "two-epochs", "-S", "epochs=2"], a)  # (its outputs stay in A's workspace)
    run(["dvc", "exp", "push", "origin", "two-epochs"], a)
    return {"a": a, "origin": origin, "root": root, "pushed": pushed}


def clone(team: dict[str, Path], name: str) -> Path:
    """A teammate's fresh clone of `origin`, on a machine of its own (its own feature cache)."""
    path = team["root"] / name / "project"
    path.parent.mkdir()
    run(["git", "clone", "-q", str(team["origin"]), str(path)], path.parent)
    return path


def test_a_teammate_pulls_and_reproduces_without_training(team):
    b = clone(team, "b")
    run(["dvc", "pull", "--run-cache"], b)
    repro = run(["dvc", "repro"], b)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "Data and pipelines are up to date." in repro.stdout
    assert not (b.parent / "machine_cache").exists()  # no backbone, no feature: nothing was computed
    assert {output: (b / output).read_bytes() for output in PUSHED_OUTPUTS} == team["pushed"]
    assert run(["dvc", "status"], b).stdout.strip() == "Data and pipelines are up to date."


def test_a_teammate_sees_the_pushed_experiment_with_its_metrics(team):
    b = clone(team, "c")
    run(["dvc", "exp", "pull", "origin", "two-epochs"], b)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], b).stdout)
    experiments = {e["name"]: e["revs"][0]["data"] for commit in shown for e in commit.get("experiments") or []}
    assert set(experiments) == {"two-epochs"}
    data = experiments["two-epochs"]
    assert data["params"]["params.yaml"]["data"]["epochs"] == 2
    transfer = data["metrics"]["metrics/transfer.json"]["data"]
    assert list(transfer) == ["6_images-effnet_lite0-2_epochs"]


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
