"""transfer: the grid, and train_transfer on the engine (frozen heads and fine-tuning)."""

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml
from test_training import assert_same_state, counting_steps, saved_epochs

from helpers.tensorboard import events
from transferlab import params
from transferlab.features import FeatureCache, FeatureCaches
from transferlab.torchfiles import load_torch
from transferlab.transfer import Experiment, best_per_backbone_and_size, expand_grid

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"
CPU = torch.device("cpu")


def grid_params(**axes) -> params.Params:
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    raw.update(axes)
    return params.parse(raw)


# --- the grid -------------------------------------------------------------------------------------


def test_experiment_names():
    experiment = Experiment("effnet_b0", 500, 5)
    assert experiment.run_name == "500_images/effnet_b0/lr_0.001-wd_0-seed_42/5_epochs"
    assert experiment.name == "500_images-effnet_b0-lr_0.001-wd_0-seed_42-5_epochs"


def test_experiment_names_hold_every_axis():
    experiment = Experiment("effnet_lite0", 1000, 10, trainable_stages=1, lr=0.0001, weight_decay=0.01, train_seed=7)
    assert experiment.run_name == "1000_images/effnet_lite0+1_stages/lr_0.0001-wd_0.01-seed_7/10_epochs"
    assert experiment.name == "1000_images-effnet_lite0+1_stages-lr_0.0001-wd_0.01-seed_7-10_epochs"


def test_expand_grid_with_scalar_axes_is_one_experiment():
    grid = expand_grid(grid_params(model="effnet_b0", train_size=500, epochs=5, lr=0.001, weight_decay=0.0))
    assert grid == [Experiment("effnet_b0", 500, 5)]
    assert [e.name for e in grid] == ["500_images-effnet_b0-lr_0.001-wd_0-seed_42-5_epochs"]
    assert [e.run_name for e in grid] == ["500_images/effnet_b0/lr_0.001-wd_0-seed_42/5_epochs"]


def test_expand_grid_with_list_axes_is_every_combination_in_order():
    grid = expand_grid(grid_params(model=["effnet_b0", "effnet_lite0"], train_size=[500, 1000], epochs=[5, 10]))
    assert len(grid) == 8
    assert [e.name for e in grid] == [
        f"{size}_images-{model}-lr_0.001-wd_0-seed_42-{epochs}_epochs"
        for model in ("effnet_b0", "effnet_lite0")
        for size in (500, 1000)
        for epochs in (5, 10)
    ]
    assert grid[2] == Experiment(model="effnet_b0", train_size=1000, epochs=5)
    assert grid[5].run_name == "500_images/effnet_lite0/lr_0.001-wd_0-seed_42/10_epochs"


def test_expand_grid_mixes_scalar_and_list_axes():
    grid = expand_grid(grid_params(model="effnet_lite2", train_size=[100, 50, 200], epochs=3))
    assert grid == [
        Experiment("effnet_lite2", 100, 3),
        Experiment("effnet_lite2", 50, 3),
        Experiment("effnet_lite2", 200, 3),
    ]
    assert len({e.name for e in grid}) == 3


def test_lr_weight_decay_and_train_seed_are_axes_of_distinct_experiments_with_stable_names():
    grid = expand_grid(
        grid_params(
            model="effnet_lite0",
            train_size=500,
            epochs=5,
            lr=[0.001, 0.01],
            weight_decay=[0.0, 0.05],
            train_seed=[42, 7],
        )
    )
    assert grid == [  # order: model, trainable_stages, train_size, epochs, lr, weight_decay, train_seed
        Experiment("effnet_lite0", 500, 5, 0, lr, weight_decay, seed)
        for lr in (0.001, 0.01)
        for weight_decay in (0.0, 0.05)
        for seed in (42, 7)
    ]
    assert len({e.name for e in grid}) == len({e.run_name for e in grid}) == 8
    assert grid[-1].name == "500_images-effnet_lite0-lr_0.01-wd_0.05-seed_7-5_epochs"
    # an experiment's name is the same in any grid that holds it: a wider grid renames nothing
    [alone] = expand_grid(
        grid_params(model="effnet_lite0", train_size=500, epochs=5, lr=0.01, weight_decay=0.05, train_seed=7)
    )
    assert alone == grid[-1] and alone.name == grid[-1].name
    [default] = expand_grid(grid_params(model="effnet_lite0", train_size=500, epochs=5, lr=0.001, weight_decay=0.0))
    assert default.name == grid[0].name == "500_images-effnet_lite0-lr_0.001-wd_0-seed_42-5_epochs"


