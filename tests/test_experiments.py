"""experiments: the grid, `fit`'s checkpoint/resume, and train_transfer."""
import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import TensorDataset

from transferlab import engine, params
from transferlab.checkpoints import Checkpoints
from transferlab.experiments import Experiment, expand_grid, fit
from transferlab.outputs import load_torch, save_torch

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
        "500_images-effnet_b0-5_epochs", "500_images-effnet_b0-10_epochs",
        "1000_images-effnet_b0-5_epochs", "1000_images-effnet_b0-10_epochs",
        "500_images-effnet_lite0-5_epochs", "500_images-effnet_lite0-10_epochs",
        "1000_images-effnet_lite0-5_epochs", "1000_images-effnet_lite0-10_epochs",
    ]
    assert grid[2] == Experiment(model="effnet_b0", train_size=1000, epochs=5)
    assert grid[5].run_name == "500_images/effnet_lite0/10_epochs"


def test_expand_grid_mixes_scalar_and_list_axes():
    grid = expand_grid(grid_params(model="effnet_lite2", train_size=[100, 50, 200], epochs=3))
    assert grid == [Experiment("effnet_lite2", 100, 3), Experiment("effnet_lite2", 50, 3),
                    Experiment("effnet_lite2", 200, 3)]
    assert len({e.name for e in grid}) == 3


# --- fit: checkpoint and resume -------------------------------------------------------------------

class RecordingRun:
    """Stands in for TensorBoardRun: records which epochs are logged."""

    def __init__(self):
        self.logged: list[int] = []

    def log_epochs(self, history, first=1):
        self.logged.extend(range(first, len(history["train_loss"]) + 1))


def make_data(seed=0, n=30):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return TensorDataset(x, (x[:, 0] + 0.3 * x[:, 1] > 0).long())


TRAIN, TEST = make_data(0), make_data(1, n=12)


def settings(lr=0.05, optimizer="adam"):
    return params.TinyVGGParams(hidden_units=8, epochs=4, batch_size=8, optimizer=optimizer, lr=lr)


def make_model(init_seed=0, width=8):
    torch.manual_seed(init_seed)  # also the global state that dropout draws from
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Dropout(0.3), nn.Linear(width, 2))


def run_fit(directory, epochs=4, init_seed=0, seed=7, train=TRAIN, setting=None, width=8, keep_every_epoch=False):
    model = make_model(init_seed, width)
    run = RecordingRun()
    history = fit(model, train, TEST, setting or settings(), epochs, seed, CPU, run,
                  Checkpoints(directory, keep_every_epoch), desc="t")
    return history, model.state_dict(), run


def saved_epochs(directory) -> dict[str, list[int]]:
    """{run fingerprint: its saved epochs}."""
    return {run.name: sorted(int(f.stem.removeprefix("epoch_")) for f in run.glob("epoch_*.pt"))
            for run in sorted(Path(directory).iterdir())}


