"""The benchmarks (bench/): a package of their own, and smoke runs of each on a tiny configuration."""

import json
import subprocess
import sys

import pytest

from helpers.images import make_image_folder
from helpers.projects import ROOT, project_env


def run_bench(script: str, args: list[str], tmp_path) -> tuple[subprocess.CompletedProcess, dict]:
    """`python bench/SCRIPT.py ARGS --workdir tmp/work --json tmp/results.json`, as users type it;
    its completed process and JSON results."""
    results_file = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / script),
            *args,
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(results_file),
        ],
        cwd=tmp_path,
        env=project_env(tmp_path / "work/project"),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(results_file.read_text())


def test_bench_is_independent_of_the_tests():
    """bench/ imports nothing from tests/, and copies the project from what git lists."""
    code = (
        "import sys; import bench.grid, bench.sweep, bench.report, bench.project; "
        "from bench.project import checkout_files; files = checkout_files(); "
        "assert 'bench/project.py' in files and 'dvc.yaml' in files and 'src/transferlab/features.py' in files; "
        "assert not any(f.startswith(('.venv/', '.dvc/cache/')) or f == 'dvc.lock' for f in files); "
        "print(sorted(m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert str(ROOT / "tests") not in result.stdout


def test_bench_phases_entry_point_explains_its_usage():
    result = subprocess.run(
        [sys.executable, "-m", "bench.phases", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    phases = "{course,naive,tail_flops,floor,floor_onnxruntime,extract,profile,cache}"
    assert f"usage: python -m bench.phases {phases} CONFIG_JSON RESULT_JSON" in result.stderr


@pytest.mark.slow
def test_bench_grid_runs_on_a_tiny_configuration(tmp_path):
    source = make_image_folder(tmp_path / "images", n_train=10, n_test=6, size=16)
    result, results = run_bench(
        "grid.py",
        [
            "--source",
            str(source),
            "--models",
            "effnet_lite0",
            "--train-sizes",
            "3",
            "6",
            "--epochs",
            "1",
            "2",
            "--test-size",
            "6",
            "--image-size",
            "32",
            "--tinyvgg-size",
            "12",
            "--extract-rounds",
            "2",
            "--rounds",
            "2",
        ],
        tmp_path,
    )
    for heading in (
        "approaches",
        "final test accuracy",
        "ratios and targets",
        "FLOPs and GFLOP/s",
        "where the pipeline",
    ):
        assert heading in result.stdout
    experiments = {f"{n}_images-effnet_lite0-{e}_epochs" for n in (3, 6) for e in (1, 2)}
    assert set(results["pipeline"]["test_acc"]) == experiments == set(results["course"]["test_acc"])
    # The default course reference keeps the frozen backbone in eval mode: the same model as the
    # pipeline's, so the same accuracy (features differ only by batch composition: one image at most).
    for name, accuracy in results["pipeline"]["test_acc"].items():
        assert results["course"]["test_acc"][name] == pytest.approx(accuracy, abs=1 / 6 + 1e-9)
    phases = ("pipeline", "course", "floor", "floor_onnxruntime", "extract", "epochs_rerun", "noop", "torch_import")
    for phase in (*phases, "dynamo_import"):
        assert results[phase]["wall_s"] > 0 and results[phase]["peak_rss_mib"] > 20
    for phase in ("pipeline", "epochs_rerun", "floor", "floor_onnxruntime"):  # the fastest of 2 rounds counts
        assert len(results["rounds"][phase]) == 2
        assert results[phase]["wall_s"] == min(run["wall_s"] for run in results["rounds"][phase])
    first, second = results["rounds"]["pipeline"]
    assert first["test_acc"] == second["test_acc"]
    log = (tmp_path / "work/bench.log").read_text()
    assert log.count("Running stage 'train_transfer'") == 4  # each round: a full run and a rerun
    assert results["pipeline"]["peak_rss_mib"] > 500  # torch and a backbone were in memory
    # the largest train subset (nesting) plus the test subset
    assert results["floor"]["images"] == results["floor_onnxruntime"]["images"] == 6 + 6
    extract = results["extract"]
    assert extract["images"] == 12
    for loop in ("bare_s", "onnx_bare_s", "cache_s"):
        assert len(extract[loop]["effnet_lite0"]) == 2 and min(extract[loop]["effnet_lite0"]) > 0
    assert extract["export_s"]["effnet_lite0"] > 1  # torch.export of the whole backbone
    assert 1e7 < extract["flops_per_image"]["effnet_lite0"] < 1e9  # lite0 at 32 px: about 0.02 GFLOP
    assert extract["cpu"]["gflops"] > 1
    # The profiled functions ran, and none is counted twice: their times fit in the stage's.
    measured = {k: v for k, v in results["profile"]["breakdown_s"].items() if not k.startswith("everything else")}
    assert measured and all(seconds > 0 for seconds in measured.values()), measured
    assert sum(measured.values()) <= results["profile"]["total_s"]


@pytest.mark.slow
def test_bench_sweep_runs_on_a_tiny_configuration(tmp_path):
    source = make_image_folder(tmp_path / "images", n_train=10, n_test=6, size=16)
    result, results = run_bench(
        "sweep.py",
        [
            "--source",
            str(source),
            "--models",
            "effnet_lite0",
            "--train-sizes",
            "6",
            "9",
            "--test-size",
            "6",
            "--image-size",
            "32",
            "--tinyvgg-size",
            "12",
        ],
        tmp_path,
    )
    for heading in ("2 experiments, three ways", "test accuracy per experiment", "targets"):
        assert heading in result.stdout
    assert "every approach: the same test accuracy per experiment" in result.stdout
    experiments = {f"{n}_images-effnet_lite0-5_epochs" for n in (6, 9)}
    approaches = ("grid", "sequential", "queue")
    assert set(results) == {*approaches, "config"}
    assert results["config"]["models"] == ["effnet_lite0"] and results["config"]["jobs"] == 2
    for approach in approaches:
        assert results[approach]["wall_s"] > 0
        assert set(results[approach]["test_acc"]) == experiments
        assert results[approach]["test_acc"] == results["grid"]["test_acc"]  # identical across approaches
        # each approach starts from an empty cache; each image goes through the backbone once:
        # the larger train subset (the smaller is nested in it) plus the test subset
        assert results[approach]["cache"]["effnet_lite0"]["images"] == 9 + 6
        assert results[approach]["cache"]["effnet_lite0"]["entries"] == 9 + 6


@pytest.mark.slow
def test_bench_partial_runs_on_a_tiny_configuration(tmp_path):
    source = make_image_folder(tmp_path / "images", n_train=10, n_test=6, size=16)
    args = ["--source", str(source), "--models", "effnet_lite0", "--train-sizes", "4", "8", "--epochs", "1", "2"]
    args += ["--test-size", "6", "--naive-test-size", "3", "--image-size", "64", "--tinyvgg-size", "12"]
    result, results = run_bench("partial.py", args, tmp_path)
    headings = ("frozen head vs last 1 stage(s)", "the naive way", "wall time", "cached inputs", "FP32 peak", "targets")
    for heading in headings:
        assert heading in result.stdout
    assert 1e6 < results["tail_flops"]["forward_flops_per_image"]["effnet_lite0"] < 1e8  # at 64 px: 2 x 2 maps
    frozen = {f"{n}_images-effnet_lite0-{e}_epochs" for n in (4, 8) for e in (1, 2)}
    partial = {name.replace("lite0-", "lite0+1_stages-") for name in frozen}
    assert set(results["frozen"]["test_acc"]) == frozen
    assert set(results["partial"]["test_acc"]) == partial == set(results["naive"]["test_acc"])
    # The naive way trains the same model on the same batches; its activations come from PyTorch
    # instead of ONNX Runtime (within 1e-4), so the same accuracy up to one test image in 3.
    for name, accuracy in results["naive"]["test_acc"].items():
        assert results["partial_small"]["test_acc"][name] == pytest.approx(accuracy, abs=1 / 3 + 1e-9)
    for approach in ("frozen", "partial", "partial_small", "naive"):
        assert results[approach]["wall_s"] > 0 and results[approach]["peak_rss_mib"] > 20
    (folder,) = results["partial"]["cache"]
    assert folder.startswith("effnet_lite0_64px/before_last_1_stages/")
    assert results["partial"]["cache"][folder]["images"] == 8 + 6  # the largest train subset and the test subset
    log = (tmp_path / "work/bench.log").read_text()
    assert log.count("Running stage 'train_transfer'") == 3  # frozen, partial, partial_small: each trained