def test_best_per_backbone_and_size_picks_the_best_final_val_acc():
    grid = [
        Experiment("effnet_lite0", 500, 5, lr=0.001),
        Experiment("effnet_lite0", 500, 5, lr=0.01),
        Experiment("effnet_lite0", 500, 10, lr=0.001),
        Experiment("effnet_lite0", 1000, 5, train_seed=1),
        Experiment("effnet_lite0", 1000, 5, train_seed=2),
        Experiment("effnet_lite0", 500, 5, trainable_stages=1),  # another depth: a line of its own
        Experiment("effnet_lite2", 500, 5, weight_decay=0.0),
        Experiment("effnet_lite2", 500, 5, weight_decay=0.1),
    ]
    val_acc = [0.60, 0.70, 0.65, 0.80, 0.80, 0.50, 0.40, 0.45]
    # train accuracy ranks them otherwise: the choice is on validation
    results = {e.name: {"train_acc": 1 - acc, "val_acc": acc} for e, acc in zip(grid, val_acc, strict=True)}
    best = best_per_backbone_and_size(grid, results)
    assert best == [grid[1], grid[3], grid[5], grid[7]]  # a tie keeps the first in grid order
    assert {(e.backbone_label, e.train_size) for e in best} == {
        ("effnet_lite0", 500),
        ("effnet_lite0", 1000),
        ("effnet_lite0+1_stages", 500),
        ("effnet_lite2", 500),
    }


# --- train_transfer -------------------------------------------------------------------------------


LITE0 = "6_images-effnet_lite0-lr_0.001-wd_0-seed_42"  # + "-<N>_epochs": the grid_run experiments' names


def assert_same_experiment(name, results, out, other_results, other_out):
    assert results[name] == other_results[name]
    assert_same_state(
        load_torch(out / "models" / f"{name}.pt")["state_dict"],
        load_torch(other_out / "models" / f"{name}.pt")["state_dict"],
    )
    assert board_curves(out, name) == board_curves(other_out, name)


def board_curves(out: Path, name: str) -> dict[str, list[tuple[int, float]]]:
    """One experiment's per-epoch curves in its TensorBoard run (every experiment has one)."""
    [run_dir] = [
        d for d in (out / "runs").rglob("*") if d.is_dir() and "-".join(d.relative_to(out / "runs").parts) == name
    ]
    board = events(run_dir)
    return {tag: [(e.step, e.value) for e in board.Scalars(tag)] for tag in board.Tags()["scalars"]}


def curves(out: Path, metric: str) -> list[dict]:
    """A grid's curve file (`plots/<metric>.json`)."""
    return json.loads((out / "plots" / f"{metric}.json").read_text())


def test_grid_trains_each_model_and_size_once_to_its_longest_epochs(grid_run, monkeypatch):
    steps = counting_steps(monkeypatch)
    results, out = grid_run(epochs=[3, 1])
    assert len(steps) == 3  # not 1 + 3: the 3-epoch run continues the 1-epoch one
    assert list(results) == [f"{LITE0}-3_epochs", f"{LITE0}-1_epochs"]  # grid order
    assert list(saved_epochs("features/heads").values()) == [[1, 2, 3]]  # the heads' states are kept
    assert not Path("checkpoints").exists()
    hparams = load_torch(out / "models" / f"{LITE0}-3_epochs.pt")["hparams"]
    assert hparams == {  # carried for evaluate (HParams, accuracy by train size), never parsed from names
        "model": "effnet_lite0",
        "train_size": 6,
        "epochs": 3,
        "trainable_stages": 0,
        "lr": 0.001,
        "weight_decay": 0.0,
        "train_seed": 42,
        "freeze": True,
        "runtime": hparams["runtime"],
        "optimizer": "adam",
        "batch_size": 3,
        "processes": 1,
    }
    for epochs in (1, 3):  # each equals the experiment trained alone, from nothing
        name = f"{LITE0}-{epochs}_epochs"
        assert_same_experiment(name, results, out, *grid_run(epochs=epochs, cache=f"alone{epochs}"))