def counting_steps(monkeypatch) -> list:
    real_step, steps = engine.train_step, []
    monkeypatch.setattr(engine, "train_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    return steps


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def reference(tmp_path):
    """An uninterrupted 4-epoch run, its newest state in tmp_path / "reference"."""
    history, state, run = run_fit(tmp_path / "reference")
    assert run.logged == [1, 2, 3, 4]
    assert all(len(v) == 4 for v in history.values())
    return history, state


def test_fit_saves_its_state_after_every_epoch_keeping_the_newest(tmp_path, reference):
    [(fingerprint, epochs)] = saved_epochs(tmp_path / "reference").items()
    assert epochs == [4]
    saved = load_torch(tmp_path / "reference" / fingerprint / "epoch_0004.pt")
    assert set(saved) == {"model", "optimizer", "rng", "generator", "history"}
    assert saved["history"] == reference[0]
    assert_same_state(saved["model"], reference[1])


def test_fit_can_keep_every_epoch(tmp_path, reference):
    history, state, _ = run_fit(tmp_path / "all", keep_every_epoch=True)
    assert list(saved_epochs(tmp_path / "all").values()) == [[1, 2, 3, 4]]
    assert history == reference[0]
    assert_same_state(state, reference[1])
    [run] = (tmp_path / "all").iterdir()
    assert load_torch(run / "epoch_0002.pt")["history"] == {k: v[:2] for k, v in reference[0].items()}


def test_fit_resumes_an_interrupted_run_exactly(tmp_path, monkeypatch, reference):
    directory = tmp_path / "checkpoints"
    real_step, calls = engine.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        run_fit(directory)
    monkeypatch.setattr(engine, "train_step", real_step)
    assert list(saved_epochs(directory).values()) == [[2]]

    steps = counting_steps(monkeypatch)
    # Other initial weights and global RNG state: both must come from the checkpoint.
    history, state, run = run_fit(directory, init_seed=123)
    assert len(steps) == 2  # only epochs 3 and 4 are trained
    assert run.logged == [1, 2, 3, 4]  # the resumed epochs are logged again, then the new ones
    assert history == reference[0]
    assert_same_state(state, reference[1])


def test_fit_with_more_epochs_continues_a_shorter_run(tmp_path, reference):
    short, _, _ = run_fit(tmp_path / "run", epochs=2)
    assert short == {k: v[:2] for k, v in reference[0].items()}
    history, state, _ = run_fit(tmp_path / "run", epochs=4, init_seed=5)
    assert history == reference[0]
    assert_same_state(state, reference[1])


def test_fit_with_fewer_epochs_than_the_newest_state_starts_afresh(tmp_path, monkeypatch, reference):
    steps = counting_steps(monkeypatch)
    history, _, run = run_fit(tmp_path / "reference", epochs=2)  # only epoch 4 is kept there
    assert len(steps) == 2 and run.logged == [1, 2]
    assert history == {k: v[:2] for k, v in reference[0].items()}


def test_fit_continues_from_the_nearest_earlier_kept_epoch(tmp_path, monkeypatch, reference):
    directory = tmp_path / "all"
    run_fit(directory, epochs=1, keep_every_epoch=True)
    run_fit(directory, epochs=3, keep_every_epoch=True)
    steps = counting_steps(monkeypatch)
    history, _, run = run_fit(directory, epochs=2, init_seed=5, keep_every_epoch=True)  # epoch 2 is kept
    assert not steps and run.logged == [1, 2]
    assert history == {k: v[:2] for k, v in reference[0].items()}
    history, state, run = run_fit(directory, epochs=4, init_seed=5, keep_every_epoch=True)
    assert len(steps) == 1 and run.logged == [1, 2, 3, 4]  # epoch 4 only, after epoch 3
    assert history == reference[0]
    assert_same_state(state, reference[1])


@pytest.mark.parametrize("damage", [b"garbage", "truncated", "other state"])
def test_fit_discards_a_damaged_newest_state_and_retrains_only_that_epoch(tmp_path, monkeypatch, capsys, reference,
                                                                          damage):
    directory = tmp_path / "all"
    run_fit(directory, keep_every_epoch=True)
    [run_dir] = directory.iterdir()
    newest = run_dir / "epoch_0004.pt"
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[:-200])
    elif damage == "other state":  # readable, but not this run's: another model's weights
        save_torch(newest, {**load_torch(newest), "model": make_model(width=6).state_dict()})
    else:
        newest.write_bytes(damage * 50)
    capsys.readouterr()
    steps = counting_steps(monkeypatch)
    history, state, _ = run_fit(directory, init_seed=5, keep_every_epoch=True)
    assert len(steps) == 1  # epoch 4 again, from epoch 3
    assert history == reference[0]
    assert_same_state(state, reference[1])
    [notice] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert str(newest) in notice and "recomputed" in notice


def test_fit_with_a_finished_run_trains_nothing(tmp_path, monkeypatch, reference):
    monkeypatch.setattr(engine, "train_step", lambda *a, **k: pytest.fail("trained again"))
    history, state, run = run_fit(tmp_path / "reference", init_seed=9)
    assert history == reference[0]
    assert_same_state(state, reference[1])
    assert run.logged == [1, 2, 3, 4]


@pytest.mark.parametrize("stale", [
    dict(seed=8),  # another seed
    dict(setting=settings(lr=0.01)),  # other hyperparameters
    dict(setting=settings(optimizer="sgd")),
    dict(train=make_data(2)),  # other training data
    dict(width=6),  # another model
])
def test_fit_ignores_the_states_of_other_runs(tmp_path, reference, stale):
    directory = tmp_path / "run"
    run_fit(directory, epochs=2, **stale)
    [stale_fingerprint] = saved_epochs(directory)

    history, state, run = run_fit(directory)
    assert run.logged == [1, 2, 3, 4]
    assert history == reference[0]
    assert_same_state(state, reference[1])
    assert saved_epochs(directory) == {stale_fingerprint: [2], **saved_epochs(tmp_path / "reference")}


