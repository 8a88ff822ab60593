"""Scene-15 reader (both layouts, errors), the task entry, and a small real-data end-to-end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvbench.baselines.tiny import TinyKNN
from cvbench.errors import DataError
from cvbench.split import per_class_limit
from cvbench.tasks.scene15.reader import read as read_scene15
from tests.conftest import task_data


def write_images(folder: Path, n: int, fmt: str = "jpg", seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, size=(12, 16), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"image_{i + 1:04d}.{fmt}")


def split_layout(root: Path, classes=("Coast", "Bedroom", "Forest"), n_train=3, n_test=2) -> Path:
    for j, c in enumerate(classes):
        write_images(root / "train" / c, n_train, "jpg", seed=j)
        write_images(root / "test" / c, n_test, "png", seed=10 + j)
    return root


def single_layout(root: Path, counts=None) -> Path:
    counts = counts or {"bedroom": 7, "MITcoast": 6, "CALsuburb": 5}
    for j, (c, n) in enumerate(counts.items()):
        write_images(root / c, n, seed=j)
    (root / "README.txt").write_text("not a class")
    return root


def test_split_folders_layout(tmp_path):
    train, test = read_scene15(split_layout(tmp_path / "scene15"))
    assert train.classes == ("Bedroom", "Coast", "Forest")  # sorted, as on disk
    assert len(train) == 9 and len(test) == 6
    assert train.class_counts().tolist() == [3, 3, 3]
    assert train.meta["variant"] == "train/test folders: 9 train / 6 test"
    assert train.name == "scene15/train" and test.name == "scene15/test"
    # labels follow the folder names
    for split in (train, test):
        for item, label in zip(split.items, split.labels):
            assert Path(item).parent.name == split.classes[label]
    assert train.image(0, "gray").shape == (12, 16)
    assert test.image(0, "gray").shape == (12, 16)  # PNGs are read too


def test_single_folder_release_protocol(tmp_path):
    root = single_layout(tmp_path / "scene15")
    train, test = read_scene15(root, seed=0, train_per_class=3)
    assert train.classes == ("CALsuburb", "MITcoast", "bedroom")
    assert train.class_counts().tolist() == [3, 3, 3]
    assert test.class_counts().tolist() == [2, 3, 4]
    assert not set(train.items) & set(test.items)
    assert "single-folder release (18 images)" in train.meta["variant"]
    assert train.meta["variant"].endswith("9 train / 9 test")
    again, _ = read_scene15(root, seed=0, train_per_class=3)
    other, _ = read_scene15(root, seed=1, train_per_class=3)
    assert list(again.items) == list(train.items)  # seeded: reproducible
    assert list(other.items) != list(train.items)  # and the seed matters


def test_single_folder_needs_more_than_train_per_class(tmp_path):
    root = single_layout(tmp_path / "scene15")
    with pytest.raises(DataError, match=r"CALsuburb holds 5 images.*more than 100"):
        read_scene15(root)


def test_empty_class_folder_is_named(tmp_path):
    root = split_layout(tmp_path / "scene15")
    (root / "train" / "Kitchen").mkdir()
    (root / "test" / "Kitchen").mkdir()
    with pytest.raises(DataError, match=r"train/Kitchen holds no images"):
        read_scene15(root)
    root2 = single_layout(tmp_path / "single")
    (root2 / "Office").mkdir()
    with pytest.raises(DataError, match=r"Office holds no images"):
        read_scene15(root2, train_per_class=3)


@pytest.mark.parametrize("case", ["empty", "only_train", "files_only", "class_mismatch"])
def test_wrong_layout_explains_expected_layout(tmp_path, case):
    root = tmp_path / "scene15"
    root.mkdir()
    if case == "only_train":
        write_images(root / "train" / "Coast", 2)
    elif case == "files_only":
        write_images(root, 3)
    elif case == "class_mismatch":
        split_layout(root)
        write_images(root / "test" / "Store", 2)
    with pytest.raises(DataError) as exc:
        read_scene15(root)
    msg = str(exc.value)
    if case == "class_mismatch":
        assert "only in test: ['Store']" in msg
    else:
        assert "train/<Class>/*.jpg" in msg and "<class>/*.jpg" in msg


def test_task_is_registered():
    from cvbench.tasks import get_task

    task = get_task("scene15")
    assert task.folder == "scene15" and task.metrics == ("topk",)
    assert task.quick_limit == (20, 10)
    assert "figshare" in task.fetch_help
    assert task.source == "course homework part 1 (Lazebnik et al. 2006 scenes)"


@pytest.mark.realdata
def test_real_data_counts(real_data):
    train, test = read_scene15(task_data(real_data, "scene15"))
    assert len(train) == 1500 and len(test) == 1500
    assert len(train.classes) == 15 and train.classes[0] == "Bedroom"
    assert train.class_counts().tolist() == [100] * 15
    assert test.class_counts().tolist() == [100] * 15
    assert train.meta["variant"] == "train/test folders: 1500 train / 1500 test"


@pytest.mark.realdata
def test_tiny_knn_end_to_end_on_real_subset(real_data):
    train, test = read_scene15(task_data(real_data, "scene15"))
    train = per_class_limit(train, 20, seed=0)
    test = per_class_limit(test, 10, seed=0)
    method = TinyKNN(k=1, metric="l1").fit(train)
    acc = float((method.predict(test) == test.labels).mean())
    assert acc > 2 / 15  # well above chance (1/15); about 0.2 is expected at 20 per class


def _record(method, label, acc, started, **params):
    from cvbench.results import RunRecord

    return RunRecord(key=f"{label}{started}{params}", task="scene15", method=method, label=label,
                     params=params, started=started, seed=0, data={"test": {"n": 1}},
                     metrics={"accuracy": acc}, timings={})


def page_sections(records, folder):
    from cvbench.report import Page
    from cvbench.tasks import get_task
    from cvbench.tasks.scene15.report import section_study

    return section_study(Page(get_task("scene15"), records, [], folder))


def test_page_section_sets_runs_beside_the_study(tmp_path):
    tiny = dict(size=16, crop=False, zero_mean=True, norm="l1", metric="l1", weighted=False)
    bow = dict(classifier="knn", vocab_size=400, pyramid_levels=0, encoding="hard", hist_norm="l1", metric="l1")
    records = [
        _record("tiny-knn", "Tiny grid", 0.1111, "2026-01-01", k=1, **tiny),
        _record("tiny-knn", "Tiny grid", 0.2147, "2026-01-02", k=1, **tiny),  # latest wins
        _record("tiny-knn", "Tiny grid", 0.2187, "2026-01-02", k=5, **tiny),
        _record("tiny-knn", "Tiny L2", 0.9999, "2026-01-02", k=1, **{**tiny, "metric": "l2"}),
        _record("bow-sift", "BoW", 0.6011, "2026-01-02", k=8, step=4, **bow),
        _record("bow-sift", "BoW SVM", 0.7, "2026-01-02", k=8, step=4, **{**bow, "classifier": "linear-svm"}),
    ]
    md = page_sections(records, tmp_path)
    assert "## Against the source study" in md
    assert "| study (reported) | 0.2233 | 0.1787 |" in md
    assert "| ours: Tiny grid | 0.2147 | – | – | – | 0.2187 |" in md
    assert "0.9999" not in md and "0.7000" not in md  # other settings are not comparable
    assert "ours: BoW, step 4" in md and "0.6011" in md
    assert md.index("the study's pipeline") < md.index("0.6011")
    hellinger = _record("bow-sift", "BoW sqrt", 0.6677, "2026-01-02", k=8, step=4, **{**bow, "hist_norm": "sqrt"})
    md = page_sections(records + [hellinger], tmp_path)
    ours = md[md.index("our improvement, not the study's setting"):]
    assert "0.6677" in ours and "0.6677" not in md[:md.index("our improvement")]
    assert 'titled "the study\'s pipeline"' in md
    md = page_sections([r for r in records if r.label != "BoW"] + [hellinger], tmp_path)
    assert "the study's pipeline" not in md and "No bag-of-SIFT record here is at the study's" in md
    assert page_sections([], tmp_path) == ""


def test_suite_has_a_block_at_the_study_pipeline():
    """The committed suite runs the study's exact bag of SIFT (what the page's study table
    needs): L1 histograms, L1 metric, 400 words, no pyramid, steps 1/3/5, k 1..10."""
    from cvbench.methods import create_method, full_params
    from cvbench.paths import repo_root
    from cvbench.suite import load_suite
    from cvbench.tasks.scene15.report import _BOW_STUDY

    specs = load_suite(repo_root() / "suites" / "scene15.toml", "scene15").specs()
    exact = {}
    for s in specs:
        if s.method != "bow-sift":
            continue
        params = full_params(create_method("bow-sift", **s.params))
        if all(params.get(k) == v for k, v in _BOW_STUDY.items()):
            exact.setdefault(params["step"], set()).add(params["k"])
    assert {step: sorted(ks) for step, ks in exact.items()} == {
        step: list(range(1, 11)) for step in (1, 3, 5)}
