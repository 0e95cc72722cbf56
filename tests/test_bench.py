"""The benchmarks' harness (bench/), in seconds: the report from given rows, targets met and missed,
the timing helpers, the command lines, a project copy with a phase in its own process, and each
scenario's report and commands on made-up results. The benchmarks themselves are not run here."""

import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from bench import grid, harness, headline, partial, photos, scale, sweep
from bench.report import Table, Target, console, markdown, missed, render, targets
from helpers.projects import ROOT


def results_of(table: Table) -> dict[str, tuple[str, str]]:
    """A targets table as {measure: (result, met or MISSED)}."""
    return {measure: (result, status) for measure, result, _, status in table.rows}


def test_report_renders_rows_as_console_and_markdown_tables():
    table = Table("approaches", {"approach": "", "wall s": ".1f", "passes": ","}, [("pipeline", 30.94, 2500)])
    table.rows.append(("course loop", 1330.1, 60000))
    table.notes.append("fastest of 3 rounds")
    assert console(table).splitlines() == [
        "",
        "== approaches ==",
        "approach     wall s  passes",
        "pipeline       30.9   2,500",
        "course loop  1330.1  60,000",
        "(fastest of 3 rounds)",
    ]
    assert markdown(table).splitlines()[1:7] == [
        "### approaches",
        "",
        "| approach | wall s | passes |",
        "|---|---:|---:|",
        "| pipeline | 30.9 | 2,500 |",
        "| course loop | 1330.1 | 60,000 |",
    ]
    assert render([table, table], as_markdown=True).count("### approaches") == 2
    with pytest.raises(ValueError):  # a row with a missing or extra value is an error, not a shifted column
        Table("t", {"a": "", "b": ""}, [("x",)]).cells()


def test_targets_are_met_at_their_limit_and_missed_past_it():
    at_least, at_most = Target("speed-up", ">=", 2.2, "x"), Target("peak RSS", "<=", 4096, " MiB", ".0f")
    same = Target("identical in every round", "==", True)
    table = targets([(at_least, 2.2), (at_most, 4096.4, "all rounds"), (same, True), (at_least.named("lite0"), 2.19)])
    assert table.rows == [
        ("speed-up", "2.20x", ">= 2.2x", "met"),
        ("peak RSS", "4096 MiB (all rounds)", "<= 4096 MiB", "MISSED"),
        ("identical in every round", "yes", "== yes", "met"),
        ("speed-up", "2.19x", ">= 2.2x", "MISSED"),
    ]
    assert missed(table) == ["peak RSS", "speed-up"]
    assert Target("extraction {} / eager", ">=", 2.2).named("lite0").measure == "extraction lite0 / eager"
    assert not same.met(False)


def test_timing_helpers(tmp_path):
    assert harness.fastest([{"wall_s": 2.0, "n": 1}, {"wall_s": 1.5, "n": 2}, {"wall_s": 3.0}]) == {
        "wall_s": 1.5,
        "n": 2,
    }
    assert 0.05 <= harness.timed(time.sleep, 0.05) < 1
    log = tmp_path / "bench.log"
    allocate = [sys.executable, "-c", "import time; b = bytearray(300 * 2**20); time.sleep(0.1); print('done')"]
    stats = harness.measure(allocate, tmp_path, {}, log)
    # at least what the child allocated (Linux may count a forked child's peak from its parent's
    # size, so a large test process, not the child, could set the upper end)
    assert 0.1 < stats["wall_s"] < 30 and 300 < stats["peak_rss_mib"]
    assert "$ " + " ".join(allocate) in log.read_text() and "done" in log.read_text()
    with pytest.raises(SystemExit, match=f"failed \\(3\\); see {log}"):
        harness.measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, {}, log)


def benchmarks_commands() -> dict[str, list[str]]:
    """BENCHMARKS.md's command lines, by script, as argument lists."""
    text = (ROOT / "BENCHMARKS.md").read_text().replace("\\\n", " ")
    found = re.findall(r"^\.venv/bin/python bench/(\w+)\.py (.*)$", text, flags=re.MULTILINE)
    return {script: args.split() for script, args in found}


