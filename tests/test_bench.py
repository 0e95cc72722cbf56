"""Smoke test: the benchmark script runs end to end on a tiny configuration and reports every part."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image_folder
from projects import ROOT, project_env

pytestmark = pytest.mark.slow


def test_bench_grid_runs_on_a_tiny_configuration(tmp_path):
    source = make_image_folder(tmp_path / "images", n_train=10, n_test=6, size=16)
    results_file = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/grid.py"), "--source", str(source), "--models", "effnet_lite0",
         "--train-sizes", "3", "6", "--epochs", "1", "2", "--test-size", "6", "--image-size", "32",
         "--tinyvgg-size", "12", "--extract-rounds", "2", "--rounds", "2", "--workdir", str(tmp_path / "work"), "--json", str(results_file)],
        cwd=tmp_path, env=project_env(tmp_path / "work/project"), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    for heading in ("approaches", "final test accuracy", "ratios and targets", "where the pipeline"):
        assert heading in result.stdout
    results = json.loads(results_file.read_text())
    experiments = {f"{n}_images-effnet_lite0-{e}_epochs" for n in (3, 6) for e in (1, 2)}
    assert set(results["pipeline"]["test_acc"]) == experiments == set(results["course"]["test_acc"])
    # The default course reference keeps the frozen backbone in eval mode: the same model as the
    # pipeline's, so the same accuracy (features differ only by batch composition: one image at most).
    for name, accuracy in results["pipeline"]["test_acc"].items():
        assert results["course"]["test_acc"][name] == pytest.approx(accuracy, abs=1 / 6 + 1e-9)
    for phase in ("pipeline", "course", "floor", "extract", "epochs_rerun", "noop", "torch_import", "dynamo_import"):
        assert results[phase]["wall_s"] > 0 and results[phase]["peak_rss_mib"] > 20
    for phase in ("pipeline", "epochs_rerun", "floor"):  # the fastest of 2 alternating rounds counts
        assert len(results["rounds"][phase]) == 2
        assert results[phase]["wall_s"] == min(run["wall_s"] for run in results["rounds"][phase])
    first, second = results["rounds"]["pipeline"]
    assert first["test_acc"] == second["test_acc"]
    log = (tmp_path / "work/bench.log").read_text()
    assert log.count("Running stage 'train_transfer'") == 4  # each round: a full run and a rerun
    assert results["pipeline"]["peak_rss_mib"] > 500  # torch and a backbone were in memory
    assert results["floor"]["images"] == 6 + 6  # the largest train subset (nesting) plus the test subset
    assert results["extract"]["images"] == 12
    for timings in (results["extract"]["bare_s"], results["extract"]["cache_s"]):
        assert len(timings["effnet_lite0"]) == 2 and min(timings["effnet_lite0"]) > 0
    assert sum(results["profile"]["breakdown_s"].values()) == pytest.approx(results["profile"]["total_s"], rel=0.01)
