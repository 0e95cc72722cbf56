"""training: `fit`'s per-epoch states, resume, continuation, and damaged states."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from transferlab import engine, params
from transferlab.checkpoints import Checkpoints
from transferlab.torchfiles import load_torch, save_torch
from transferlab.training import TrainingRun, fit

CPU = torch.device("cpu")


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


TRAIN, VAL = make_data(0), make_data(1, n=12)


def settings(lr=0.05, optimizer="adam", weight_decay=0.0):
    return params.TrainingParams(batch_size=8, optimizer=optimizer, lr=lr, weight_decay=weight_decay)


def make_model(init_seed=0, width=8):
    torch.manual_seed(init_seed)  # also the global state that dropout draws from
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Dropout(0.3), nn.Linear(width, 2))


def run_fit(directory, epochs=4, init_seed=0, seed=7, train=TRAIN, setting=None, width=8, keep_every_epoch=False):
    model = make_model(init_seed, width)
    run = RecordingRun()
    history = fit(
        TrainingRun(model, train, VAL, setting or settings(), seed),
        epochs,
        CPU,
        run,
        Checkpoints(directory, keep_every_epoch),
        desc="t",
    )
    return history, model.state_dict(), run


def saved_epochs(directory) -> dict[str, list[int]]:
    """{run fingerprint: its saved epochs}."""
    return {
        run.name: sorted(int(f.stem.removeprefix("epoch_")) for f in run.glob("epoch_*.pt"))
        for run in sorted(Path(directory).iterdir())
    }


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
    assert list(history) == ["train_loss", "train_acc", "val_loss", "val_acc"]
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
def test_fit_discards_a_damaged_newest_state_and_retrains_only_that_epoch(
    tmp_path, monkeypatch, capsys, reference, damage
):
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


@pytest.mark.parametrize(
    "stale",
    [
        dict(seed=8),  # another seed
        dict(setting=settings(lr=0.01)),  # other hyperparameters
        dict(setting=settings(optimizer="sgd")),
        dict(setting=settings(optimizer="adamw")),
        dict(setting=settings(weight_decay=0.01)),
        dict(train=make_data(2)),  # other training data
        dict(width=6),  # another model
    ],
)
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
    fit(TrainingRun(model, TRAIN, VAL, settings(), 7), 2, CPU, RecordingRun(), Checkpoints(tmp_path, False), desc="t")
    assert_same_state(model[0].state_dict(), frozen)
    assert not torch.equal(model[3].weight, make_model()[3].weight)


def test_fit_validates_every_epoch_on_the_validation_set(tmp_path):
    """The history's val metrics are the model's scores on `val_set` (the final epoch's: the
    returned model's), never on the train set."""
    model = make_model()
    history = fit(
        TrainingRun(model, TRAIN, VAL, settings(), 7), 3, CPU, RecordingRun(), Checkpoints(tmp_path, False), desc="t"
    )
    val_loss, val_acc = engine.eval_step(model, engine.batch_loader(VAL, 8), nn.CrossEntropyLoss(), CPU)
    assert history["val_loss"][-1] == pytest.approx(val_loss) and history["val_acc"][-1] == pytest.approx(val_acc)
    train_loss, _ = engine.eval_step(model, engine.batch_loader(TRAIN, 8), nn.CrossEntropyLoss(), CPU)
    assert train_loss != pytest.approx(val_loss)


def test_a_run_on_another_validation_set_is_another_run():
    """Its fingerprint covers the validation data: another validation set never resumes this
    run's states (their history's val curves would be another set's)."""
    other = TrainingRun(make_model(), TRAIN, make_data(3, n=12), settings(), 7)
    assert other.fingerprint() != TrainingRun(make_model(), TRAIN, VAL, settings(), 7).fingerprint()
