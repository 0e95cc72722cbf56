"""engine: train/test steps, predict and the training loop on a tiny separable problem."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab import engine

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _restore_determinism():
    """seed_everything turns on deterministic algorithms globally; undo it after each test."""
    previous = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(previous)


def separable(n, seed):
    """2-D points; class 1 iff x0 > 0, with a margin of 0.5 around the boundary."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    x[:, 0] += torch.where(x[:, 0] >= 0, 0.5, -0.5)
    return TensorDataset(x, (x[:, 0] > 0).long())


def wrong_model():
    """A linear classifier that starts out predicting the opposite class everywhere."""
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model.bias.zero_()
    return model


def loaders(batch_size=8, shuffle=False, generator=None):
    train = DataLoader(separable(40, seed=0), batch_size=batch_size, shuffle=shuffle, generator=generator)
    test = DataLoader(separable(24, seed=1), batch_size=batch_size)
    return train, test


def test_history_keys():
    assert engine.HISTORY_KEYS == ("train_loss", "train_acc", "val_loss", "val_acc")


def test_make_optimizer():
    params = [nn.Parameter(torch.zeros(2))]
    adam = engine.make_optimizer("adam", params, 0.01)
    sgd = engine.make_optimizer("sgd", params, 0.05)
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 0.01
    assert type(sgd) is torch.optim.SGD and sgd.defaults["lr"] == 0.05 and sgd.defaults["momentum"] == 0.9


def test_select_device_honours_override(monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_DEVICE", "cpu")
    assert engine.select_device() == CPU
    monkeypatch.delenv("TRANSFERLAB_DEVICE")
    assert engine.select_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_predict_returns_logits_and_labels_in_order():
    data = separable(10, seed=2)
    model = wrong_model()
    logits, labels = engine.predict(model, DataLoader(data, batch_size=3), CPU)
    assert torch.equal(labels, data.tensors[1])
    torch.testing.assert_close(logits, model(data.tensors[0]).detach())
    assert not model.training


def test_eval_step_is_loss_and_accuracy_over_all_samples():
    data = separable(10, seed=2)
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -0.2], [0.1, 0.4]]))
        model.bias.copy_(torch.tensor([0.05, -0.1]))
    loss, acc = engine.eval_step(model, DataLoader(data, batch_size=3), nn.CrossEntropyLoss(), CPU)
    x, y = data.tensors
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert 0 < acc < 1  # a genuinely partial accuracy, not a trivial 0 or 1


def test_train_step_averages_over_samples_not_batches():
    data = separable(10, seed=2)  # batches of 4, 4 and 2
    model = wrong_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # measure without changing the model
    loss, acc = engine.train_step(model, DataLoader(data, batch_size=4), nn.CrossEntropyLoss(), optimizer, CPU)
    x, y = data.tensors
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y).item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert acc == 0.0
    assert model.training


def test_train_step_updates_the_model():
    model = wrong_model()
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train, _ = loaders()
    engine.train_step(model, train, nn.CrossEntropyLoss(), optimizer, CPU)
    assert not torch.equal(model.weight, before["weight"])


def test_train_learns_the_separable_problem():
    model = wrong_model()
    train, test = loaders()
    loss_fn = nn.CrossEntropyLoss()
    assert engine.eval_step(model, test, loss_fn, CPU)[1] == 0.0
    history = engine.train(model, train, test, loss_fn, torch.optim.Adam(model.parameters(), lr=0.1), 6, CPU)
    assert list(history) == list(engine.HISTORY_KEYS)
    assert all(len(values) == 6 for values in history.values())
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert history["train_acc"][-1] > history["train_acc"][0]
    assert history["val_acc"][-1] == 1.0
    # The last test entries are the final model's test_step.
    loss, acc = engine.eval_step(model, test, loss_fn, CPU)
    assert history["val_loss"][-1] == pytest.approx(loss) and history["val_acc"][-1] == acc


