"""One switch for every stage's progress bar: drawn on a terminal or when forced, silent otherwise,
and --no-progress (RunOptions.progress=False) wins over both."""
from __future__ import annotations

import io

import pytest

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


def _scene15_folder(root):
    """A small scene15-layout folder (3 classes x 4 images of 64 px), generated."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for side in ("train", "test"):
        for cls in ("Coast", "Forest", "Highway"):
            folder = root / "scene15" / side / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(folder / f"image_{i}.jpg")
    return root


def _run_bow(tmp_path, *extra):
    from cvbench import cli

    return cli.main(["run", "scene15", "bow-sift", "--set", "vocab_size=4", "--set", "step=8",
                     "--set", "vocab_step=8", "--set", "classifier=chi2-svm", "--jobs", "1",
                     "--data-dir", str(_scene15_folder(tmp_path / "data")), "--no-save", *extra])


def test_every_classical_stage_shows_a_bar(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CVBENCH_PROGRESS", "1")
    assert _run_bow(tmp_path) == 0
    err = capsys.readouterr().err
    for stage in ("dense SIFT", "vocabulary: k-means, 4 words", "bag of words scene15/test",
                  "SVM: one-vs-rest"):
        assert stage in err, (stage, err[-2000:])


def test_no_progress_silences_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CVBENCH_PROGRESS", "1")
    assert _run_bow(tmp_path, "--no-progress") == 0
    err = capsys.readouterr().err
    assert "dense SIFT" not in err and "vocabulary" not in err, err[-2000:]


@pytest.mark.parametrize("kernel", ["chi2", "intersection"])
def test_the_kernel_in_blocks_equals_the_kernel_in_one_piece(monkeypatch, kernel):
    import numpy as np

    import cvbench.baselines.classifiers as clf

    rng = np.random.default_rng(1)
    A, B = rng.random((300, 64)), rng.random((200, 64))
    whole = clf.AdditiveKernelSVM(kernel)._kernel(A, B)
    monkeypatch.setattr(clf, "KERNEL_BLOCK_ENTRIES", 7 * 200)  # 7 rows a block
    np.testing.assert_array_equal(clf.AdditiveKernelSVM(kernel)._kernel(A, B), whole)


def test_decoding_and_training_show_bars(tmp_path, monkeypatch, capsys):
    from cvbench import cli

    monkeypatch.setenv("CVBENCH_PROGRESS", "1")
    assert cli.main(["run", "scene15", "fastnet", "--set", "epochs=1", "--no-save",
                     "--data-dir", str(_scene15_folder(tmp_path / "data"))]) == 0
    err = capsys.readouterr().err
    for stage in ("decoding scene15/train at 32 px", "fastnet epoch 1/1", "decoding scene15/test"):
        assert stage in err, (stage, err[-2000:])
