"""A record's `git` field: HEAD, '+dirty' when code differs from it, not the leaderboard."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from cvbench import env

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root,
                   check=True, capture_output=True)


def test_dirty_means_code_not_the_leaderboard(tmp_path, monkeypatch):
    (tmp_path / "leaderboard" / "results").mkdir(parents=True)
    (tmp_path / "leaderboard" / "results" / "demo.jsonl").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "c")
    monkeypatch.setattr(env, "repo_root", lambda: tmp_path)

    def revision():
        env.git_revision.cache_clear()
        return env.git_revision()

    clean = revision()
    assert len(clean) == 12 and not clean.endswith("+dirty")
    (tmp_path / "leaderboard" / "results" / "demo.jsonl").write_text("{}\n{}\n")  # a run's output
    assert revision() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert revision() == clean + "+dirty"


def test_busy_means_load_beyond_the_runs_own_threads():
    from cvbench.report import load_note
    from cvbench.results import RunRecord

    def record(key, loads):
        return RunRecord(key=key, task="demo", method="m", params={}, seed=0, label="m",
                         data={"variant": "v", "test": {"n": 2}}, metrics={"accuracy": 0.5},
                         timings={"load_avg": loads}, device={"cpu_count": 2})

    own = record("a", [1.9, 2.2])  # a 2-core run on an otherwise idle 2-core machine
    shared = record("b", [2.0, 4.5])
    assert not own.busy and shared.busy and shared.busy_factor == 2.25
    assert load_note([own]) == ""
    assert "1 of 2 runs" in load_note([own, shared]) and "2.2x" in load_note([own, shared])
