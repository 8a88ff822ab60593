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
BAD_IMAGES = {"truncated": truncated_jpeg, "bomb": png_bomb,
              "bomb-400mpx": lambda: png_bomb(20000)}  # between PIL's warning and its error


@pytest.mark.parametrize("task, kind", [(t, k) for k in BAD_IMAGES for t in FILE_TASKS
                                         # one decoder gate (images.open_image): the 400-Mpx bomb
                                         # through a listing reader and the one that screens
                                         if k != "bomb-400mpx" or t in ("scene15", "retinopathy")])
def test_a_bad_image_exits_2_naming_it_and_skip_bad_counts_it(task, kind, tmp_path, capsys, recwarn):
    folder = task_folder(task, tmp_path)
    victim = an_image_file(folder)
    victim.write_bytes(BAD_IMAGES[kind]())
    assert _run(task, tmp_path) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "Traceback" not in err and err.count("\n") == 1
    assert "--skip-bad skips such images" in err
    if kind.startswith("bomb"):
        assert "over cvbench's limit of 200,000,000" in err or "twice cvbench's limit" in err
    assert _run(task, tmp_path, "--skip-bad") == 0
    assert "1 bad image skipped" in capsys.readouterr().out  # the run's console line
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
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
    (["run", "demo", "tiny-knn", "--jobs", "0"], "--jobs must be -1 (every core) or a number of processes from 1 to 256, got 0"),
    (["run", "demo", "tiny-knn", "--jobs", "-2"], "got -2"),
    (["run", "demo", "bow-sift", "--set", "n_jobs=0"], "n_jobs = 0 is not valid; expected -1 (every core)"),
    (["run", "demo", "tiny-knn", "--jobs", "100000"], "got 100000"),
    (["run", "demo", "tiny-knn", "--seed", "-5"], "seed -5 is not valid: expected an integer >= 0"),
    (["tune", "demo", "tiny-knn", "--seed", "-5"], "seed -5 is not valid"),
    (["run", "demo", "tiny-knn", "--label", "two\nlines"], "--label must be one line of printable text, got 'two\\nlines'"),
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