def _seeded_run(seed, epochs=3):
    engine.seed_everything(seed, CPU)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))
    train, test = loaders(shuffle=True)  # shuffling and dropout use the global generator
    history = engine.train(
        model,
        train,
        test,
        nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        epochs,
        CPU,
    )
    return history, model.state_dict()


def test_seeded_runs_are_identical():
    history_a, state_a = _seeded_run(0)
    history_b, state_b = _seeded_run(0)
    assert history_a == history_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not torch.are_deterministic_algorithms_enabled()  # CPU kernels need no switch
    history_c, state_c = _seeded_run(1)
    assert history_c != history_a
    assert not torch.equal(state_c["0.weight"], state_a["0.weight"])


def test_seeding_for_an_accelerator_also_asks_for_deterministic_kernels():
    engine.seed_everything(0, torch.device("cuda"))  # only sets flags: no GPU needed
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_on_epoch_is_called_after_every_epoch_with_the_history_so_far():
    model = wrong_model()
    train, test = loaders()
    calls = []
    history = engine.train(
        model,
        train,
        test,
        nn.CrossEntropyLoss(),
        torch.optim.Adam(model.parameters(), lr=0.1),
        4,
        CPU,
        on_epoch=lambda epoch, h: calls.append((epoch, copy.deepcopy(h))),
    )
    assert [epoch for epoch, _ in calls] == [1, 2, 3, 4]
    for epoch, seen in calls:
        assert seen == {k: v[:epoch] for k, v in history.items()}


def test_resume_from_history_continues_at_the_next_epoch():
    def run(split):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        train, test = loaders(shuffle=True, generator=torch.Generator().manual_seed(3))
        calls = []

        def on_epoch(epoch, h):
            calls.append(epoch)

        history = None
        for epochs in split:  # the same model, optimizer and loaders carry on between calls
            previous = copy.deepcopy(history)
            history = engine.train(
                model, train, test, nn.CrossEntropyLoss(), optimizer, epochs, CPU, on_epoch=on_epoch, history=history
            )
            if previous is not None:
                assert {k: v[: len(previous[k])] for k, v in history.items()} == previous
        return history, calls, model.state_dict()

    full, full_calls, full_state = run([5])
    resumed, resumed_calls, resumed_state = run([2, 5])
    assert full_calls == [1, 2, 3, 4, 5]
    assert resumed_calls == [1, 2, 3, 4, 5]  # the second call starts at epoch 3
    assert resumed == full
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)


def test_resume_does_not_modify_the_given_history_and_stops_when_done():
    model = wrong_model()
    train, test = loaders()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    history = engine.train(model, train, test, nn.CrossEntropyLoss(), optimizer, 2, CPU)
    given = copy.deepcopy(history)
    longer = engine.train(model, train, test, nn.CrossEntropyLoss(), optimizer, 3, CPU, history=history)
    assert history == given
    assert all(len(v) == 3 for v in longer.values())
    calls = []
    done = engine.train(
        model,
        train,
        test,
        nn.CrossEntropyLoss(),
        optimizer,
        3,
        CPU,
        on_epoch=lambda *a: calls.append(a),
        history=longer,
    )
    assert done == longer and calls == []


def test_converted_dataset_holds_bytes_and_gives_the_converted_batches():
    """TinyVGG's images stay uint8 in memory; each batch is what converting them all would give."""
    from transferlab.networks import uint8_to_float

    images = torch.randint(0, 256, (10, 4, 4, 3), dtype=torch.uint8)
    labels = torch.arange(10)
    dataset = engine.ConvertedDataset(images, labels, uint8_to_float)
    assert dataset.tensors[0].dtype == torch.uint8
    generator = torch.Generator().manual_seed(0)
    batches = list(engine.batch_loader(dataset, 4, generator))
    expected = list(
        engine.batch_loader(TensorDataset(uint8_to_float(images), labels), 4, torch.Generator().manual_seed(0))
    )
    for (inputs, batch_labels), (want, want_labels) in zip(batches, expected, strict=True):
        assert torch.equal(inputs, want) and torch.equal(batch_labels, want_labels)
