"""A bad-input corpus, generated at test time (no binary blobs in the repository): every case
gets the behaviour a user expects. A user mistake exits 2 with one sentence naming the file
or value; with --skip-bad a bad image is a counted and named skip; a corrupt cache file is
detected, deleted and recomputed with a one-line warning; nothing crashes or silently does
nothing."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvbench import cli
from cvbench.results import load_records
from cvbench.tasks import classes_of, get_task

BAD_NAME = os.fsdecode(b"bad\xff\xfe.jpg")  # not UTF-8: the OS gives it back with surrogates


# ---------------------------------------------------------------- the corpus
def jpeg(value: int = 128, size: int = 24) -> bytes:
    rng = np.random.default_rng(value)
    img = np.clip(value + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    return jpeg(77)[:200]


def png_bomb(side: int = 30000) -> bytes:
    """A PNG whose header claims side x side pixels (a decompression bomb; no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def scene15_folder(root: Path) -> Path:
    folder = root / "scene15"
    for side, n in (("train", 3), ("test", 2)):
        for c, name in enumerate(("Coast", "Forest")):
            (folder / side / name).mkdir(parents=True)
            for i in range(n):
                (folder / side / name / f"image_{i:04d}.jpg").write_bytes(jpeg(40 + 60 * c + i))
    return folder


def cifar_folder(root: Path) -> Path:
    folder = root / "cifar10"
    for side in ("train", "test"):
        for c, name in enumerate(classes_of("cifar10")):
            (folder / side / name).mkdir(parents=True)
            (folder / side / name / "0.png").write_bytes(jpeg(20 * c, 32))
    return folder


def task_folder(task: str, root: Path) -> Path:
    if task == "scene15":
        return scene15_folder(root)
    if task == "cifar10":
        return cifar_folder(root)
    kwargs = {"hotelid": dict(n_hotels=4, images_per_hotel=(3, 3), n_masks=1, size=(32, 24)),
              "retinopathy": dict(n_patients=10, size=32), "fairface": dict(size=24)}[task]
    get_task(task).make_fixture(root, **kwargs)
    return root / get_task(task).folder


def an_image_file(folder: Path) -> Path:
    """One image the task's reader uses (by its listing or its CSV)."""
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                    and "mask" not in str(p))
    return images[len(images) // 2]


FILE_TASKS = ["scene15", "cifar10", "fairface", "retinopathy", "hotelid"]


def _run(task: str, root: Path, *extra: str) -> int:
    return cli.main(["run", task, "tiny-knn", "--set", "size=8", "--data-dir", str(root),
                     "--no-progress", *extra])


# ---------------------------------------------------------------- images through every reader
@pytest.mark.parametrize("task", FILE_TASKS)
@pytest.mark.parametrize("kind", ["truncated", "bomb"])
def test_a_bad_image_exits_2_naming_it_and_skip_bad_counts_it(task, kind, tmp_path, capsys):
    folder = task_folder(task, tmp_path)
    victim = an_image_file(folder)
    victim.write_bytes(truncated_jpeg() if kind == "truncated" else png_bomb())
    assert _run(task, tmp_path) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "Traceback" not in err and err.count("\n") == 1
    assert _run(task, tmp_path, "--skip-bad") == 0
    (rec,) = load_records(task)
    assert rec.data["bad_images_skipped"] == 1
    named = json.dumps([rec.data["train"], rec.data["test"]])
    assert victim.name in named  # the skip is named in the record


@pytest.mark.parametrize("task", FILE_TASKS)
def test_a_file_name_that_is_not_utf8_is_read_like_any_other(task, tmp_path, capsys):
    folder = task_folder(task, tmp_path)

    def count():
        train, test = get_task(task).load_splits(tmp_path)
        return len(train) + len(test)

    before = count()
    good = an_image_file(folder)
    (good.parent / BAD_NAME).write_bytes(good.read_bytes())
    listed = task in ("scene15", "cifar10", "hotelid")  # readers that list folders take it in
    assert count() == before + listed  # CSV-driven readers only read the files they name
    assert _run(task, tmp_path) == 0, capsys.readouterr().err
    (rec,) = load_records(task)
    assert rec.data["train"]["n"] + rec.test_n == before + listed
    json.dumps(rec.item_ids())  # ids of such files are escaped, so the record stays JSON


# ---------------------------------------------------------------- corrupt caches
def _run_demo(*sets: str) -> int:
    return cli.main(["run", "demo", *sets, "--no-progress"])


@pytest.mark.parametrize("pattern, method, sets", [
    ("knn/*.npz", "tiny-knn", ["--set", "k=3"]),
    ("tiny/*.npy", "tiny-knn", []),
])
def test_a_corrupt_cache_file_is_recomputed_with_a_warning(tmp_path, capsys, pattern, method, sets):
    from cvbench.paths import cache_root

    scene = tmp_path / "data"
    scene15_folder(scene)
    argv = ["run", "scene15", method, "--set", "size=8", *sets, "--data-dir", str(scene), "--no-progress"]
    assert cli.main(argv) == 0
    first = load_records("scene15")[0].metrics["accuracy"]
    files = list(cache_root().glob(pattern))
    assert files, f"no cache file {pattern}"
    for f in files:
        f.write_bytes(b"PK\x03\x04 not a zip at all")
    from cvbench.baselines import tiny
    from cvbench.baselines.knn import NEIGHBOUR_CACHE

    NEIGHBOUR_CACHE.clear()  # as a new process would start: only the disk cache is left
    tiny._mem_cache.clear()
    capsys.readouterr()
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "is corrupt" in err and "recomputing it" in err and files[0].name in err
    assert load_records("scene15")[0].metrics["accuracy"] == first


def test_a_truncated_descriptor_store_is_rebuilt(tmp_path, capsys):
    from cvbench.paths import cache_root

    scene = tmp_path / "data"
    scene15_folder(scene)
    argv = ["run", "scene15", "bow-sift", "--set", "step=8", "--set", "vocab_size=4", "--set", "vocab_sample=200",
            "--set", "vocab_step=8", "--set", "k=1", "--data-dir", str(scene), "--no-progress"]
    assert cli.main(argv) == 0
    stores = list(cache_root().glob("sift/*/desc.u8"))
    assert stores
    for s in stores:
        s.write_bytes(s.read_bytes()[: len(s.read_bytes()) // 2])
    for f in cache_root().glob("bow/*.npy"):  # force the histograms to be recomputed from the store
        f.unlink()
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "desc.u8 holds" in capsys.readouterr().err


# ---------------------------------------------------------------- suites, parameters, data check
@pytest.mark.parametrize("argv, message", [
    (["run", "demo", "tiny-knn", "--set", "k=true"], "parameter k = True is not valid"),
    (["run", "demo", "tiny-knn", "--set", "k=5000"], "at most the training set's size (n_train = 1198)"),
    (["run", "demo", "tiny-knn", "--set", "size=100000"], "size = 100000 is not valid"),
    (["run", "demo", "tiny-knn", "--set", "k=[]"], "sweep k = [] is empty"),
    (["run", "demo", "tiny-knn", "--jobs", "0"], "--jobs must be a positive number"),
])
def test_bad_parameters_exit_2_in_one_sentence(argv, message, capsys):
    assert cli.main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert load_records("demo") == []  # nothing ran


@pytest.mark.parametrize("body, message", [
    ('[[run]]\nmethod = "tiny-knn"\nseeds = []\n', "'seeds' must be a non-empty list"),
    ('[[run]]\nmethod = "tiny-knn"\nlabel = 5\n', "'label' must be a one-line string"),
    ('[[run]]\nmethod = "tiny-knn"\ngpu_only = "no"\n', "'gpu_only' must be true or false"),
    ('run = [1, 2]\n', "expected one or more [[run]] tables"),
    ('[[run]]\nmethod = "tiny-knn"\nparams = { k = [1, true] }\n', "parameter k = True is not valid"),
])
def test_bad_suites_exit_2_before_anything_runs(tmp_path, capsys, body, message):
    path = tmp_path / "demo.toml"
    path.write_text('task = "demo"\n' + body)
    assert cli.main(["suite", "demo", "--suite", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert load_records("demo") == []
    path.write_bytes(b'task = "demo"\n# \xff\n[[run]]\nmethod = "tiny-knn"\n')
    assert cli.main(["suite", "demo", "--suite", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_data_check_exits_nonzero_when_it_finds_problems(tmp_path, capsys):
    folder = scene15_folder(tmp_path)
    assert cli.main(["data", "check", "scene15", "--data-dir", str(tmp_path), "--no-progress"]) == 0
    an_image_file(folder).write_bytes(truncated_jpeg())
    assert cli.main(["data", "check", "scene15", "--data-dir", str(tmp_path), "--no-progress"]) == 1
    assert "PROBLEMS FOUND" in capsys.readouterr().out


@pytest.mark.parametrize("pixel, label, message", [(999, 3, "pixel value 999"), (12, 42, "label 42")])
def test_cifar_batch_with_impossible_values_is_a_data_error(tmp_path, capsys, pixel, label, message):
    import pickle

    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = np.full((2, 3072), 10, dtype=np.int64)
    data[0, 5] = pixel
    batch = {b"data": data, b"labels": [label, 1], b"batch_label": b"x"}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in classes_of("cifar10")]}))
    assert _run("cifar10", tmp_path) == 2
    err = capsys.readouterr().err
    assert message in err and "data_batch_1" in err and "Traceback" not in err


# ---------------------------------------------------------------- the leaderboard and its records
def test_a_record_that_does_not_validate_is_reported_and_left_out(tmp_path, capsys):
    from cvbench.leaderboard import render_all
    from cvbench.paths import leaderboard_dir

    assert cli.main(["run", "demo", "majority-class", "--no-progress"]) == 0
    path = leaderboard_dir() / "results" / "demo.jsonl"
    good = path.read_text().splitlines()[0]
    bad = json.loads(good)
    bad.update(key="x", label=5)
    path.write_text(good + "\n" + json.dumps(bad) + "\n{ not json\n")
    capsys.readouterr()
    index = render_all(tasks=[get_task("demo")])
    err = capsys.readouterr().err
    assert "demo.jsonl:2: record skipped (field 'label'" in err and "demo.jsonl:3" in err
    assert "| majority-class |" in (index.parent / "demo.md").read_text()


def test_a_crash_while_rendering_keeps_the_old_figures(tmp_path, monkeypatch):
    from cvbench import leaderboard
    from cvbench.paths import leaderboard_dir

    assert cli.main(["run", "demo", "tiny-knn", "--set", "size=8", "--no-progress"]) == 0
    figures = leaderboard_dir() / "figures" / "demo"
    before = sorted(p.name for p in figures.iterdir())
    assert before

    def boom(page):
        raise RuntimeError("a section failed")

    monkeypatch.setitem(leaderboard.SECTIONS, "quick", boom)
    with pytest.raises(RuntimeError):
        leaderboard.render_all(tasks=[get_task("demo")])
    assert sorted(p.name for p in figures.iterdir()) == before
    assert not list((leaderboard_dir() / "figures").glob(".*"))  # no staging folder left behind


def test_labels_that_slug_alike_get_distinct_figures():
    from cvbench.paths import leaderboard_dir

    for seed, label in enumerate(("Run A", "run-a")):
        assert cli.main(["run", "demo", "majority-class", "--label", label, "--seed", str(seed),
                         "--no-progress"]) == 0
    figures = sorted((leaderboard_dir() / "figures" / "demo").glob("run-a-*-confusion.png"))
    assert len(figures) == 2