def test_data_check_exits_nonzero_when_it_finds_problems(tmp_path, capsys, recwarn):
    folder = scene15_folder(tmp_path)
    argv = ["data", "check", "scene15", "--data-dir", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 0
    truncated, bomb = sorted(p for p in folder.rglob("*.jpg"))[:2]
    truncated.write_bytes(truncated_jpeg())
    bomb.write_bytes(png_bomb(20000))
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS FOUND" in out and "2 unreadable" in out and f"{truncated}: " in out
    assert f"{bomb}: refused: its header claims 20000 x 20000 = 400,000,000 pixels" in out
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


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


# ---------------------------------------------------------------- unreadable folders, broken links
@pytest.mark.parametrize("task", FILE_TASKS)
def test_an_unreadable_folder_exits_2_naming_it(task, tmp_path, capsys, unreadable):
    folder = unreadable(an_image_file(task_folder(task, tmp_path)).parent)
    for argv in (["run", task, "tiny-knn", "--set", "size=8"], ["data", "check", task]):
        assert cli.main([*argv, "--data-dir", str(tmp_path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"cannot read folder {folder} " in err and "permission denied" in err
        assert "Traceback" not in err and err.count("\n") == 1
    assert load_records(task) == []


def test_a_folder_that_cannot_be_listed_is_one_sentence_as_root_too(tmp_path, capsys, monkeypatch):
    """The path of the chmod test above, where root ignores modes: a listing that raises
    PermissionError."""
    folder = an_image_file(scene15_folder(tmp_path)).parent
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert _run("scene15", tmp_path) == 2
    err = capsys.readouterr().err
    assert f"cannot read folder {folder} of the scene15 data (permission denied)" in err
    assert err.count("\n") == 1


def test_an_unusable_data_folder_is_found_unusable_in_list_and_where(tmp_path, capsys, unreadable):
    (tmp_path / "scene15").mkdir()
    (tmp_path / "scene15" / ".DS_Store").write_bytes(b"")
    (tmp_path / "cifar10").write_text("not a folder")
    unreadable(task_folder("hotelid", tmp_path))
    assert cli.main(["list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"[data found, unusable: {tmp_path / 'scene15'} is empty]" in out
    assert f"[data found, unusable: {tmp_path / 'cifar10'} is not a folder]" in out
    assert f"[data found, unusable: {tmp_path / 'hotelid'} cannot be read (permission denied)]" in out
    assert f"[no data (expected {tmp_path / 'fairface'})]" in out
    for task, why in (("scene15", "is empty"), ("hotelid", "cannot be read (permission denied)")):
        assert cli.main(["data", "where", task, "--data-dir", str(tmp_path)]) == 0
        assert f"(found, unusable: {tmp_path / task} {why})" in capsys.readouterr().out
    assert _run("hotelid", tmp_path) == 2
    assert f"no usable data for task 'hotelid': {tmp_path / 'hotelid'} cannot be read" in capsys.readouterr().err


def test_data_check_counts_and_names_symlink_loops_and_unreadable_folders(tmp_path, capsys, unreadable):
    folder = scene15_folder(tmp_path)
    (folder / "train" / "Coast" / "loop_a.jpg").symlink_to("loop_b.jpg")
    (folder / "train" / "Coast" / "loop_b.jpg").symlink_to("loop_a.jpg")
    (folder / "test" / "Forest" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "extras").mkdir()
    stray = unreadable(folder / "extras")  # not read by the reader, found by the walk
    argv = ["data", "check", "scene15", "--data-dir", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "BROKEN links (symlink loops or missing targets): 3" in out
    assert f"{folder / 'train' / 'Coast' / 'loop_a.jpg'}: symlink loop" in out
    assert f"{folder / 'test' / 'Forest' / 'gone.jpg'}: link to a missing target" in out
    assert f"UNREADABLE folders: 1\n    {stray}: permission denied" in out
    assert "1 unreadable folders, 3 broken links: PROBLEMS FOUND" in out


# ---------------------------------------------------------------- checked before the fit, kept after it
def test_a_leaderboard_that_cannot_be_written_fails_before_the_fit(tmp_path, capsys, unreadable):
    a_file = tmp_path / "board.md"
    a_file.write_text("")
    (tmp_path / "ro").mkdir()
    read_only = unreadable(tmp_path / "ro", 0o555)
    cases = [(["run", "demo", "tiny-knn", "--leaderboard", str(a_file)],
              f"the leaderboard folder {a_file} is not a folder: {a_file} is a file"),
             (["run", "demo", "tiny-knn", "--leaderboard", str(a_file / "sub")],
              f"the leaderboard folder {a_file / 'sub'} is not a folder: {a_file} is a file"),
             (["suite", "demo", "--only", "tiny-knn", "--quick", "--leaderboard", str(read_only)],
              f"the leaderboard folder {read_only} is not writable (permission denied)"),
             (["run", "demo", "tiny-knn", "--leaderboard", str(read_only / "new")],
              f"the leaderboard folder {read_only / 'new'} cannot be created in {read_only}"),
             (["leaderboard", "--leaderboard", str(a_file)], f"{a_file} is a file")]
    for argv, message in cases:
        assert cli.main(argv + ["--no-progress"] * (argv[0] != "leaderboard")) == 2
        out, err = capsys.readouterr()
        assert message in err and "Traceback" not in err and err.count("\n") == 1
        assert "accuracy" not in out and "run failed" not in out  # nothing was fitted
    assert sorted(p.name for p in read_only.iterdir()) == []


def test_a_record_that_cannot_be_appended_is_kept_in_a_recovery_file(tmp_path, capsys, monkeypatch):
    from cvbench import run
    from cvbench.results import RunRecord

    def disk_full(record, root=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run, "append_record", disk_full)
    assert cli.main(["run", "demo", "tiny-knn", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "could not append the record of tiny-knn to" in err and "(no space left on device)" in err
    rescue = Path(err.split("it is saved in ", 1)[1].split(":", 1)[0])
    (line,) = rescue.read_text().splitlines()
    rec = RunRecord.from_json(json.loads(line))
    assert rec.method == "tiny-knn" and rec.metrics["accuracy"] > 0.5
    assert f"cat {rescue} >> " in err and err.count("\n") == 1


def test_jobs_minus_one_means_every_core():
    from cvbench.plan import RunOptions, RunSpec, plan_runs

    plan = plan_runs("demo", [RunSpec("tiny-knn")], RunOptions(n_jobs=-1, save=False), log=lambda m: None)
    assert plan.groups[0].method.n_jobs == -1  # joblib's "every core", as --help says


def test_a_gpu_the_machine_lacks_is_named_by_its_flag_before_the_fit(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["run", "demo", "cnn", "--device", "cuda", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available on this machine; use --device cpu or --device auto" in err
    assert err.count("\n") == 1 and load_records("demo") == []
    assert cli.main(["run", "demo", "cnn", "--set", "device=cuda", "--set", "epochs=1", "--no-progress"]) == 2
    assert "use --device cpu or --device auto" in capsys.readouterr().err  # set as a parameter: said in the fit


# ---------------------------------------------------------------- where a run writes (issue 26 item 12)


def test_in_a_checkout_an_ad_hoc_run_never_writes_the_committed_leaderboard(monkeypatch, tmp_path):
    from cvbench import cli
    from cvbench.paths import in_checkout, leaderboard_dir, repo_root, scratch_leaderboard

    monkeypatch.delenv("CVBENCH_LEADERBOARD", raising=False)
    assert in_checkout()
    assert leaderboard_dir() == repo_root() / "leaderboard"  # a committed suite's home
    assert scratch_leaderboard() == repo_root() / ".cache" / "runs"  # ignored by git
    args = cli.build_parser().parse_args(["run", "demo", "tiny-knn"])
    cli._where(args, adhoc=True)
    assert args.leaderboard == str(repo_root() / ".cache" / "runs")
    args = cli.build_parser().parse_args(["suite", "demo", "--suite", str(tmp_path / "mine.toml")])
    cli._where(args, adhoc=True)
    assert args.leaderboard == str(repo_root() / ".cache" / "runs")
    assert ".cache/" in (repo_root() / ".gitignore").read_text()


def test_an_installed_copy_run_from_an_empty_folder_writes_there(tmp_path):
    """A non-editable install (pip --target), run from an empty folder: records and pages go to
    ./leaderboard there, the committed suites travel with the package, and the command says
    where it wrote."""
    import subprocess
    import sys

    from cvbench.paths import repo_root

    site, work = tmp_path / "site", tmp_path / "empty"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(repo_root())], check=True, capture_output=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if k not in ("CVBENCH_LEADERBOARD", "CVBENCH_SUITES")}
    env["PYTHONPATH"] = str(site)

    def cvbench(*argv):
        return subprocess.run([sys.executable, "-m", "cvbench.cli", *argv, "--no-progress"], cwd=work,
                              env=env, capture_output=True, text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import cvbench; print(cvbench.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))  # the installed copy, not the checkout
    out = cvbench("run", "demo", "tiny-knn", "--set", "size=8")
    assert out.returncode == 0, out.stderr
    assert f"records: {work / 'leaderboard' / 'results' / 'demo.jsonl'}" in out.stdout
    out = cvbench("suite", "demo", "--quick", "--only", "majority-class")
    assert out.returncode == 0, out.stderr
    assert (work / "leaderboard" / "index.md").is_file() and str(work / "leaderboard") in out.stdout


# ---------------------------------------------------------------- silent suite mistakes (items 5, 6)


def test_a_misspelled_defaults_table_is_refused_with_the_nearest_name(tmp_path, capsys):
    from cvbench import cli

    suite = tmp_path / "demo.toml"
    suite.write_text('task = "demo"\n[defaults.tiny_knn]\nk = 7\n[[run]]\nmethod = "tiny-knn"\n')
    assert cli.main(["suite", "demo", "--suite", str(suite), "--leaderboard", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err
    assert "[defaults.tiny_knn] names no method; did you mean 'tiny-knn'?" in err
    assert "Traceback" not in err and not (tmp_path / "lb" / "results").exists()


def test_quick_overrides_are_checked_without_quick(tmp_path, capsys):
    from cvbench import cli

    suite = tmp_path / "demo.toml"
    suite.write_text('task = "demo"\n[[run]]\nmethod = "tiny-knn"\nquick = { k = -5 }\n')
    assert cli.main(["suite", "demo", "--suite", str(suite), "--leaderboard", str(tmp_path / "lb")]) == 2
    assert "k" in capsys.readouterr().err and not (tmp_path / "lb" / "results").exists()


# ---------------------------------------------------------------- records (items 7, 8)


def _valid_line(key: str, acc: float = 0.5) -> dict:
    return {"key": key, "task": "demo", "method": "m", "params": {}, "seed": 0, "label": "m",
            "data": {"variant": "v", "test": {"n": 2}}, "metrics": {"accuracy": acc}, "timings": {},
            "schema": 3}


def test_a_nan_metric_makes_a_record_invalid(tmp_path, capsys):
    from cvbench import cli
    from cvbench.results import load_records, results_path

    path = results_path("demo", tmp_path)
    path.parent.mkdir(parents=True)
    bad = _valid_line("nan")
    bad["metrics"]["accuracy_ci"] = [float("nan"), 0.5]
    path.write_text(json.dumps(_valid_line("ok")) + "\n" + json.dumps(bad) + "\n")
    warnings = []
    assert [r.key for r in load_records("demo", tmp_path, warn=warnings.append)] == ["ok"]
    assert "accuracy_ci" in warnings[0] and ":2:" in warnings[0]
    assert cli.main(["records", "check", "--leaderboard", str(tmp_path)]) == 1


def test_duplicate_keys_and_members_are_reported_and_migrate_keeps_every_line(tmp_path, capsys):
    from cvbench import cli
    from cvbench.results import load_records, results_path

    path = results_path("demo", tmp_path)
    path.parent.mkdir(parents=True)
    twice = json.dumps(_valid_line("dup", 0.1))[:-1] + ', "label": "again"}'  # a member named twice
    lines = ["not json at all", json.dumps(_valid_line("dup", 0.2)), json.dumps(_valid_line("a")),
             json.dumps(_valid_line("dup", 0.3)), twice]
    path.write_text("\n".join(lines) + "\n")
    warnings = []
    recs = load_records("demo", tmp_path, warn=warnings.append)
    assert {r.key: r.metrics["accuracy"] for r in recs} == {"dup": 0.3, "a": 0.5}  # the later wins
    assert any("key dup also on line 2" in w for w in warnings)
    assert any(":5:" in w and "'label' appears twice" in w for w in warnings)
    assert cli.main(["records", "check", "--leaderboard", str(tmp_path)]) == 1
    capsys.readouterr()
    assert cli.main(["records", "migrate", "--leaderboard", str(tmp_path)]) == 1  # lines it kept as they were
    kept = path.read_text().splitlines()
    assert len(kept) == 5 and kept[0] == "not json at all" and kept[4] == twice  # order and every line
    assert [json.loads(x)["metrics"]["accuracy"] for x in kept[1:4]] == [0.2, 0.5, 0.3]
    out = capsys.readouterr()
    assert str(path) in out.out and ":1:" in out.out


# ---------------------------------------------------------------- quick runs (item 14), start-up (item 16)


def test_quick_runs_have_their_own_index_section_and_never_meet_a_study(tmp_path):
    from cvbench import cli

    board = tmp_path / "lb"
    assert cli.main(["suite", "scene15", "--quick", "--only", "tiny-knn", "--leaderboard", str(board),
                     "--no-progress", "--data-dir", str(_fixture_scene15(tmp_path))]) == 0
    index = (board / "index.md").read_text()
    assert "## Quick runs" in index and "Tiny image k-NN" in index.split("## Quick runs")[1]
    page = (board / "scene15.md").read_text()
    assert "Against the source study" not in page and "## Quick runs" in page


def _fixture_scene15(tmp_path):
    """A tiny scene15-layout folder (3 classes), generated."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for side in ("train", "test"):
        for cls in ("Coast", "Forest", "Highway"):
            folder = root / "scene15" / side / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(folder / f"image_{i:04d}.jpg")
    return root


def test_cvbench_list_imports_neither_torch_nor_sklearn():
    import subprocess
    import sys

    code = ("import sys; from cvbench import cli; cli.main(['list']); "
            "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("[]"), out.stdout[-300:]
    assert "tiny-knn" in out.stdout and "cnn-retrieval" in out.stdout


def test_a_closed_pipe_ends_the_listing_quietly():
    """`cvbench list | head -1`: no BrokenPipeError traceback when the reader leaves."""
    import subprocess
    import sys

    out = subprocess.run(f"{sys.executable} -m cvbench.cli list | head -1", shell=True,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.startswith("Tasks") and "Traceback" not in out.stderr, out.stderr[-500:]
