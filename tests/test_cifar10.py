"""CIFAR-10 readers (pickles with short batches / no filenames, image folders), task, page."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest

from cvbench.errors import DataError
from cvbench.tasks import get_task
from cvbench.tasks.cifar10.reader import CLASSES, read_batch
from cvbench.tasks.cifar10.reader import read as load_cifar10
from tests.conftest import task_data


def _write_batch(path, images, labels, filenames=False):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {b"batch_label": b"test batch", b"labels": [int(v) for v in labels], b"data": data}
    if filenames:
        batch[b"filenames"] = [f"img_{i}.png".encode() for i in range(len(images))]
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.fixture
def pickle_root(tmp_path):
    root = tmp_path / "cifar10" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [7, 5, 5, 5, 5]
    expected = []
    for i, n in enumerate(rows, start=1):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        _write_batch(root / f"data_batch_{i}", x, y, filenames=(i == 1))
        expected.append((x, y))
    xt = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    yt = np.array([0, 9, 3, 3])
    _write_batch(root / "test_batch", xt, yt)
    meta = {b"num_cases_per_batch": 10000, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    with open(root / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return root.parent, expected, (xt, yt)


def test_pickles_short_batches_and_missing_filenames(pickle_root):
    folder, expected, (xt, yt) = pickle_root
    train, test = load_cifar10(folder)
    assert train.items.shape == (27, 32, 32, 3) and train.items.dtype == np.uint8
    assert np.array_equal(train.items[:7], expected[0][0])  # HWC pixels round-trip exactly
    assert np.array_equal(train.labels, np.concatenate([y for _, y in expected]))
    assert np.array_equal(test.items, xt) and test.labels.tolist() == yt.tolist()
    assert train.classes == CLASSES and train.in_memory
    assert train.meta["variant"].startswith("shared subset: 27 train / 4 test")
    assert "7+5+5+5+5" in train.meta["variant"]


def test_pixel_layout_is_channel_planes_row_major(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    data = np.zeros((1, 3072), np.uint8)
    data[0, 0] = 10  # red (0, 0)
    data[0, 1024 + 33] = 20  # green (1, 1)
    data[0, 2048 + 32 * 31 + 30] = 30  # blue (31, 30)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [1]}, f)
    train, _ = load_cifar10(tmp_path)
    img = train.items[0]
    assert (img[0, 0, 0], img[1, 1, 1], img[31, 30, 2]) == (10, 20, 30)
    assert img.sum() == 60
    assert train.classes == CLASSES  # no batches.meta: the official names


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_foreign_globals_is_refused(pickle_root):
    folder, _, _ = pickle_root
    with open(folder / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="not allowed"):
        load_cifar10(folder)


def test_bad_batch_shapes_and_missing_files(pickle_root, tmp_path):
    folder, _, _ = pickle_root
    (folder / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(folder)
    with pytest.raises(DataError, match="no CIFAR-10 data"):
        load_cifar10(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    assert set(read_batch(bad)) == {"data", "labels"}


def test_image_folder_layout(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for side, n in (("train", 3), ("test", 2)):
        for c in ("cat", "airplane", "truck"):
            d = tmp_path / side / c
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                cv2.imwrite(str(d / f"{i}.png"), img[..., ::-1])  # cv2 writes BGR
                written[(side, c, i)] = img
    train, test = load_cifar10(tmp_path)
    assert train.classes == ("airplane", "cat", "truck")  # names not all CIFAR's: sorted
    assert train.items.shape == (9, 32, 32, 3) and test.items.shape == (6, 32, 32, 3)
    assert np.array_equal(train.items[0], written[("train", "airplane", 0)])
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert train.meta["variant"] == "image folders: 9 train / 6 test"


def test_task_registration():
    task = get_task("cifar10")
    assert task.metrics == ("topk",) and task.folder == "cifar10"
    url, sha, name = task.fetch_urls[0]
    assert url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" and len(sha) == 64
    assert "c58f30108f718f92721af3b95e74349a" in task.fetch_help


def test_page_sections_render_budget_and_claims(tmp_path):
    task = get_task("cifar10")
    from cvbench.report import Page
    from cvbench.results import RunRecord

    record = RunRecord(
        key="k", task="cifar10", params={}, seed=0, timings={}, data={"test": {"n": 1}},
        method="fastnet", family="deep", label="FastNet (CPU budget)", quick=False,
        metrics={"accuracy": 0.5}, device={"name": "cpu"},
        info={"n_params": 1234, "wall_s": 10.0, "train_images_per_s": 50.0,
              "curves": {"epoch": [1, 2], "train_loss": [2.0, 1.5], "train_acc": [0.2, 0.4],
                         "val_loss": [2.1, 1.7], "val_acc": [0.2, 0.35]},
              "budget": {"protocol": "cpu budget: 2 epochs", "epochs": 2, "epochs_run": 2}},
    )
    record = RunRecord.from_json(json.loads(record.to_json()))
    sections = task.report_sections()
    page = Page(task, [record], [], tmp_path)
    md = sections["budgets"](page) + sections["claims"](page)
    assert "cpu budget: 2 epochs" in md and "1,234" in md and "0.95" in md
    assert "FastNet (CPU budget)" in md


@pytest.mark.realdata
def test_real_shared_subset(real_data):
    folder = task_data(real_data, "cifar10")
    train, test = load_cifar10(folder)
    assert (len(train), len(test)) == (5170, 1017)
    assert train.items.shape[1:] == (32, 32, 3)
    assert train.meta["variant"].startswith("shared subset: 5170 train / 1017 test")
    assert train.class_counts().min() > 400


@pytest.mark.realdata
def test_real_quick_deep_fit(real_data):
    from cvbench.methods import create_method
    from cvbench.split import per_class_limit

    train, test = load_cifar10(task_data(real_data, "cifar10"))
    train, test = per_class_limit(train, 8), per_class_limit(test, 4)
    m = create_method("fastnet", width=0.25, epochs=1, batch_size=40, device="cpu", n_jobs=1)
    scores = m.fit(train).predict_scores(test)
    assert scores.shape == (40, 10) and np.allclose(scores.sum(1), 1, atol=1e-5)
    assert m.info_["budget"]["epochs_run"] == 1
