"""End to end: the real `dvc repro` in a temporary copy of the project, on a tiny dataset."""

import json
import math
from pathlib import Path

import pytest

from helpers.projects import commit_all, copy_project, experiment_run, run
from helpers.tensorboard import events

AXES = "lr_0.05-wd_0-seed_42"  # pipeline_params: one learning rate, weight decay and seed
EXPERIMENTS = [f"{size}_images-effnet_lite0-{AXES}-{epochs}_epochs" for size in (9, 15) for epochs in (1, 2)]

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
        "data/subsets/val.json",
        "reports/evaluation.json",
        "reports/predicted_classes.pt",
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
    confusion = sorted(p.stem for p in (project / "plots/confusion").glob("*.json"))
    assert confusion in (["tinyvgg", "winner"], ["winner"])  # the winner's and TinyVGG's, whatever the grid size
    summary = (project / "reports/model_summaries/effnet_lite0.txt").read_text()
    assert "Linear" in summary and "Trainable params" in summary


def test_metrics_are_sensible_and_consistent(project):
    tinyvgg = json.loads((project / "reports/tinyvgg.json").read_text())
    transfer = json.loads((project / "reports/transfer.json").read_text())
    evaluation = json.loads((project / "reports/evaluation.json").read_text())
    best = json.loads((project / "metrics/best.json").read_text())
    assert sorted(transfer) == sorted(EXPERIMENTS)
    assert sorted(evaluation) == sorted([*EXPERIMENTS, "tinyvgg"])
    for name, metrics in {"tinyvgg": tinyvgg, **transfer}.items():
        assert "test_acc" not in metrics  # training never sees the test subset
        assert 0 <= metrics["val_acc"] <= 1 and math.isfinite(metrics["val_loss"]) and metrics["val_loss"] > 0
        # evaluate re-scores the saved model on validation: it must agree with the last training epoch
        assert evaluation[name]["val_acc"] == pytest.approx(metrics["val_acc"], abs=1e-6)
        assert evaluation[name]["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-4)
        assert 0 <= evaluation[name]["test_acc"] <= 1 and evaluation[name]["hparams"]
    # Each class is one colour: the transfer models are well above chance (1/3 with 3 classes).
    accuracies = [evaluation[name]["test_acc"] for name in EXPERIMENTS]
    assert min(accuracies) > 1 / 3 and sum(accuracies) / len(accuracies) >= 0.55, accuracies
    for name in EXPERIMENTS:  # frozen backbone: only the head trains
        assert transfer[name]["trainable_params"] == 1280 * 3 + 3 < transfer[name]["total_params"]
    ranked = sorted(
        evaluation,
        key=lambda n: (-evaluation[n]["val_acc"], evaluation[n]["val_loss"], evaluation[n]["total_params"], n),
    )
    assert best["name"] == ranked[0] and best["selected_by"] == "val_acc"
    assert best["test_acc"] == evaluation[ranked[0]]["test_acc"]
    assert best["test_acc_low"] <= best["test_acc"] <= best["test_acc_high"]
    assert best["models"] == len(evaluation) and best["tinyvgg_test_acc"] == evaluation["tinyvgg"]["test_acc"]
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert leaderboard.index(ranked[0]) < leaderboard.index(ranked[-1])
    loss = json.loads((project / "plots/transfer/loss.json").read_text())
    plotted = {row["experiment"] for row in loss}
    assert len(plotted) == 2, "one line per train size: its best experiment on validation"
    name = max((n for n in EXPERIMENTS if n.startswith("15_")), key=lambda n: transfer[n]["val_acc"])
    curve = [row for row in loss if row["experiment"] == name and row["split"] == "val"]
    assert [row["epoch"] for row in curve] == list(range(1, len(curve) + 1))
    assert curve[-1]["loss"] == pytest.approx(transfer[name]["val_loss"], abs=1e-6)


def test_tensorboard_runs_hold_scalars_per_epoch(project):
    assert len(scalars(project / "runs/tinyvgg", "Loss/train")) == 2
    assert len(scalars(project / "runs/tinyvgg", "Accuracy/val")) == 2
    for name in EXPERIMENTS:
        run_dir = project / "runs/transfer" / experiment_run(name)
        epochs = int(name.split("-")[-1].split("_")[0])
        assert len(scalars(run_dir, "Loss/val")) == epochs
        assert len(scalars(run_dir, "Accuracy/train")) == epochs
        session = events(project / "runs/evaluation/hparams" / name)
        assert "_hparams_/session_start_info" in session.PluginTagToContent("hparams")
    assert any(node.op for node in events(project / "runs/transfer/graphs/effnet_lite0").Graph().node), "model graph"
    assert events(project / "runs/tinyvgg").Graph().node
    assert events(project / "runs/best").Tags()["images"], "predictions figure"


def test_dvc_plots_show_draws_each_chart_once(project):
    """`dvc plots show --json`: which charts, in which order, with which series and axes."""
    shown = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert "errors" not in shown, shown.get("errors")
    charts = shown["data"]
    confusion = sorted(f"plots/confusion/{p.name}" for p in (project / "plots/confusion").glob("*.json"))
    curves = ["plots/tinyvgg/loss.json", "plots/tinyvgg/accuracy.json", "plots/transfer/loss.json"]
    curves.append("plots/transfer/accuracy.json")
    assert list(charts) == [*curves, "plots/accuracy_vs_train_size.json", "reports/predictions.png", *confusion]
    assert all(len(renders) == 1 for renders in charts.values()), "one chart per id"
    specs = {name: renders[0]["content"] for name, renders in charts.items() if renders[0]["type"] == "vega"}
    # a curve chart's rows name their file; a directory's confusion chart is named after its file
    sources = {name: {row.get("filename", name) for row in spec["data"]["values"]} for name, spec in specs.items()}
    assert all(len(files) == 1 for files in sources.values()), sources
    assert len(set().union(*sources.values())) == len(specs), "no data file drawn twice"

    for name in curves:
        spec, metric = specs[name], "loss" if name.endswith("loss.json") else "acc"
        rows = spec["data"]["values"]
        experiments = {row["experiment"] for row in rows}
        assert experiments == {"tinyvgg"} if "tinyvgg" in name else len(experiments) == 2 <= len(EXPERIMENTS)
        assert {(row["experiment"], row["split"]) for row in rows} == {
            (e, split) for e in experiments for split in ("train", "val")
        }
        assert all(metric in row and ({"loss", "acc"} - {metric}).isdisjoint(row) for row in rows), "one metric"
        encoding = spec["encoding"]
        assert (encoding["x"]["field"], encoding["x"]["title"]) == ("epoch", "epoch")
        assert (encoding["y"]["field"], encoding["y"]["title"]) == (
            (metric, "cross-entropy loss") if metric == "loss" else (metric, "accuracy")
        )
        assert (encoding["color"]["field"], encoding["strokeDash"]["field"]) == ("series", "split")
    summary = specs["plots/accuracy_vs_train_size.json"]
    evaluation = json.loads((project / "reports/evaluation.json").read_text())
    lines = {(row["model"], row["train_size"]): row["test_acc"] for row in summary["data"]["values"]}

    def chosen_on_validation(size: int) -> str:
        names = [n for n in EXPERIMENTS if n.startswith(f"{size}_images-")]
        return max(names, key=lambda n: evaluation[n]["val_acc"])  # the first of equals, as the grid orders them

    assert lines == {
        **{("effnet_lite0", size): evaluation[chosen_on_validation(size)]["test_acc"] for size in (9, 15)},
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
    experiments = ["transfer/" + experiment_run(name) for name in EXPERIMENTS]
    sessions = [f"evaluation/hparams/{name}" for name in [*EXPERIMENTS, "tinyvgg"]]
    graphs = ["transfer/graphs/effnet_lite0"]
    assert run_dirs == sorted(["best", "evaluation", "tinyvgg", *experiments, *sessions, *graphs]), "no sub-runs"
    board, classes = events(runs / "evaluation"), ["blue", "green", "red"]
    best = json.loads((project / "metrics/best.json").read_text())["name"]
    shown = events(runs / "best")
    models = sorted({best, "tinyvgg"})
    assert sorted(shown.PluginTagToContent("pr_curves")) == sorted(f"{m}/{c}" for m in models for c in classes)
    assert sorted(shown.Tags()["images"]) == sorted([*(f"confusion/{m}" for m in models), f"predictions/{best}"])
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
    assert [m.name.tag for m in experiment.metric_infos] == [
        "hparam/val_acc",
        "hparam/val_loss",
        "hparam/test_acc",
        "hparam/test_loss",
    ]


def test_second_repro_reruns_nothing(project):
    result = run(["dvc", "repro"], project)
    assert "Running stage" not in result.stdout, result.stdout


def test_exp_run_and_metrics_diff(project):
    commit_all(project, "baseline")
    run(["dvc", "exp", "run", "-S", "model=effnet_lite0", "-S", "epochs=2"], project)
    transfer = json.loads((project / "reports/transfer.json").read_text())
    assert sorted(transfer) == sorted(n for n in EXPERIMENTS if n.endswith("2_epochs"))
    diff = run(["dvc", "metrics", "diff", "--all"], project)
    assert "metrics/best.json" in diff.stdout and "val_acc" in diff.stdout  # the headline, whatever the grid
    assert "reports/" not in diff.stdout  # per-model detail is no DVC metric
    run(
        ["dvc", "exp", "run", "-S", "model=[effnet_lite0,effnet_lite2]", "-S", "train_size=9", "-S", "epochs=1"],
        project,
    )
    transfer = json.loads((project / "reports/transfer.json").read_text())
    assert sorted(transfer) == [f"9_images-effnet_lite0-{AXES}-1_epochs", f"9_images-effnet_lite2-{AXES}-1_epochs"]
    assert (project / f"runs/transfer/9_images/effnet_lite2/{AXES}/1_epochs").is_dir()
    # Back to the baseline params: every stage comes back from DVC's run cache, runs/ included.
    run(["git", "checkout", "--", "params.yaml"], project)
    restored = run(["dvc", "repro"], project)
    assert "Running stage 'train_transfer'" not in restored.stdout, restored.stdout
    assert "Stage 'train_transfer' is cached" in restored.stdout
    for name in EXPERIMENTS:
        assert list((project / "runs/transfer" / experiment_run(name)).glob("events.out.tfevents.*"))
