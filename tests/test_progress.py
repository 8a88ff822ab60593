"""One switch for every stage's progress bar: drawn on a terminal or when forced, silent otherwise,
and --no-progress (RunOptions.progress=False) wins over both."""
from __future__ import annotations

import io

from cvbench import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch) -> _Terminal:
    """stderr replaced by a terminal. Called inside the test: pytest's capture puts its own
    stderr back between a fixture's set-up and the test's body."""
    err = _Terminal()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.delenv("CVBENCH_PROGRESS", raising=False)
    return err


def _draw(desc="descriptors"):
    with progress.bar(3, desc) as b:
        b.update(3)


def test_a_terminal_gets_a_bar(monkeypatch):
    terminal = _terminal(monkeypatch)
    _draw()
    assert "descriptors" in terminal.getvalue()


def test_a_pipe_gets_none(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.delenv("CVBENCH_PROGRESS", raising=False)
    _draw()
    assert err.getvalue() == ""


def test_the_environment_forces_or_silences(monkeypatch):
    terminal = _terminal(monkeypatch)
    monkeypatch.setenv("CVBENCH_PROGRESS", "0")
    _draw()
    assert terminal.getvalue() == ""
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    monkeypatch.setenv("CVBENCH_PROGRESS", "1")
    _draw("vocabulary")
    assert "vocabulary" in pipe.getvalue()


def test_no_progress_wins_and_is_restored(monkeypatch):
    terminal = _terminal(monkeypatch)
    with progress.enabled_as(False):
        _draw()
        assert not progress.enabled()
    assert terminal.getvalue() == ""
    assert progress.enabled()


def test_a_callers_own_switch(monkeypatch):
    terminal = _terminal(monkeypatch)
    with progress.bar(2, "embeddings", show=False) as b:
        b.update(2)
    assert terminal.getvalue() == ""


def test_track_yields_every_item(monkeypatch):
    terminal = _terminal(monkeypatch)
    assert list(progress.track(range(4), "decode")) == [0, 1, 2, 3]
    assert "decode" in terminal.getvalue()
