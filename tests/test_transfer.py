"""transfer: the grid, and train_transfer on the engine (frozen heads and fine-tuning)."""

import json
from pathlib import Path

import torch
import yaml
from test_training import assert_same_state, counting_steps, saved_epochs

from transferlab import params
from transferlab.torchfiles import load_torch
from transferlab.transfer import Experiment, expand_grid

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"
CPU = torch.device("cpu")


def grid_params(**axes) -> params.Params:
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    raw.update(axes)
    return params.parse(raw)


# --- the grid -------------------------------------------------------------------------------------


def test_experiment_names():
    experiment = Experiment("effnet_b0", 500, 5)
    assert experiment.run_name == "500_images/effnet_b0/5_epochs"
    assert experiment.name == "500_images-effnet_b0-5_epochs"


def test_expand_grid_with_scalar_axes_is_one_experiment():
    grid = expand_grid(grid_params(model="effnet_b0", train_size=500, epochs=5))
    assert grid == [Experiment("effnet_b0", 500, 5)]
    assert [e.name for e in grid] == ["500_images-effnet_b0-5_epochs"]
    assert [e.run_name for e in grid] == ["500_images/effnet_b0/5_epochs"]


def test_expand_grid_with_list_axes_is_every_combination_in_order():
    grid = expand_grid(grid_params(model=["effnet_b0", "effnet_lite0"], train_size=[500, 1000], epochs=[5, 10]))
    assert len(grid) == 8
    assert [e.name for e in grid] == [
        "500_images-effnet_b0-5_epochs",
        "500_images-effnet_b0-10_epochs",
        "1000_images-effnet_b0-5_epochs",
        "1000_images-effnet_b0-10_epochs",
        "500_images-effnet_lite0-5_epochs",
        "500_images-effnet_lite0-10_epochs",
        "1000_images-effnet_lite0-5_epochs",
        "1000_images-effnet_lite0-10_epochs",
    ]
    assert grid[2] == Experiment(model="effnet_b0", train_size=1000, epochs=5)
    assert grid[5].run_name == "500_images/effnet_lite0/10_epochs"


def test_expand_grid_mixes_scalar_and_list_axes():
    grid = expand_grid(grid_params(model="effnet_lite2", train_size=[100, 50, 200], epochs=3))
    assert grid == [
        Experiment("effnet_lite2", 100, 3),
        Experiment("effnet_lite2", 50, 3),
        Experiment("effnet_lite2", 200, 3),
    ]
    assert len({e.name for e in grid}) == 3


# --- train_transfer -------------------------------------------------------------------------------


def assert_same_experiment(name, results, out, other_results, other_out):
    assert results[name] == other_results[name]
    assert_same_state(
        load_torch(out / "models" / f"{name}.pt")["state_dict"],
        load_torch(other_out / "models" / f"{name}.pt")["state_dict"],
    )
    for metric in ("loss", "accuracy"):
        assert curves(out, metric, name) == curves(other_out, metric, name)


def curves(out: Path, metric: str, experiment: str) -> list[dict]:
    """One experiment's rows of a grid's curve file (`plots/<metric>.json`)."""
    return [
        row for row in json.loads((out / "plots" / f"{metric}.json").read_text()) if row["experiment"] == experiment
    ]


def test_grid_trains_each_model_and_size_once_to_its_longest_epochs(grid_run, monkeypatch):
    steps = counting_steps(monkeypatch)
    results, out = grid_run(epochs=[3, 1])
    assert len(steps) == 3  # not 1 + 3: the 3-epoch run continues the 1-epoch one
    assert list(results) == ["6_images-effnet_lite0-3_epochs", "6_images-effnet_lite0-1_epochs"]  # grid order
    assert list(saved_epochs("features/heads").values()) == [[1, 2, 3]]  # the heads' states are kept
    assert not Path("checkpoints").exists()
    hparams = load_torch(out / "models" / "6_images-effnet_lite0-3_epochs.pt")["hparams"]
    assert hparams == {  # carried for evaluate (HParams, accuracy by train size), never parsed from names
        "model": "effnet_lite0",
        "train_size": 6,
        "epochs": 3,
        "trainable_stages": 0,
        "freeze": True,
        "runtime": hparams["runtime"],
        "optimizer": "adam",
        "lr": 0.001,
        "batch_size": 3,
        "processes": 1,
    }
    for epochs in (1, 3):  # each equals the experiment trained alone, from nothing
        name = f"6_images-effnet_lite0-{epochs}_epochs"
        assert_same_experiment(name, results, out, *grid_run(epochs=epochs, cache=f"alone{epochs}"))


def test_a_rerun_with_other_epochs_trains_only_epochs_never_trained(grid_run, monkeypatch):
    grid_run(epochs=[1, 3])
    steps = counting_steps(monkeypatch)
    results, out = grid_run(epochs=[2, 5])
    assert len(steps) == 2  # epoch 2 is kept; epochs 4 and 5 continue from epoch 3
    assert list(saved_epochs("features/heads").values()) == [[1, 2, 3, 4, 5]]
    fresh = grid_run(epochs=[2, 5], cache="fresh")
    assert len(steps) == 2 + 5
    for epochs in (2, 5):
        assert_same_experiment(f"6_images-effnet_lite0-{epochs}_epochs", results, out, *fresh)


def test_fine_tuning_gives_the_same_result_with_a_warm_or_a_cold_cache(grid_run):
    """A warm cache spares building the backbone for its summary and graph; it is built before any
    experiment seeds the RNG all the same (building draws random initial weights)."""
    cold = grid_run(freeze=False, epochs=1, cache="shared")
    warm = grid_run(freeze=False, epochs=1, cache="shared")
    assert_same_experiment("6_images-effnet_lite0-1_epochs", *cold, *warm)


def test_fine_tuning_trains_the_whole_network_and_exports_it(grid_run, tmp_path):
    from transferlab import evaluation, model_files

    results, out = grid_run(freeze=False, epochs=1)
    metrics = results["6_images-effnet_lite0-1_epochs"]
    assert metrics["trainable_params"] == metrics["total_params"]  # nothing frozen
    cache_dir = tmp_path / "features/features/effnet_lite0_32px"
    assert not list(cache_dir.glob("*.pt"))  # no features: images go through the network instead
    assert {p.stem for p in (cache_dir / "derived").glob("*.pt")} == {"summary_3_classes", "graph_3_classes"}
    assert not (tmp_path / "features/heads").exists()  # a whole network's states are not kept ...
    assert not Path("checkpoints/train_transfer").exists()  # ... and its resume point goes with the stage
    model_file = load_torch(out / "models/6_images-effnet_lite0-1_epochs.pt")
    assert model_file["config"]["frozen"] is False
    assert any(key.startswith("backbone.") for key in model_file["state_dict"])  # the whole network
    model = model_files.from_model_file(model_file)
    logits = evaluation.logits_on(model, grid_run.dataset.test.images[:2], tmp_path / "features", CPU)
    assert logits.shape == (2, 3)