def test_experiments_validate_on_the_validation_subset_and_report_no_test_metric(grid_run, tmp_path):
    import torch.nn.functional as F

    from transferlab import evaluation, model_files, subsets

    results, out = grid_run(epochs=2)
    name = f"{LITE0}-2_epochs"
    metrics = results[name]
    assert set(metrics) == {"train_loss", "train_acc", "val_loss", "val_acc", "trainable_params", "total_params"}
    assert json.loads((out / "metrics.json").read_text()) == results
    board = board_curves(out, name)
    assert sorted(board) == ["Accuracy/train", "Accuracy/val", "Loss/train", "Loss/val"]
    assert [step for step, _ in board["Accuracy/val"]] == [1, 2]
    assert board["Accuracy/val"][-1][1] == pytest.approx(metrics["val_acc"], abs=1e-6)
    assert {row["split"] for row in curves(out, "accuracy")} == {"train", "val"}
    # the final val metrics are the trained model's scores on the validation images (train split)
    val = subsets.load(tmp_path / "subsets", "val")["val"]
    model = model_files.load(out / "models" / f"{name}.pt")
    logits = evaluation.logits_on(model, grid_run.dataset.train.images[val], FeatureCaches(tmp_path / "features"), CPU)
    labels = torch.as_tensor(grid_run.dataset.train.labels[val])
    assert metrics["val_acc"] == pytest.approx((logits.argmax(dim=1) == labels).float().mean().item(), abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-4)


def test_the_backbone_graph_is_logged_once_in_a_run_of_its_own(grid_run):
    _, out = grid_run(epochs=1, lr=[0.001, 0.01])
    graph_run = events(out / "runs/graphs/effnet_lite0")
    assert [node.op for node in graph_run.Graph().node if node.op]
    for lr in (0.001, 0.01):
        run = events(out / "runs" / Experiment("effnet_lite0", 6, 1, lr=lr).run_name)
        assert run.Tags()["scalars"] and not run.Tags()["graph"], "not in every experiment's run"


def test_train_transfer_computes_features_of_the_train_and_validation_images_only(grid_run, tmp_path):
    from transferlab import subsets

    results, out = grid_run(epochs=1)
    runtime = load_torch(out / "models" / f"{LITE0}-1_epochs.pt")["hparams"]["runtime"]
    cache = FeatureCache("effnet_lite0", 32, tmp_path / "features", runtime=runtime)
    assert cache.stats()["images"] == 6 + 3  # the train subset and the validation subset, each once
    chosen = subsets.load(tmp_path / "subsets", "transfer_train", "val", "test")
    train = grid_run.dataset.train
    cache.get(train.images[chosen["transfer_train"]["6"] + chosen["val"]], batch_size=8, device=CPU)
    assert cache.stats()["images"] == 6 + 3, "they are the ones cached"
    cache.get(grid_run.dataset.test.images[chosen["test"]], batch_size=8, device=CPU)
    assert cache.stats()["images"] == 6 + 3 + 6, "no test image was"