def test_fit_trains_only_the_trainable_parameters(tmp_path):
    model = make_model()
    model[0].requires_grad_(False)
    frozen = copy.deepcopy(model[0].state_dict())
    fit(model, TRAIN, TEST, settings(), 2, 7, CPU, RecordingRun(), Checkpoints(tmp_path, False), desc="t")
    assert_same_state(model[0].state_dict(), frozen)
    assert not torch.equal(model[3].weight, make_model()[3].weight)


# --- train_transfer -------------------------------------------------------------------------------

@pytest.fixture
def grid_run(tmp_path, monkeypatch, image_folder_factory):
    """train_transfer(**overrides) on 6 tiny train images of 3 classes, lite0 at 32 px, with the
    cache folder `cache`; each call writes into its own folder and returns (results, that folder)."""
    from transferlab import data, subsets
    from transferlab.experiments import train_transfer

    monkeypatch.chdir(tmp_path)
    dataset = data.load_image_folder(image_folder_factory(tmp_path / "images", n_train=4, n_test=2, size=8), 8)
    data.save(dataset, tmp_path / "prepared")
    subsets.save(subsets.make_subsets(dataset.train.labels, dataset.test.labels, 3, 0, 6, (6,), 6),
                 tmp_path / "subsets")
    calls = []

    def run(freeze=True, cache="features", **axes):
        raw = yaml.safe_load(PARAMS_YAML.read_text())
        raw.update(model="effnet_lite0", train_size=6, **axes)
        raw["transfer"].update(freeze=freeze, image_size=32, batch_size=3)
        out = tmp_path / f"run{len(calls)}"
        calls.append(out)
        results = train_transfer(params.parse(raw), tmp_path / "prepared", tmp_path / "subsets", out / "models",
                                 out / "metrics.json", out / "plots", out / "runs", out / "summaries",
                                 tmp_path / cache)
        return results, out
    run.dataset = dataset
    return run


def assert_same_experiment(name, results, out, other_results, other_out):
    assert results[name] == other_results[name]
    assert_same_state(load_torch(out / "models" / f"{name}.pt")["state_dict"],
                      load_torch(other_out / "models" / f"{name}.pt")["state_dict"])
    assert (out / "plots" / f"{name}.json").read_text() == (other_out / "plots" / f"{name}.json").read_text()


def test_grid_trains_each_model_and_size_once_to_its_longest_epochs(grid_run, monkeypatch):
    steps = counting_steps(monkeypatch)
    results, out = grid_run(epochs=[3, 1])
    assert len(steps) == 3  # not 1 + 3: the 3-epoch run continues the 1-epoch one
    assert list(results) == ["6_images-effnet_lite0-3_epochs", "6_images-effnet_lite0-1_epochs"]  # grid order
    assert list(saved_epochs("features/heads").values()) == [[1, 2, 3]]  # the heads' states are kept
    assert not Path("checkpoints").exists()
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


def test_fine_tuning_trains_the_whole_network_and_exports_it(grid_run, tmp_path):
    from transferlab import evaluation
    from transferlab.models import Classifier

    results, out = grid_run(freeze=False, epochs=1)
    metrics = results["6_images-effnet_lite0-1_epochs"]
    assert metrics["trainable_params"] == metrics["total_params"]  # nothing frozen
    cache_dir = tmp_path / "features/features/effnet_lite0_32px"
    assert not list(cache_dir.glob("*.pt"))  # no features: images go through the network instead
    assert {p.stem for p in (cache_dir / "derived").glob("*.pt")} == {"summary_3_classes", "graph_3_classes"}
    assert not (tmp_path / "features/heads").exists()  # a whole network's states are not kept ...
    assert not Path("checkpoints/train_transfer").exists()  # ... and its resume point goes with the stage
    checkpoint = load_torch(out / "models/6_images-effnet_lite0-1_epochs.pt")
    assert checkpoint["config"]["frozen"] is False
    assert any(key.startswith("backbone.") for key in checkpoint["state_dict"])  # the whole network
    classifier = Classifier(checkpoint)
    logits = evaluation.logits_on(classifier, grid_run.dataset.test.images[:2], tmp_path / "features", CPU)
    assert logits.shape == (2, 3)
