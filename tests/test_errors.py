import gc
import importlib

import pytest

from transferlab.entrypoints import imports_without_gc, run_cli
from transferlab.errors import UserError


@pytest.fixture
def unfrozen_gc():
    """No frozen objects before the test (entry-point imports freeze some) or after it."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_user_error_is_one_line_and_exit_1(capsys, monkeypatch, unfrozen_gc):
    monkeypatch.delenv("TRANSFERLAB_DEBUG", raising=False)

    def main():
        raise UserError("params.yaml: bad\n   value")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: params.yaml: bad value\n"
    assert gc.get_freeze_count() == 0


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch, unfrozen_gc):
    monkeypatch.delenv("TRANSFERLAB_DEBUG", raising=False)

    def main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_the_debug_switch_lets_the_error_through(monkeypatch, unfrozen_gc):
    monkeypatch.setenv("TRANSFERLAB_DEBUG", "1")

    def main():
        raise UserError("bad")

    with pytest.raises(UserError, match="bad"):
        run_cli(main)


def test_after_success_the_gc_is_frozen_for_a_fast_exit(unfrozen_gc):
    run_cli(lambda: None)
    assert gc.get_freeze_count() > 0


def test_imports_run_without_gc_and_what_they_made_is_frozen(unfrozen_gc):
    with imports_without_gc():
        assert not gc.isenabled()
        made = [[] for _ in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)


def test_a_failed_import_still_turns_the_gc_back_on(unfrozen_gc):
    with pytest.raises(ImportError):
        with imports_without_gc():
            importlib.import_module("transferlab.no_such_module")
    assert gc.isenabled()
