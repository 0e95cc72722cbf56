import torch

from transferlab.checkpoints import Checkpoints


def state(epoch: int) -> dict:
    return {"history": {"train_loss": [0.0] * epoch}, "model": {"w": torch.full((2,), float(epoch))}}


def test_latest_is_the_newest_state_at_or_below_the_epoch_count(tmp_path):
    checkpoints = Checkpoints(tmp_path, keep_every_epoch=True)
    assert checkpoints.latest("run", 5) is None
    for epoch in (1, 2, 4):
        checkpoints.save("run", epoch, state(epoch))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0004.pt"]
    assert torch.equal(checkpoints.latest("run", 3)["model"]["w"], torch.full((2,), 2.0))
    assert len(checkpoints.latest("run", 9)["history"]["train_loss"]) == 4
    assert checkpoints.latest("run", 0) is None
    assert checkpoints.latest("other run", 9) is None


def test_keeping_only_the_newest_state(tmp_path):
    checkpoints = Checkpoints(tmp_path, keep_every_epoch=False)
    checkpoints.save("run", 1, state(1))
    checkpoints.save("run", 2, state(2))
    checkpoints.save("other run", 7, state(7))
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["epoch_0002.pt"]
    assert checkpoints.latest("run", 1) is None  # epoch 1 is gone: such a run starts afresh
    checkpoints.save("run", 1, state(1))  # ... and its first epoch replaces the newer state
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["epoch_0001.pt"]
    assert [p.name for p in (tmp_path / "other run").iterdir()] == ["epoch_0007.pt"]
