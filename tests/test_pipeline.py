"""End to end: the real `dvc repro` in a temporary copy of the project, on a tiny dataset."""

import json
import math
from pathlib import Path

import pytest

from helpers.projects import commit_all, copy_project, run
from helpers.tensorboard import events

EXPERIMENTS = [
    "9_images-effnet_lite0-1_epochs",
    "9_images-effnet_lite0-2_epochs",
    "15_images-effnet_lite0-1_epochs",
    "15_images-effnet_lite0-2_epochs",
]

pytestmark = pytest.mark.slow


def scalars(run_dir: Path, tag: str) -> list[float]:
    return [event.value for event in events(run_dir).Scalars(tag)]


@pytest.fixture(scope="module")
def project(tmp_path_factory, pipeline_project) -> Path:
    """A copy of the session's project after its one complete `dvc repro` (conftest)."""
    return copy_project(pipeline_project, tmp_path_factory.mktemp("e2e") / "project")


def test_repro_writes_every_output(project):
    for path in [
        "data/prepared/train_images.npy",
        "data/subsets/test.json",
        "models/tinyvgg.pt",
        "models/best.pt",
        "reports/leaderboard.md",
        "reports/predictions.png",
        "reports/model_summaries/effnet_lite0.txt",
        "plots/tinyvgg/loss.json",
        "plots/tinyvgg/accuracy.json",
        "plots/accuracy_vs_train_size.json",
    ]:
        assert (project / path).is_file(), path
    assert sorted(p.stem for p in (project / "models/transfer").glob("*.pt")) == sorted(EXPERIMENTS)
    assert sorted(p.name for p in (project / "plots/transfer").iterdir()) == ["accuracy.json", "loss.json"]
    assert sorted(p.stem for p in (project / "plots/confusion").glob("*.json")) == sorted([*EXPERIMENTS, "tinyvgg"])
    summary = (project / "reports/model_summaries/effnet_lite0.txt").read_text()
    assert "Linear" in summary and "Trainable params" in summary