def test_command_lines_keep_their_defaults_and_benchmarks_md_commands_parse():
    scripts = {"grid": grid, "headline": headline, "partial": partial, "photos": photos, "scale": scale, "sweep": sweep}
    assert set(benchmarks_commands()) == set(scripts)
    for script, args in benchmarks_commands().items():
        assert harness.parser(scripts[script]).parse_args(args).source == "../shared/data/cifar10-jpg.tar.gz"
    defaults = {name: harness.parser(module).parse_args(["--source", "d"]) for name, module in scripts.items()}
    assert (defaults["grid"].test_size, defaults["grid"].rounds, defaults["grid"].extract_rounds) == (250, 3, 3)
    assert defaults["grid"].course_bn == "frozen" and defaults["grid"].epochs == [5, 10]
    assert (defaults["partial"].test_size, defaults["partial"].rounds, defaults["partial"].stages) == (2000, 1, 1)
    assert (defaults["partial"].naive_models, defaults["partial"].naive_test_size) == (["effnet_lite0"], 500)
    assert (defaults["sweep"].epochs, defaults["sweep"].tinyvgg_size, defaults["sweep"].jobs) == ([5], 500, 2)
    own_photos, seeds = defaults["photos"], defaults["headline"]
    assert (own_photos.sizes, own_photos.share, own_photos.data_image_size) == ([6000, 18000], 12, 224)
    assert (seeds.seeds, seeds.stages, seeds.test_size) == ([42, 0, 1], [0, 1], 2000)
    assert (seeds.train_sizes, seeds.epochs) == ([500], [5])
    for name, args in defaults.items():
        one_backbone = name in ("photos", "headline")
        assert args.models == (["effnet_lite0"] if one_backbone else ["effnet_lite0", "effnet_lite2"])
        assert name == "headline" or args.train_sizes == [500, 1000]
        assert args.image_size is None and args.workdir is None and not args.markdown
    with pytest.raises(SystemExit):
        harness.parser(grid).parse_args([])  # --source is required
    args = harness.parser(partial).parse_args(["--source", "d", "--models", "effnet_lite0", "--stages", "2"])
    small = partial.params(args, 2, models=args.naive_models, test_size=7)
    assert (small["trainable_stages"], small["model"], small["subset"]["test_size"]) == (2, ["effnet_lite0"], 7)
    assert small["data"]["source"].endswith("/d") and small["transfer"]["image_size"] is None


def test_project_copy_runs_a_phase_in_its_own_process(tmp_path):
    """The copy holds the checkout's files as git lists them (not dvc.lock, caches or the venv), is
    committed, and runs `python -m bench.harness MODULE:FUNCTION` on its own code."""
    args = harness.parser(sweep).parse_args(["--source", str(tmp_path), "--test-size", "6"])
    project = harness.Project.create(tmp_path / "work", sweep.params(args))
    files = harness.checkout_files()
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.lock", "tracked.py", "new.py", "ignored.pt", ".gitignore"):
        (repo / name).write_text("*.pt\n" if name == ".gitignore" else name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "dvc.lock", "tracked.py", ".gitignore"], cwd=repo, check=True)
    assert harness.checkout_files(repo) == [".gitignore", "new.py", "tracked.py"]  # not dvc.lock nor ignored
    assert "bench/harness.py" in files and "dvc.yaml" in files and "src/transferlab/features.py" in files
    assert not any(
        f.startswith((".venv/", ".dvc/cache/", "tests/helpers/__pycache__")) or f == "dvc.lock" for f in files
    )
    assert (project.path / "bench/harness.py").read_text() == (ROOT / "bench/harness.py").read_text()
    assert "model: effnet_lite0" in (project.path / "params.yaml").read_text()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project.path, capture_output=True, text=True)
    assert status.stdout == ""  # everything committed
    result = project.run_phase("builtins:dict", {"models": ["m"]}, project.cache("phase", fresh=True))
    assert result.pop("wall_s") > 0 and result.pop("peak_rss_mib") > 5
    assert result == {"models": ["m"]}  # what the phase returned for its config
    with pytest.raises(SystemExit, match="see .*bench.log"):
        project.run_phase("bench.report:nope", {}, project.cache("phase"))


