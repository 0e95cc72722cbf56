import pytest
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


def test_milestones_are_kept_beside_the_newest_state(tmp_path):
    """A fine-tuning grid's epoch counts: each finished experiment's final state stays."""
    checkpoints = Checkpoints(tmp_path, keep_every_epoch=False, milestones=(2, 4))
    for epoch in range(1, 6):
        checkpoints.save("run", epoch, state(epoch))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["epoch_0002.pt", "epoch_0004.pt", "epoch_0005.pt"]
    assert len(checkpoints.latest("run", 3)["history"]["train_loss"]) == 2
    assert len(checkpoints.latest("run", 4)["history"]["train_loss"]) == 4


def one_warning_line(stderr: str, path) -> None:
    """Exactly one line, a warning naming the damaged file; no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: cache entry") and str(path) in lines[0], stderr
    assert "will be recomputed" in lines[0] and "Traceback" not in stderr


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_an_unreadable_state_is_reported_removed_and_the_older_one_used(tmp_path, capsys, damage):
    checkpoints = Checkpoints(tmp_path, keep_every_epoch=True)
    for epoch in (1, 2):
        checkpoints.save("run", epoch, state(epoch))
    newest = tmp_path / "run/epoch_0002.pt"
    newest.write_bytes(newest.read_bytes()[:100] if damage == "truncated" else b"garbage\x00" * 40)
    assert len(checkpoints.latest("run", 2)["history"]["train_loss"]) == 1
    one_warning_line(capsys.readouterr().err, newest)
    assert not newest.exists()


def test_a_state_that_does_not_fit_the_run_is_discarded(tmp_path, capsys):
    checkpoints = Checkpoints(tmp_path, keep_every_epoch=True)
    checkpoints.save("run", 1, state(1))
    checkpoints.save("run", 2, {"something": "else"})
    assert len(checkpoints.latest("run", 2, valid=lambda saved: "model" in saved)["history"]["train_loss"]) == 1
    one_warning_line(capsys.readouterr().err, tmp_path / "run/epoch_0002.pt")
    assert sorted(p.name for p in (tmp_path / "run").glob("*.pt")) == ["epoch_0001.pt"]