def test_metrics_are_sensible_and_consistent(project):
    tinyvgg = json.loads((project / "metrics/tinyvgg.json").read_text())
    transfer = json.loads((project / "metrics/transfer.json").read_text())
    evaluation = json.loads((project / "metrics/evaluation.json").read_text())
    best = json.loads((project / "metrics/best.json").read_text())
    assert sorted(transfer) == sorted(EXPERIMENTS)
    assert sorted(evaluation) == sorted([*EXPERIMENTS, "tinyvgg"])
    for name, metrics in {"tinyvgg": tinyvgg, **transfer}.items():
        assert 0 <= metrics["test_acc"] <= 1 and math.isfinite(metrics["test_loss"]) and metrics["test_loss"] > 0
        # evaluate re-scores the saved model: it must agree with the last training epoch
        assert evaluation[name]["test_acc"] == pytest.approx(metrics["test_acc"], abs=1e-6)
        assert evaluation[name]["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
    # Each class is one colour: the transfer models are well above chance (1/3 with 3 classes).
    accuracies = [transfer[name]["test_acc"] for name in EXPERIMENTS]
    assert min(accuracies) > 1 / 3 and sum(accuracies) / len(accuracies) >= 0.55, accuracies
    for name in EXPERIMENTS:  # frozen backbone: only the head trains
        assert transfer[name]["trainable_params"] == 1280 * 3 + 3 < transfer[name]["total_params"]
    ranked = sorted(
        evaluation,
        key=lambda n: (-evaluation[n]["test_acc"], evaluation[n]["test_loss"], evaluation[n]["total_params"]),
    )
    assert best["name"] == ranked[0]
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert leaderboard.index(ranked[0]) < leaderboard.index(ranked[-1])
    loss = json.loads((project / "plots/transfer/loss.json").read_text())
    curve = [row for row in loss if row["experiment"] == "15_images-effnet_lite0-2_epochs" and row["split"] == "test"]
    assert [row["epoch"] for row in curve] == [1, 2]
    assert curve[-1]["loss"] == pytest.approx(transfer["15_images-effnet_lite0-2_epochs"]["test_loss"], abs=1e-6)


def test_tensorboard_runs_hold_scalars_per_epoch(project):
    assert len(scalars(project / "runs/tinyvgg", "Loss/train")) == 2
    assert len(scalars(project / "runs/tinyvgg", "Accuracy/test")) == 2
    for name in EXPERIMENTS:
        run_dir = project / "runs/transfer" / name.replace("-", "/")
        epochs = int(name.split("-")[-1].split("_")[0])
        assert len(scalars(run_dir, "Loss/test")) == epochs
        assert len(scalars(run_dir, "Accuracy/train")) == epochs
        run = events(run_dir)
        assert any(node.op for node in run.Graph().node), "model graph"
        assert "_hparams_/session_start_info" in run.PluginTagToContent("hparams")
    assert events(project / "runs/tinyvgg").Graph().node
    assert events(project / "runs/best").Tags()["images"], "predictions figure"


def test_dvc_plots_show_draws_each_chart_once(project):
    """`dvc plots show --json`: which charts, in which order, with which series and axes."""
    shown = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert "errors" not in shown, shown.get("errors")
    charts = shown["data"]
    confusion = [f"plots/confusion/{name}.json" for name in sorted([*EXPERIMENTS, "tinyvgg"])]
    curves = ["plots/tinyvgg/loss.json", "plots/tinyvgg/accuracy.json", "plots/transfer/loss.json"]
    curves.append("plots/transfer/accuracy.json")
    assert list(charts) == [*curves, "plots/accuracy_vs_train_size.json", *confusion, "reports/predictions.png"]
    assert all(len(renders) == 1 for renders in charts.values()), "one chart per id"
    specs = {name: renders[0]["content"] for name, renders in charts.items() if renders[0]["type"] == "vega"}
    # a curve chart's rows name their file; a directory's confusion chart is named after its file
    sources = {name: {row.get("filename", name) for row in spec["data"]["values"]} for name, spec in specs.items()}
    assert all(len(files) == 1 for files in sources.values()), sources
    assert len(set().union(*sources.values())) == len(specs), "no data file drawn twice"

    for name in curves:
        spec, metric = specs[name], "loss" if name.endswith("loss.json") else "acc"
        rows = spec["data"]["values"]
        experiments = ["tinyvgg"] if "tinyvgg" in name else EXPERIMENTS
        assert {(row["experiment"], row["split"]) for row in rows} == {
            (e, split) for e in experiments for split in ("train", "test")
        }
        assert all(metric in row and ({"loss", "acc"} - {metric}).isdisjoint(row) for row in rows), "one metric"
        encoding = spec["encoding"]
        assert (encoding["x"]["field"], encoding["x"]["title"]) == ("epoch", "epoch")
        assert (encoding["y"]["field"], encoding["y"]["title"]) == (
            (metric, "cross-entropy loss") if metric == "loss" else (metric, "accuracy")
        )
        assert (encoding["color"]["field"], encoding["strokeDash"]["field"]) == ("series", "split")
    summary = specs["plots/accuracy_vs_train_size.json"]
    evaluation = json.loads((project / "metrics/evaluation.json").read_text())
    lines = {(row["model"], row["train_size"]): row["test_acc"] for row in summary["data"]["values"]}
    assert lines == {
        **{
            ("effnet_lite0", size): max(
                evaluation[f"{size}_images-effnet_lite0-{e}_epochs"]["test_acc"] for e in (1, 2)
            )
            for size in (9, 15)
        },
        **{("tinyvgg (30 images, from scratch)", size): evaluation["tinyvgg"]["test_acc"] for size in (9, 15)},
    }
    assert (summary["encoding"]["x"]["title"], summary["encoding"]["y"]["title"]) == ("train images", "test accuracy")
    for name in confusion:
        rows = specs[name]["data"]["values"]
        assert len(rows) == 12 and {"actual", "predicted"} <= set(rows[0])
    assert charts["reports/predictions.png"][0]["type"] == "image"


def test_tensorboard_one_run_per_model_and_the_evaluation(project):
    runs = project / "runs"
    run_dirs = sorted(str(path.parent.relative_to(runs)) for path in runs.glob("**/events.out.tfevents.*"))
    experiments = sorted("transfer/" + name.replace("-", "/") for name in EXPERIMENTS)
    assert run_dirs == sorted(["best", "evaluation", "tinyvgg", *experiments]), "no sub-runs"
    board = events(runs / "evaluation")
    models, classes = sorted([*EXPERIMENTS, "tinyvgg"]), ["blue", "green", "red"]
    assert sorted(board.PluginTagToContent("pr_curves")) == sorted(f"{m}/{c}" for m in models for c in classes)
    assert sorted(board.Tags()["images"]) == [f"confusion/{m}" for m in models]
    config = (runs / "evaluation/projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 2, "one frozen backbone and TinyVGG"
    for tag in ("effnet_lite0_32px", "tinyvgg_penultimate"):
        folder = next(runs.glob(f"evaluation/*/{tag}"))
        labels = (folder / "metadata.tsv").read_text().split()
        assert len(labels) == 12 and set(labels) == set(classes)
        assert (folder / "sprite.png").is_file()
    dims = [
        len(next(runs.glob(f"evaluation/*/{t}/tensors.tsv")).read_text().splitlines()[0].split("\t"))
        for t in ("effnet_lite0_32px", "tinyvgg_penultimate")
    ]
    assert dims == [1280, 4 * 4 * 4], "pooled features; TinyVGG's 4 channels at 16 / 4 px"
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    experiment = HParamsPluginData.FromString(board.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    domains = {
        info.name: [getattr(v, v.WhichOneof("kind")) for v in info.domain_discrete.values]
        for info in experiment.hparam_infos
    }
    assert domains["model"] == ["effnet_lite0", "tinyvgg"]
    assert domains["train_size"] == [9, 15, 30] and domains["epochs"] == [1, 2]
    assert [m.name.tag for m in experiment.metric_infos] == ["hparam/test_acc", "hparam/test_loss"]


def test_second_repro_reruns_nothing(project):
    result = run(["dvc", "repro"], project)
    assert "Running stage" not in result.stdout, result.stdout


def test_exp_run_and_metrics_diff(project):
    commit_all(project, "baseline")
    run(["dvc", "exp", "run", "-S", "model=effnet_lite0", "-S", "epochs=2"], project)
    transfer = json.loads((project / "metrics/transfer.json").read_text())
    assert sorted(transfer) == sorted(n for n in EXPERIMENTS if n.endswith("2_epochs"))
    diff = run(["dvc", "metrics", "diff"], project)
    assert "metrics/transfer.json" in diff.stdout
    run(
        ["dvc", "exp", "run", "-S", "model=[effnet_lite0,effnet_lite2]", "-S", "train_size=9", "-S", "epochs=1"],
        project,
    )
    transfer = json.loads((project / "metrics/transfer.json").read_text())
    assert sorted(transfer) == ["9_images-effnet_lite0-1_epochs", "9_images-effnet_lite2-1_epochs"]
    assert (project / "runs/transfer/9_images/effnet_lite2/1_epochs").is_dir()
    # Back to the baseline params: every stage comes back from DVC's run cache, runs/ included.
    run(["git", "checkout", "--", "params.yaml"], project)
    restored = run(["dvc", "repro"], project)
    assert "Running stage 'train_transfer'" not in restored.stdout, restored.stdout
    assert "Stage 'train_transfer' is cached" in restored.stdout
    for name in EXPERIMENTS:
        assert list((project / "runs/transfer" / name.replace("-", "/")).glob("events.out.tfevents.*"))