def test_experiments_differing_in_lr_weight_decay_or_train_seed_are_distinct_runs(grid_run, monkeypatch):
    steps = counting_steps(monkeypatch)
    results, out = grid_run(epochs=1, lr=[0.001, 0.01], weight_decay=[0.0, 0.5], train_seed=[42, 7])
    names = [
        f"6_images-effnet_lite0-lr_{lr}-wd_{wd}-seed_{seed}-1_epochs"
        for lr in ("0.001", "0.01")
        for wd in ("0", "0.5")
        for seed in (42, 7)
    ]
    assert list(results) == names
    assert len(steps) == 8, "each trains: none continues another"
    assert len(saved_epochs("features/heads")) == 8, "one training run (fingerprint) each"
    assert sorted(p.stem for p in (out / "models").glob("*.pt")) == sorted(names)
    states = [load_torch(out / "models" / f"{name}.pt")["state_dict"] for name in names]
    for i, j in itertools.combinations(range(8), 2):
        assert any(not torch.equal(states[i][k], states[j][k]) for k in states[i]), (names[i], names[j])
    for name in names:
        assert board_curves(out, name)["Loss/train"], name  # a TensorBoard run each
    # stable: one of them trained in a grid of its own has its name and its result
    other = grid_run(epochs=1, lr=0.01, weight_decay=0.5, train_seed=7, cache="alone")
    assert list(other[0]) == [names[-1]]
    assert_same_experiment(names[-1], results, out, *other)


def test_dvc_curves_hold_the_best_experiment_per_backbone_and_size(grid_run):
    results, out = grid_run(epochs=[1, 2], lr=[0.001, 0.1])
    best = max(results, key=lambda name: results[name]["val_acc"])  # max keeps the first of a tie: grid order
    for metric in ("loss", "accuracy"):
        assert {row["experiment"] for row in curves(out, metric)} == {best}
    epochs = int(best.split("-")[-1].removesuffix("_epochs"))
    assert len(curves(out, "loss")) == 2 * epochs  # train and val, every epoch
    assert len(list((out / "models").glob("*.pt"))) == 4, "every experiment keeps its model"


def test_a_rerun_with_other_epochs_trains_only_epochs_never_trained(grid_run, monkeypatch):
    grid_run(epochs=[1, 3])
    steps = counting_steps(monkeypatch)
    results, out = grid_run(epochs=[2, 5])
    assert len(steps) == 2  # epoch 2 is kept; epochs 4 and 5 continue from epoch 3
    assert list(saved_epochs("features/heads").values()) == [[1, 2, 3, 4, 5]]
    fresh = grid_run(epochs=[2, 5], cache="fresh")
    assert len(steps) == 2 + 5
    for epochs in (2, 5):
        assert_same_experiment(f"{LITE0}-{epochs}_epochs", results, out, *fresh)


def test_fine_tuning_gives_the_same_result_with_a_warm_or_a_cold_cache(grid_run):
    """A warm cache spares building the backbone for its summary and graph; it is built before any
    experiment seeds the RNG all the same (building draws random initial weights)."""
    cold = grid_run(freeze=False, epochs=1, cache="shared")
    warm = grid_run(freeze=False, epochs=1, cache="shared")
    assert_same_experiment(f"{LITE0}-1_epochs", *cold, *warm)


def test_fine_tuning_trains_the_whole_network_and_exports_it(grid_run, tmp_path):
    from transferlab import evaluation, model_files

    results, out = grid_run(freeze=False, epochs=1)
    metrics = results[f"{LITE0}-1_epochs"]
    assert metrics["trainable_params"] == metrics["total_params"]  # nothing frozen
    cache_dir = tmp_path / "features/features/effnet_lite0_32px"
    assert not list(cache_dir.glob("*.pt"))  # no features: images go through the network instead
    assert {p.stem for p in (cache_dir / "derived").glob("*.pt")} == {"summary_3_classes", "graph_3_classes"}
    assert not (tmp_path / "features/heads").exists()  # a whole network's states are not kept ...
    assert not Path("checkpoints/train_transfer").exists()  # ... and its resume point goes with the stage
    model_file = load_torch(out / "models" / f"{LITE0}-1_epochs.pt")
    assert model_file["config"]["frozen"] is False
    assert any(key.startswith("backbone.") for key in model_file["state_dict"])  # the whole network
    model = model_files.from_model_file(model_file)
    logits = evaluation.logits_on(model, grid_run.dataset.test.images[:2], FeatureCaches(tmp_path / "features"), CPU)
    assert logits.shape == (2, 3)