def test_phase_entry_point_explains_its_usage():
    result = subprocess.run(
        [sys.executable, "-m", "bench.harness", "nope"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "usage: python -m bench.harness MODULE:FUNCTION CONFIG_JSON RESULT_JSON" in result.stderr


def grid_results() -> dict:
    """Made-up grid results shaped as grid.run returns them (BENCHMARKS.md's 2026-12-01 run)."""
    acc = {"500_images-m-5_epochs": 0.632, "1000_images-m-5_epochs": 0.70}
    run = {"wall_s": 30.9, "peak_rss_mib": 2083, "test_acc": acc}
    rounds = {"pipeline": [run, {**run, "wall_s": 31.2}], "epochs_rerun": [{"wall_s": 7.3, "peak_rss_mib": 2092}]}
    rounds |= {"floor": [{"wall_s": 56.3, "peak_rss_mib": 1456, "images": 1250}]}
    rounds |= {"floor_onnxruntime": [{"wall_s": 24.3, "peak_rss_mib": 1727, "images": 1250}]}
    extract = {"images": 1250, "cpu": {"cores": 2, "ghz": 2.6, "flops_per_cycle": 64, "gflops": 332.8}}
    extract |= {"flops_per_image": {"m": 0.768e9}, "export_s": {"m": 3.3}}
    extract |= {"bare_s": {"m": [18.93, 18.41]}, "onnx_bare_s": {"m": [4.91, 4.99]}, "cache_s": {"m": [5.07, 5.11]}}
    return {
        **{name: runs[0] for name, runs in rounds.items()},
        "rounds": rounds,
        "config": {"models": ["m"], "train_sizes": [500, 1000], "epochs": [5], "extract_rounds": 2},
        "args": {"test_size": 250},
        "course": {"wall_s": 1330.1, "peak_rss_mib": 1658, "test_acc": {**acc, "1000_images-m-5_epochs": 0.69}},
        "noop": {"wall_s": 0.63, "peak_rss_mib": 300},
        "torch_import": {"wall_s": 1.22},
        "dynamo_import": {"wall_s": 2.23},
        "extract": extract,
        "profile": {"total_s": 34.8, "breakdown_s": {"backbone feature extraction": 14.4, "everything else": 20.4}},
    }


def test_grid_report_from_results():
    tables = {table.title.split(" (")[0].split(",")[0]: table for table in grid.report(grid_results())}
    assert tables["approaches"].rows[0] == ("pipeline", 30.9, 1250, 1250 / 30.9, 10000 / 30.9, 2083)
    assert tables["approaches"].rows[1][2] == 5 * (500 + 250) + 5 * (1000 + 250)  # every epoch's images
    assert tables["final test accuracy"].rows[0] == ("1000_images-m-5_epochs", 70.0, 69.0, pytest.approx(1.0))
    checks = results_of(tables["ratios and targets"])
    assert checks["course / pipeline wall time"] == ("43.0x", "met")
    assert checks["largest accuracy gap, pipeline vs course"] == ("1.00 pp", "MISSED")
    assert checks["pipeline / PyTorch-eager floor"] == ("0.55x", "met")  # 0.549
    assert checks["pipeline / ONNX Runtime floor"] == ("1.27x", "MISSED")
    assert checks["epochs-only rerun / full run"] == ("23.6 % (7.3 s)", "MISSED")
    assert checks["pipeline peak RSS, all rounds"] == ("2092 MiB", "met")
    assert checks["pipeline accuracies identical in every round"] == ("yes", "met")
    assert checks["extraction m / the eager loop"] == ("3.63x", "met")
    assert checks["extraction m / the bare ONNX Runtime loop"] == ("0.97x", "met")
    assert tables["feature extraction"].rows[0][:3] == ("m", 0.768, 3.3)
    assert tables["feature extraction"].rows[0][3] == "67.9 img/s, 52.1 GFLOP/s"
    assert ("m eager loop", "18.93, 18.41") in tables["all rounds"].rows
    assert tables["a rerun's fixed part"].rows[-1] == ("sum", pytest.approx(4.08), pytest.approx(13.2, abs=0.05))
    assert "333 GFLOP/s" in console(tables["feature extraction"])


def test_partial_and_sweep_reports_from_results():
    frozen = {"500_images-effnet_lite0-5_epochs": 0.661, "1000_images-effnet_lite0-5_epochs": 0.697}
    tuned = {k.replace("lite0-", "lite0+1_stages-"): v for k, v in {**frozen}.items()}
    tuned["500_images-effnet_lite0+1_stages-5_epochs"] = 0.7125
    cache = {"effnet_lite0": {"images": 3000, "entries": 3000, "bytes": 3000 * 36.8 * 1024, "folder": "f/o"}}
    r = {
        "config": {"models": ["effnet_lite0"], "train_sizes": [500, 1000], "epochs": [5], "trainable_stages": 1},
        "args": {"test_size": 2000, "naive_test_size": 500},
        "rounds": {"frozen": [{"wall_s": 55.7}, {"wall_s": 56.6}], "partial": [{"wall_s": 189.4}]},
        "frozen": {"wall_s": 55.7, "peak_rss_mib": 2105, "test_acc": frozen},
        "partial": {"wall_s": 189.4, "peak_rss_mib": 2726, "test_acc": tuned, "cache": cache},
        "partial_small": {"wall_s": 57.1, "peak_rss_mib": 1639, "test_acc": {**tuned}},
        "naive": {
            "wall_s": 663.5,
            "peak_rss_mib": 1378,
            "test_acc": {**tuned, "1000_images-effnet_lite0+1_stages-5_epochs": 0.695},
        },
        "tail_flops": {"cpu": {"gflops": 100.0}, "forward_flops_per_image": {"effnet_lite0": 1e8}},
    }
    tables = partial.report(r)
    checks = results_of(tables[-1])
    assert checks["gain over the frozen head, 500_images-effnet_lite0-5_epochs"] == ("+5.15 pp", "met")
    assert checks["largest gap to the naive way"] == ("0.20 pp", "met")
    assert checks["naive / cached wall time, the same grid"] == ("11.6x", "met")
    assert checks["partial grid / frozen grid"] == ("3.40x", "MISSED")
    assert tables[2].rows[0] == ("frozen", 55.7, "55.7, 56.6", 2105)
    assert tables[3].rows == [("f/o", 3000, pytest.approx(107.8, abs=0.05), pytest.approx(36.8))]
    tail_s = 5 * (3 * 1500 + 2 * 2000) * 1e8 / 100e9  # epochs x (3 passes per train image + test) at peak
    assert tables[4].rows[0] == ("tails' training at the CPU's FP32 peak, s", pytest.approx(tail_s))

    acc = {"500_images-effnet_lite0-5_epochs": 0.663}
    s = {"args": {"jobs": 2, "models": ["effnet_lite0"], "train_sizes": [500]}}
    for approach, wall in (("grid", 331.8), ("sequential", 365.9), ("queue", 369.9)):
        s[approach] = {"wall_s": wall, "val_acc": acc, "cache": {"effnet_lite0": {"images": 3000, "entries": 3000}}}
    s["queue"]["cache"]["effnet_lite0"] = {"images": 3000, "entries": 3001}
    rows, accuracy, checks = sweep.report(s)
    assert rows.rows[2] == ("queue", 369.9, pytest.approx(1.115, abs=1e-3), "effnet_lite0 3,000 / 3,001")
    assert accuracy.rows == [("500_images-effnet_lite0-5_epochs", 66.3, 66.3, 66.3)]
    assert missed(checks) == ["every approach: each image through each backbone once"]


def test_sweep_runs_each_approach_as_dvc_commands():
    args = harness.parser(sweep).parse_args(["--source", "d", "--train-sizes", "6", "9", "--jobs", "3"])
    assert sweep.commands(args, "grid") == [
        ["dvc", "exp", "run", "-S", "model=[effnet_lite0,effnet_lite2]", "-S", "train_size=[6,9]"]
    ]
    assert len(sweep.commands(args, "sequential")) == 4
    assert sweep.commands(args, "sequential")[1] == [
        "dvc",
        "exp",
        "run",
        "-S",
        "model=effnet_lite0",
        "-S",
        "train_size=9",
    ]
    queue, run_all = sweep.commands(args, "queue")
    assert queue == ["dvc", "exp", "run", "--queue", "-S", "model=effnet_lite0,effnet_lite2", "-S", "train_size=6,9"]
    assert run_all == ["dvc", "exp", "run", "--run-all", "-j", "3"]
    baseline = sweep.params(args)  # a point outside the sweep
    assert (baseline["model"], baseline["train_size"], baseline["epochs"]) == ("effnet_lite0", 3, [5])


def scale_results() -> dict:
    """Made-up scale results shaped as scale.run returns them (not a measurement)."""

    def stages(*seconds):
        return {stage: {"wall_s": s, "peak_rss_mib": 1000 + s} for stage, s in zip(scale.STAGES, seconds, strict=True)}

    small_out = {"models": 1_000_000, "runs": 50_000_000, "reports": 2_000_000, "plots": 500_000, "metrics": 500}
    large_out = {**small_out, "models": 20_000_000, "runs": 90_000_000}
    rerun = dict(zip(scale.RERUN, ({"wall_s": 12.0}, {"wall_s": 5.0}, {"wall_s": 3.0}), strict=True))
    test_acc = {"a": 0.70, "b": 0.725, "c": 0.69, "d": 0.72, "tinyvgg": 0.5}
    best = {"name": "a", "test_acc": 0.70, "test_acc_low": 0.68, "test_acc_high": 0.72, "tied": 3, "models": 5}
    return {
        "small": {"experiments": 8, "stages": stages(20, 1, 60, 80, 15, 10), "outputs": small_out},
        "large": {"experiments": 216, "stages": stages(20, 1, 60, 140, 30, 15), "outputs": large_out},
        "rerun": rerun,
        "honesty": {"best": best, "test_acc": test_acc},
    }


def test_scale_report_from_results():
    per_stage, sizes, rerun, honest, checks = scale.report(scale_results())
    assert per_stage.rows[3] == ("train_transfer", 80, 140, pytest.approx(60 / 208), 1140)
    assert per_stage.rows[-1] == ("total", 186, 266, pytest.approx(80 / 208), None)
    assert sizes.rows[-1] == ("total", pytest.approx(53.5005), pytest.approx(112.5005))
    assert rerun.rows[1] == ("evaluate", 5.0, 25.0) and rerun.rows[-1] == ("total", 20.0, 100.0)
    assert dict(honest.rows)["best test accuracy of any model (choosing on test)"] == "72.50 % (b)"
    assert dict(honest.rows)["gap, pp"] == "2.50"
    assert dict(honest.rows)["models whose test accuracy is inside the winner's interval"] == "3 of 5"  # a, c, d
    assert dict(honest.rows)["its test accuracy (95 % interval)"] == "70.00 % (68.00–72.00 %)"
    assert dict(honest.rows)["tied: validation cannot tell them from the winner (McNemar p >= 0.05)"] == "3 of 5"
    found = results_of(checks)
    assert found["marginal cost of one more experiment"] == ("0.385 s (266.0 s - 186.0 s over 208)", "met")
    assert found["large grid / small grid wall time"] == ("1.43x (266.0 s / 186.0 s)", "met")
    assert found["outputs, 8-experiment grid"] == ("53.5 MB", "met")
    assert found["outputs, 216-experiment grid"] == ("112.5 MB", "MISSED")
    assert found["epochs-only rerun / the small grid's full run"] == ("10.8 % (20.0 s)", "MISSED")
    slow = scale_results()
    slow["large"]["stages"]["train_transfer"]["wall_s"] = 300  # marginal 0.77 s, ratio 2.29x
    assert missed(scale.report(slow)[-1])[:2] == [
        "marginal cost of one more experiment",
        "large grid / small grid wall time",
    ]


def test_scale_command_line_and_grids():
    args = harness.parser(scale).parse_args(["--source", "d"])
    assert (args.models, args.train_sizes, args.epochs) == (["effnet_lite0", "effnet_lite2"], [500, 1000], [5, 10])
    assert (args.test_size, args.val_size, args.tinyvgg_size, args.tinyvgg_epochs) == (2000, 1000, None, None)
    assert (args.big_train_sizes, args.big_epochs) == ([250, 500, 750, 1000], [3, 5, 10])
    assert (args.big_lrs, args.big_weight_decays) == ([0.0003, 0.001, 0.003], [0, 0.0001, 0.001])
    small, rerun, large = (scale.params(args, grid) for grid in ("small", "rerun", "large"))
    assert (scale.experiments(small), scale.experiments(rerun), scale.experiments(large)) == (8, 8, 216)
    assert rerun["epochs"] == [6, 11] and rerun["train_size"] == small["train_size"] == [500, 1000]
    assert max(large["train_size"]) == max(small["train_size"])  # the same images through the backbones
    default = harness.yaml.safe_load((ROOT / "params.yaml").read_text())
    for params in (small, large):
        assert params["subset"] == {"tinyvgg_train_size": 10000, "val_size": 1000, "test_size": 2000}
        assert params["tinyvgg"] == default["tinyvgg"] and params["trainable_stages"] == 0
        assert params["transfer"]["image_size"] is None and params["data"]["source"].endswith("/d")
    assert (small["lr"], small["weight_decay"]) == (default["lr"], default["weight_decay"])
    shrunk = scale.params(
        harness.parser(scale).parse_args(["--source", "d", "--tinyvgg-size", "12", "--tinyvgg-epochs", "1"])
    )
    assert (shrunk["subset"]["tinyvgg_train_size"], shrunk["tinyvgg"]["epochs"]) == (12, 1)


def photos_results(download_2_md5: str = "a") -> dict:
    def size(images, scale, rss):
        stages = {
            stage: {"wall_s": scale * (i + 1), "peak_rss_mib": rss + 100 * i} for i, stage in enumerate(photos.STAGES)
        }
        return {"images": images, "canonical_bytes": images * 150528, "stages": stages, "no_op_repro": {"wall_s": 1.5}}

    runs = {"1": {"wall_s": 30.0, "md5": {"x": "a"}}, "2": {"wall_s": 16.0, "md5": {"x": download_2_md5}}}
    return {
        "build_s": 40,
        "sizes": [size(6000, 6, 500), size(18000, 18.9, 560)],
        "decode": {"images": 6000, "runs": runs},
    }


def test_photos_report_from_results():
    per_stage, folders, checks = photos.report(photos_results())
    download = per_stage.rows[0]
    assert download[:4] == ("download", 1.0, pytest.approx(1.05), pytest.approx(1.05))
    assert download[4:6] == (500, 560) and download[6] == pytest.approx(560 / 18000 / (500 / 6000))
    assert download[7] == pytest.approx(60 * 1024 / 12000)  # KiB of peak RSS per added image
    assert folders.rows[1] == (
        18000,
        pytest.approx(18000 * 150528 / 2**20),
        pytest.approx((18000 * 150528 * 1.3 + 1.5e9) / 2**20),
        1.5,
    )
    found = results_of(checks)
    assert found["download: s per 1,000 images, 18000 / 6000 images"] == ("1.05x", "met")
    assert found["largest (select_best): peak RSS at 18000 images"][1] == "met"
    assert found["download: one decoding process / 2"] == ("1.88x (30.0 s / 16.0 s, 6000 images)", "met")
    assert found["canonical dataset identical whatever the worker count"] == ("yes", "met")
    slow = photos_results(download_2_md5="b")
    slow["sizes"][1]["stages"]["evaluate"]["wall_s"] = 6 * 5 * 3 * 1.2  # 1.2x linear
    assert missed(photos.report(slow)[-1]) == [
        "evaluate: s per 1,000 images, 18000 / 6000 images",
        "canonical dataset identical whatever the worker count",
    ]


def test_photos_folders_are_photo_like_and_nested(tmp_path):
    """A flat <class>/<image> folder per size from a CIFAR-10-like archive: each photo a JPEG of a
    seeded random size and aspect, the smaller folder the first images of each class of the larger."""
    from PIL import Image

    from helpers.images import make_image_folder

    cifar = make_image_folder(
        tmp_path / "cifar", classes=[f"c{i}" for i in range(10)], n_train=3, n_test=1, size=8, fmt="jpg"
    )
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar / "train", "train")
        tar.add(cifar / "test", "test")
    folders = photos.build_folders(archive, tmp_path / "photos", [10, 30], (40, 60), seed=0)
    assert sorted(p.name for p in folders[30].iterdir()) == [f"c{i}" for i in range(10)]
    large = sorted(folders[30].rglob("*.jpg"))
    small = sorted(folders[10].rglob("*.jpg"))
    assert len(large) == 30 and len(small) == 10
    assert all(p.samefile(folders[30] / p.relative_to(folders[10])) for p in small)  # hard links of the first
    sizes = {Image.open(p).size for p in large}
    assert len(sizes) > 10 and all(max(s) in range(40, 61) and min(s) >= max(s) // 2 for s in sizes)
    again = photos.build_folders(archive, tmp_path / "again", [30], (40, 60), seed=0)
    assert [p.read_bytes() for p in sorted(again[30].rglob("*.jpg"))] == [p.read_bytes() for p in large]


def test_photos_params_scale_the_subsets_with_the_images():
    args = harness.parser(photos).parse_args(["--source", "d"])
    assert (args.sizes, args.share, args.models, args.data_image_size) == ([6000, 18000], 12, ["effnet_lite0"], 224)
    p = photos.params(args, 18000, Path("/photos/18000"))
    assert p["subset"] == {"tinyvgg_train_size": 1500, "val_size": 1500, "test_size": 1500} and p["train_size"] == 1500
    assert p["data"]["source"] == "/photos/18000" and p["data"]["image_size"] == 224 and p["data"]["resize"] == "crop"


def test_headline_report_is_mean_and_std_over_seeds():
    runs = {
        seed: {"wall_s": 100.0, "test_acc": {"tinyvgg": tiny, "500_images-effnet_lite0-5_epochs": lite0}}
        for seed, tiny, lite0 in (("42", 0.52, 0.66), ("0", 0.48, 0.67), ("1", 0.50, 0.68))
    }
    [table] = headline.report({"runs": runs})
    assert table.rows[0] == ("tinyvgg", pytest.approx(52), pytest.approx(48), pytest.approx(50), "50.00 ± 2.00")
    assert table.rows[1][0] == "500_images-effnet_lite0-5_epochs" and table.rows[1][-1] == "67.00 ± 1.00"


def test_headline_params_set_the_seed_and_cut_the_grid():
    args = harness.parser(headline).parse_args(["--source", "d"])
    assert (args.seeds, args.stages, args.models, args.train_sizes, args.epochs) == (
        [42, 0, 1],
        [0, 1],
        ["effnet_lite0"],
        [500],
        [5],
    )
    p = headline.params(args, 7)
    assert (p["seed"], p["trainable_stages"], p["subset"]["test_size"], p["data"]["image_size"]) == (
        7,
        [0, 1],
        2000,
        32,
    )
    assert p["subset"]["tinyvgg_train_size"] == 10000 and p["tinyvgg"]["epochs"] == 10  # params.yaml's TinyVGG
