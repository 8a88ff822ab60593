"""cvbench.data.check (counts, unreadable files, duplicates) and cvbench.data.fetch
(download + checksum + safe extraction, via file:// URLs only: no network)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvbench.data.check import check_splits, format_report
from cvbench.data.fetch import download, extract, fetch_task, sha256_of
from cvbench.errors import DataError
from cvbench.split import Split
from cvbench.tasks import Task
from tests.conftest import task_data


def _png(path: Path, value: int, size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)
    return path


@pytest.fixture
def tiny_splits(tmp_path):
    """train: a/0.png, a/1.png, b/2.png (corrupt); test: a/3.png (= train a/0.png, label a),
    b/4.png (= train a/1.png but labelled b); class c has no items."""
    tr = tmp_path / "train"
    a0 = _png(tr / "a" / "0.png", 10)
    a1 = _png(tr / "a" / "1.png", 20)
    bad = tr / "b" / "2.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(a0.read_bytes()[:40])  # truncated PNG
    te = tmp_path / "test"
    (te / "a").mkdir(parents=True)
    (te / "b").mkdir(parents=True)
    (te / "a" / "3.png").write_bytes(a0.read_bytes())
    (te / "b" / "4.png").write_bytes(a1.read_bytes())
    classes = ("a", "b", "c")
    train = Split([a0, a1, bad], [0, 0, 1], classes, "tiny/train", root=str(tmp_path))
    test = Split([te / "a" / "3.png", te / "b" / "4.png"], [0, 1], classes, "tiny/test")
    return train, test


def test_check_finds_counts_corrupt_and_duplicates(tiny_splits):
    train, test = tiny_splits
    report = check_splits([train, test], progress=False, n_jobs=2)
    tr, te = report.splits
    assert tr.class_counts == {"a": 2, "b": 1, "c": 0}
    assert tr.empty_classes == ["c"] and te.empty_classes == ["c"]
    assert [p for p, _ in tr.unreadable] == [str(train.items[2])] and not te.unreadable
    assert report.total == 5 and report.n_unreadable == 1 and not report.ok
    pairs = {frozenset(m.where() for m in d.members): d for d in report.duplicates}
    assert set(pairs) == {
        frozenset({str(train.items[0]), str(test.items[0])}),
        frozenset({str(train.items[1]), str(test.items[1])}),
    }
    assert all(d.cross_split for d in report.duplicates)
    assert [d.conflicting_labels for d in report.duplicates] == [True, False]  # conflicts first
    text = format_report(report)
    assert "UNREADABLE files: 1" in text and str(train.items[2]) in text
    assert "EMPTY classes: c" in text
    assert "2 sets of identical items" in text and "1 carry different labels" in text


def test_check_missing_file_is_reported(tmp_path):
    split = Split([tmp_path / "nope.jpg"], [0], ("x",), "missing/train")
    report = check_splits([split], progress=False)
    (path, reason), = report.splits[0].unreadable
    assert path.endswith("nope.jpg") and reason
    assert report.duplicates == []


def test_check_in_memory_rows():
    rng = np.random.default_rng(0)
    items = rng.integers(0, 256, size=(6, 4, 4, 3), dtype=np.uint8)
    items[4] = items[1]
    train = Split(items, [0, 1, 0, 1, 1, 0], ("x", "y"), "mem/train")
    test = Split(items[[1, 2]].copy(), [1, 1], ("x", "y"), "mem/test")
    report = check_splits([train, test], progress=False)
    assert report.total == 8 and report.n_unreadable == 0
    assert report.splits[1].empty_classes == ["x"] and not report.ok
    sets = {tuple(m.where() for m in d.members): d for d in report.duplicates}
    assert set(sets) == {
        ("mem/train[1]", "mem/train[4]", "mem/test[0]"),
        ("mem/train[2]", "mem/test[1]"),
    }
    assert sets[("mem/train[1]", "mem/train[4]", "mem/test[0]")].conflicting_labels is False
    assert sets[("mem/train[2]", "mem/test[1]")].conflicting_labels is True


@pytest.mark.realdata
@pytest.mark.slow  # decodes 3000 JPEGs: ~7 s on the shared 2-core machine
def test_check_scene15_real(real_data):
    root = task_data(real_data, "scene15")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir()))

    def split(side):
        paths = sorted((root / side).glob("*/*.jpg"))
        labels = [classes.index(p.parent.name) for p in paths]
        return Split(paths, labels, classes, f"scene15/{side}", root=str(root))

    report = check_splits([split("train"), split("test")], progress=False)
    assert report.total == 3000 and report.n_unreadable == 0 and report.ok
    assert all(set(s.class_counts.values()) == {100} for s in report.splits)
    # The shared 1500/1500 subset holds 6 byte-identical pairs (verified with md5sum), all in
    # LivingRoom; the README's "18 pairs, one with two labels" describes the full 4485-image
    # release (TallBuilding/image_0300 is not in this subset).
    found = {tuple(sorted(str(Path(m.path).relative_to(root)) for m in d.members))
             for d in report.duplicates}
    lr = "{}/LivingRoom/image_{:04d}.jpg"
    assert found == {
        (lr.format("test", 3), lr.format("train", 28)),
        (lr.format("test", 4), lr.format("train", 30)),
        (lr.format("test", 5), lr.format("train", 34)),
        (lr.format("test", 27), lr.format("train", 289)),
        (lr.format("train", 208), lr.format("train", 211)),
        (lr.format("train", 269), lr.format("train", 286)),
    }
    assert len(report.cross_split_duplicates) == 4 and report.conflicting_duplicates == []


# --- fetch -------------------------------------------------------------------------------

def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_download_verifies_checksum(tmp_path):
    src = _tar(tmp_path / "src.tar.gz", {"ds/train/a/1.txt": b"hello"})
    digest = sha256_of(src)
    dest = download(src.as_uri(), tmp_path / "dl" / "ds.tar.gz", digest, progress=False)
    assert dest.read_bytes() == src.read_bytes()
    bad = tmp_path / "dl" / "bad.tar.gz"
    with pytest.raises(DataError, match=f"bad.tar.gz.*expected sha256 {'0' * 64}, got {digest}"):
        download(src.as_uri(), bad, "0" * 64, progress=False)
    assert not bad.exists() and [p.name for p in (tmp_path / "dl").iterdir()] == ["ds.tar.gz"]


def test_download_failure_is_one_sentence(tmp_path):
    dest = tmp_path / "x.zip"
    with pytest.raises(DataError, match=r"could not download .*missing.zip: .*manually to .*x\.zip"):
        download((tmp_path / "missing.zip").as_uri(), dest, None, progress=False)
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_extract_tar_and_zip(tmp_path):
    tar = _tar(tmp_path / "a.tar.gz", {"train/a/1.txt": b"1", "test/a/2.txt": b"2"})
    out = extract(tar, tmp_path / "data" / "task")
    assert (out / "train/a/1.txt").read_bytes() == b"1" and (out / "test/a/2.txt").exists()
    zpath = tmp_path / "b.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("extra/3.txt", b"3")
    extract(zpath, out)
    assert (out / "extra/3.txt").read_bytes() == b"3" and (out / "train/a/1.txt").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["task"]  # no staging left


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/ABS/evil.txt"])
def test_extract_rejects_path_traversal(tmp_path, name):
    name = name.replace("/ABS", str(tmp_path))
    if name.startswith("/"):  # tar's "data" filter strips the leading "/": lands inside dest
        extract(_tar(tmp_path / "abs.tar", {name: b"x"}), tmp_path / "inside")
        assert (tmp_path / "inside" / name.lstrip("/")).read_bytes() == b"x"
        assert not (tmp_path / "evil.txt").exists()
    else:
        tar = _tar(tmp_path / "evil.tar", {name: b"x"})
        with pytest.raises(DataError, match="refusing to extract"):
            extract(tar, tmp_path / "out" / "task")
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(name, b"x")
    with pytest.raises(DataError, match="refusing to extract"):
        extract(zpath, tmp_path / "out" / "task")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "task").exists()


def _task(**kw) -> Task:
    base = dict(name="toy", title="toy", source="", folder="toy", layout="train/<class>/*",
                classes="from-folders", metrics=(), primary="accuracy")
    return Task(**(base | kw))


def test_fetch_task_downloads_and_extracts(tmp_path):
    src = _tar(tmp_path / "toy.tar.gz", {"train/a/1.txt": b"1"})
    task = _task(fetch_urls=((src.as_uri(), sha256_of(src), "toy.tar.gz"),))
    msg = fetch_task(task, data_dir=tmp_path / "root", progress=False)
    assert (tmp_path / "root" / "toy" / "train/a/1.txt").read_bytes() == b"1"
    assert "sha256 verified" in msg and str(tmp_path / "root" / "toy") in msg


def test_fetch_task_without_urls_explains_manual_steps(tmp_path):
    task = _task(fetch_help="1. kaggle competitions download -c toy\n2. unzip toy.zip")
    with pytest.raises(DataError, match="cannot be downloaded automatically") as exc:
        fetch_task(task, data_dir=tmp_path)
    assert "kaggle competitions download -c toy" in str(exc.value)
    assert str(tmp_path / "toy") in str(exc.value)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "train").mkdir()
    assert "already present" in fetch_task(task, data_dir=tmp_path)


def test_extract_rejects_link_out_of_dest(tmp_path):
    tar = tmp_path / "link.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("data/link")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(DataError, match="refusing to extract"):
        extract(tar, tmp_path / "out" / "task")
    assert not (tmp_path / "out" / "task").exists()
