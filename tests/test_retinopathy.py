"""Retinopathy task: readers (EyePACS, APTOS), patient split, QWK, trivial baseline, page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import cohen_kappa_score

from cvbench.errors import BadImageError, DataError
from cvbench.metrics import evaluate, quadratic_weighted_kappa
from cvbench.split import carve_validation
from cvbench.tasks import get_task
from cvbench.tasks.retinopathy.reader import GRADES, detect_layout, patient_split
from cvbench.tasks.retinopathy.reader import read as load_retinopathy
from tests.conftest import task_data


def _tiny(path: Path, value: int = 120, fmt: str = "JPEG") -> None:
    img = np.zeros((24, 32, 3), np.uint8)
    img[4:20, 8:24] = value
    Image.fromarray(img).save(path, format=fmt)


def make_eyepacs(root: Path, n_patients: int = 30, seed: int = 0) -> Path:
    """EyePACS layout: trainLabels.csv (image,level) + train/<patient>_<eye>.jpeg."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    rows = ["image,level"]
    for p in range(n_patients):
        base = int(rng.integers(0, 5))
        for eye in ("left", "right"):
            grade = base if rng.random() < 0.7 else int(rng.integers(0, 5))
            name = f"{100 + p}_{eye}"
            _tiny(root / "train" / f"{name}.jpeg", 40 + 30 * grade)
            rows.append(f"{name},{grade}")
    (root / "trainLabels.csv").write_text("\n".join(rows) + "\n")
    return root


def make_aptos(root: Path, n: int = 25) -> Path:
    """APTOS 2019 layout: train.csv (id_code,diagnosis) + train_images/<id_code>.png."""
    (root / "train_images").mkdir(parents=True)
    rows = ["id_code,diagnosis"]
    for i in range(n):
        code = f"{i:04x}abcd{i:02d}"
        _tiny(root / "train_images" / f"{code}.png", 50 + i, fmt="PNG")
        rows.append(f"{code},{i % 5}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------- metric


def test_qwk_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    pred = np.clip(y + rng.integers(-2, 3, 300), 0, 4)
    ref = cohen_kappa_score(y, pred, weights="quadratic")
    assert quadratic_weighted_kappa(y, pred, 5) == pytest.approx(ref)
    scores = np.eye(5)[pred]
    get_task("retinopathy")  # the task's own metrics (referable) register when it is loaded
    m = evaluate(y, scores, GRADES, metrics=("qwk", "referable"))
    assert m["qwk"] == pytest.approx(ref)
    assert 0.0 < m["qwk"] < 1.0
    pos = y >= 2
    assert m["referable"]["sensitivity"] == pytest.approx(np.mean(pred[pos] >= 2))
    assert m["referable"]["specificity"] == pytest.approx(np.mean(pred[~pos] < 2))


# ---------------------------------------------------------------- readers


def test_eyepacs_reader_splits_by_patient(tmp_path):
    root = make_eyepacs(tmp_path / "retinopathy")
    assert detect_layout(root) == "eyepacs"
    train, test = load_retinopathy(root, seed=0)
    assert len(train) + len(test) == 60
    assert 0.1 < len(test) / 60 < 0.35
    assert not set(train.groups["patient"]) & set(test.groups["patient"])
    for s in (train, test):  # both eyes of every patient on the same side
        pats, counts = np.unique(s.groups["patient"], return_counts=True)
        assert set(counts) == {2}
        assert set(s.groups["eye"]) == {"left", "right"}
    assert train.classes == GRADES
    assert "patient" in train.meta["variant"] and "EyePACS" in train.meta["variant"]
    assert train.meta["val_group_key"] == "patient"
    assert train.meta["exposure"]["checked"] == len(train)
    assert train.groups["exposure"].shape == (len(train),)
    again_train, again_test = load_retinopathy(root, seed=0)
    assert again_test.fingerprint == test.fingerprint
    other = load_retinopathy(root, seed=3)[1]
    assert other.fingerprint != test.fingerprint


def test_aptos_reader_each_image_its_own_group(tmp_path):
    root = make_aptos(tmp_path / "retinopathy")
    assert detect_layout(root) == "aptos"
    train, test = load_retinopathy(root)
    assert len(train) + len(test) == 25 and len(test) == 5
    assert len(set(train.groups["patient"])) == len(train)
    assert "APTOS" in train.meta["variant"] and "no patient ids" in train.meta["variant"]
    assert sorted(test.class_counts()) == [1, 1, 1, 1, 1]  # stratified by grade
    assert all(str(p).endswith(".png") for p in train.items)


def test_generated_fixture_is_labelled(tmp_path):
    make = get_task("retinopathy").make_fixture
    assert "GENERATED FIXTURE" in make(tmp_path)
    train, test = load_retinopathy(tmp_path / "retinopathy")
    assert len(train) + len(test) == 80
    assert train.meta["variant"].startswith("GENERATED FIXTURE")
    assert not set(train.groups["patient"]) & set(test.groups["patient"])


def test_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="trainLabels.csv"):
        detect_layout(tmp_path)


@pytest.mark.parametrize(("row", "message"), [
    ("100_left,7", r"trainLabels.csv:3: grade 7 outside 0-4"),
    ("100_left,x", r"trainLabels.csv:3: grade 'x' is not an integer"),
    ("999_left,1", r"trainLabels.csv:3: image '999_left' not found"),
    ("100_right,1", r"trainLabels.csv:3: image '100_right' already listed on line 2"),
    ("100_left", r"trainLabels.csv:3: expected 2 columns"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    root = tmp_path / "r"
    (root / "train").mkdir(parents=True)
    for name in ("100_right", "100_left"):
        _tiny(root / "train" / f"{name}.jpeg")
    (root / "trainLabels.csv").write_text(f"image,level\n100_right,0\n{row}\n")
    with pytest.raises(DataError, match=message):
        load_retinopathy(root)


def test_missing_image_folder_and_header(tmp_path):
    (tmp_path / "trainLabels.csv").write_text("image,level\n1_left,0\n")
    with pytest.raises(DataError, match="does not exist"):
        load_retinopathy(tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "trainLabels.csv").write_text("name,grade\n1_left,0\n")
    with pytest.raises(DataError, match=r"trainLabels.csv:1: header"):
        load_retinopathy(tmp_path)


def test_missing_images_skipped_with_skip_bad(tmp_path):
    root = make_eyepacs(tmp_path / "r", n_patients=10)
    (root / "train" / "100_left.jpeg").unlink()
    with pytest.raises(DataError, match="100_left"):
        load_retinopathy(root)
    train, test = load_retinopathy(root, skip_bad=True)
    assert len(train) + len(test) == 19
    assert train.meta["missing_images_skipped"] == 1


def test_undecodable_image(tmp_path):
    root = make_eyepacs(tmp_path / "r", n_patients=10)
    (root / "train" / "101_left.jpeg").write_bytes(b"broken")
    with pytest.raises(BadImageError, match="101_left"):
        load_retinopathy(root)
    train, test = load_retinopathy(root, skip_bad=True)
    side = train if "101" in set(train.groups["patient"]) else test
    assert side.meta["bad_images"] == 1 and side.meta["skip_bad"] is True
    from cvbench.tasks.retinopathy.fundus import prepare_fundus

    prepared = prepare_fundus(side, 16, "crop", skip_bad=True)
    assert prepared.meta["bad_images_zeroed"] == 1


def test_patient_split_never_straddles():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 2)
    labels = rng.integers(0, 5, 400)
    tr, te = patient_split(labels, groups, seed=5)
    assert not set(groups[tr]) & set(groups[te])
    assert len(tr) + len(te) == 400 and 0.15 < len(te) / 400 < 0.25


def test_task_registration():
    task = get_task("retinopathy")
    assert task.primary == "qwk" and task.val_group_key == "patient"
    assert set(task.metrics) == {"qwk", "qwk_eyepacs", "referable", "mean_ovr_accuracy"}
    assert "grading" in task.report_sections() and "grading" in task.sections


# ---------------------------------------------------------------- trivial baseline and page


def _record(method: str, label: str, y: np.ndarray, scores: np.ndarray, info: dict | None = None):
    from cvbench.results import RunRecord

    m = evaluate(y, scores, GRADES, metrics=("qwk", "referable", "mean_ovr_accuracy"))
    desc = {"n": len(y), "exposure": {"checked": len(y), "under": 1, "over": 0}}
    return RunRecord(key=label, task="retinopathy", label=label, method=method, family="x", metrics=m,
                     params={}, seed=0, timings={}, info=info or {}, data={"train": desc, "test": desc},
                     predictions={"y_true": y.tolist(), "y_pred": scores.argmax(1).tolist()})


def test_majority_class_is_qwk_zero_and_page_sections(tmp_path):
    from cvbench.baselines.trivial import MajorityClass
    from cvbench.split import Split

    y = np.array([0, 0, 0, 1, 2, 2, 3, 4, 0, 2])
    split = Split(items=np.zeros((10, 4, 4), np.uint8), labels=y, classes=GRADES, name="r/train")
    method = MajorityClass().fit(split)
    scores = method.predict_scores(split)
    assert scores.shape == (10, 5) and set(method.predict(split)) == {0}
    assert evaluate(y, scores, GRADES, metrics=("qwk",))["qwk"] == 0.0

    good = np.eye(5)[np.clip(y + (np.arange(10) % 3 == 0), 0, 4)]
    info = {"ordinal": {"thresholds": [0.4, 1.6, 2.5, 3.3], "val_qwk_default": 0.5,
                        "val_qwk_fitted": 0.6, "val_n": 50}}
    from cvbench.report import Page
    from cvbench.tasks.retinopathy.report import section_grading

    def page(records, folder):
        return section_grading(Page(get_task("retinopathy"), records, [], folder))

    text = page([_record("cnn", "CNN", y, good, info)], tmp_path)
    assert "all-zeros predictor" in text and "not our runs" in text
    assert "0.849" in text and "one-vs-rest accuracy" in text
    assert "| **0** |" in text and "0.40, 1.60, 2.50, 3.30" in text
    with_majority = page([_record("cnn", "CNN", y, good), _record("majority-class", "maj", y, scores)],
                         tmp_path)
    assert "all-zeros predictor" not in with_majority and "| maj |" in with_majority


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_eyepacs_patient_split(real_data):
    """The reader's split path on the real subset (without the slower exposure screen)."""
    from cvbench.tasks.retinopathy.reader import _image_size_note, eyepacs_patients, read_label_csv

    root = task_data(real_data, "retinopathy")
    csv_path = root / "trainLabels.csv"
    paths, grades, ids, missing = read_label_csv(csv_path, "image", "level", root / "train")
    assert missing == 0 and len(paths) == 2246
    assert np.bincount(grades).tolist() == [1157, 290, 611, 108, 80]
    patients, _ = eyepacs_patients(ids, csv_path)
    tr, te = patient_split(np.asarray(grades), patients, seed=0)
    assert not set(patients[tr]) & set(patients[te])
    assert abs(len(te) / 2246 - 0.2) < 0.02
    assert "256x256" in _image_size_note(paths) and "colour-processed" in _image_size_note(paths)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_eyepacs_load(real_data):
    root = task_data(real_data, "retinopathy")
    train, test = load_retinopathy(root, seed=0)
    assert len(train) + len(test) == 2246
    assert not set(train.groups["patient"]) & set(test.groups["patient"])
    assert "256x256" in test.meta["variant"]
    fit, val = carve_validation(train, 0.2, seed=0, group_key=get_task("retinopathy").val_group_key)
    assert not set(fit.groups["patient"]) & set(val.groups["patient"])


# ---------------------------------------------------------------- ordinal decisions and deep method


def test_threshold_scores_argmax_is_thresholded_grade():
    from cvbench.deep.ordinal import grades_from_values, threshold_scores

    t = np.array([0.4, 1.7, 2.2, 3.9])
    values = np.concatenate([np.linspace(-1, 5, 601), t, np.nextafter(t, 10), np.nextafter(t, -10)])
    scores = threshold_scores(values, t)
    assert scores.shape == (len(values), 5)
    assert np.array_equal(scores.argmax(1), grades_from_values(values, t))
    assert np.all(scores.max(1) == 0) and np.all(scores <= 0)
    assert grades_from_values(np.array([0.4, 0.41, -3, 9]), t).tolist() == [0, 1, 0, 4]


def test_fast_qwk_matches_metrics():
    from cvbench.metrics import quadratic_weighted_kappa_fast as fast_qwk

    rng = np.random.default_rng(3)
    for n in (1, 7, 300):
        y, p = rng.integers(0, 5, n), rng.integers(0, 5, n)
        assert fast_qwk(y, p, 5) == pytest.approx(quadratic_weighted_kappa(y, p, 5))
    assert fast_qwk(np.zeros(5, int), np.zeros(5, int), 5) == 0.0


def test_optimised_thresholds_improve_qwk_on_toy_problem():
    from cvbench.deep.ordinal import default_thresholds, grades_from_values, optimise_thresholds

    rng = np.random.default_rng(0)
    y = rng.choice(5, size=400, p=[0.5, 0.1, 0.25, 0.08, 0.07])
    values = 0.45 * y + 0.3 + rng.normal(0, 0.25, len(y))  # compressed, shifted scale
    before = quadratic_weighted_kappa(y, grades_from_values(values, default_thresholds(5)), 5)
    t = optimise_thresholds(y, values)
    after = quadratic_weighted_kappa(y, grades_from_values(values, t), 5)
    assert np.all(np.diff(t) >= 0) and len(t) == 4
    assert after > before + 0.05


def test_fundus_augment_batched_and_seeded():
    import torch

    from cvbench.tasks.retinopathy.methods import fundus_augment

    x = torch.zeros((6, 3, 32, 32), dtype=torch.uint8)
    x[:, :, 8:24, 8:24] = 200
    a = fundus_augment(x, torch.Generator().manual_seed(1))
    b = fundus_augment(x, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(fundus_augment(x, torch.Generator(), rotate=False, flip=False, jitter=0.0), x)


def _in_memory_split(n: int = 60, seed: int = 0):
    from cvbench.split import Split

    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(5), n // 5)
    imgs = np.zeros((n, 32, 32, 3), np.uint8)
    for i, g in enumerate(y):  # a bright disc whose brightness grows with the grade
        yy, xx = np.ogrid[:32, :32]
        imgs[i][(yy - 16) ** 2 + (xx - 16) ** 2 < 140] = 60 + 35 * g + rng.integers(0, 10)
    patients = np.repeat(np.arange(n // 2), 2).astype(str).astype(object)
    return Split(items=imgs, labels=y, classes=GRADES, name="toy/train", groups={"patient": patients})


@pytest.mark.parametrize("method", ["retina-cnn", "retina-ordinal"])
def test_retina_methods_fit_predict(method):
    from cvbench.methods import create_method

    split = _in_memory_split()
    m = create_method(method, image_size=32, epochs=1, batch_size=16, width=4,
                      val_fraction=0.25, device="cpu", fundus_prep="crop+ben")
    m.fit(split)
    scores = m.predict_scores(split)
    assert scores.shape == (len(split), 5) and np.isfinite(scores).all()
    assert m.info_["val_metrics"]["n"] > 0 and m.info_["fundus_prep"] == "crop+ben"
    if method == "retina-ordinal":
        from cvbench.deep.ordinal import grades_from_values

        assert len(m.info_["ordinal"]["thresholds"]) == 4
        values = m.scalar_grade(m.trainer_.predict_outputs(m.pixels(m._prepared(split)))).numpy()
        assert np.array_equal(scores.argmax(1), grades_from_values(values, m.thresholds_))


def test_retina_method_rejects_bad_params():
    from cvbench.errors import UserError
    from cvbench.methods import create_method

    for bad in ({"fundus_prep": "x"}, {"objective": "x"}, {"fundus_augment": "spin"},
                {"objective": "ordinal", "class_weight": "balanced"}, {"train_crop": 4}):
        with pytest.raises(UserError):  # the planner checks every run before its fit
            create_method("retina-cnn", epochs=1, **bad).validate({"n_train": 10})


def test_random_square_crop_windows():
    import torch

    from cvbench.tasks.retinopathy.methods import random_square_crop

    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.int32).reshape(2, 3, 10, 10)
    out = random_square_crop(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 4, 4)
    for i in range(2):  # each output is a contiguous window of its own image
        y0, x0 = divmod(int(out[i, 0, 0, 0] - x[i, 0, 0, 0]), 10)
        assert torch.equal(out[i], x[i, :, y0:y0 + 4, x0:x0 + 4])


def test_study_densenet_head_frozen_body():
    from cvbench.methods import create_method

    m = create_method("retina-densenet201", pretrained=None)
    net = m.build_model(5)
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert (total, trainable) == (20_070_789, 2_206_917)


def test_unfreeze_after_adds_body_to_optimizer():
    import types

    import torch

    from cvbench.methods import create_method

    m = create_method("retina-cnn", width=4, freeze=True, unfreeze_after=2)
    net = m.build_model(5)
    head_only = [p for p in net.parameters() if p.requires_grad]
    trainer = types.SimpleNamespace(optimizer=torch.optim.SGD(head_only, lr=0.1))
    m.on_epoch_end(0, trainer)  # after epoch 1: still frozen
    assert len(trainer.optimizer.param_groups) == 1
    m.on_epoch_end(1, trainer)  # after epoch 2: body joins the optimizer
    assert all(p.requires_grad for p in net.parameters())
    assert len(trainer.optimizer.param_groups) == 2 and m._unfrozen_at == 2


def test_lesion_stats_method():
    from cvbench.deep.ordinal import grades_from_values
    from cvbench.methods import create_method

    split = _in_memory_split(60)
    m = create_method("retina-lesion-stats", image_size=32, folds=3).fit(split)
    scores = m.predict_scores(split)
    assert scores.shape == (60, 5)
    values = m.model_.predict(m._features(split))
    assert np.array_equal(scores.argmax(1), grades_from_values(values, m.thresholds_))
    assert m.info_["ordinal"]["val_qwk_fitted"] >= m.info_["ordinal"]["val_qwk_default"] - 1e-9


def test_eyepacs_official_test_labels_used_when_present(tmp_path):
    root = make_eyepacs(tmp_path / "r", n_patients=10)
    (root / "test").mkdir()
    rows = ["image,level,Usage"]
    for i, eye in enumerate(("left", "right", "left")):
        name = f"{900 + i}_{eye}"
        _tiny(root / "test" / f"{name}.jpeg")
        rows.append(f"{name},{i},Public")
    (root / "retinopathy_solution.csv").write_text("\n".join(rows) + "\n")
    train, test = load_retinopathy(root)
    assert len(train) == 20 and len(test) == 3
    assert test.labels.tolist() == [0, 1, 2] and "official" in test.meta["variant"]


def test_prevalence_weighted_qwk_equals_plain_at_the_released_mix():
    from cvbench.metrics import quadratic_weighted_kappa
    from cvbench.tasks.retinopathy.protocol import (
        EYEPACS_GRADE_COUNTS,
        prevalence_weights,
        qwk_at_eyepacs_mix,
    )

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), EYEPACS_GRADE_COUNTS)  # exactly the released mix
    p = np.clip(y + rng.integers(-1, 2, len(y)), 0, 4)
    assert np.allclose(prevalence_weights(y), 1.0)
    assert qwk_at_eyepacs_mix(y, p) == pytest.approx(quadratic_weighted_kappa(y, p, 5))
    enriched = np.repeat(np.arange(5), [50, 13, 27, 5, 5])  # a disease-enriched mix: weights differ
    w = prevalence_weights(enriched)
    assert np.bincount(enriched, weights=w) / w.sum() == pytest.approx(
        np.array(EYEPACS_GRADE_COUNTS) / sum(EYEPACS_GRADE_COUNTS))


def test_patient_bootstrap_keeps_both_eyes_together():
    from cvbench.metrics import resample_indices

    patients = np.repeat(np.arange(20), 2)  # item 2i and 2i+1 are the two eyes of patient i
    for draw in resample_indices(len(patients), 50, seed=0, groups=patients.astype(str)):
        counts = np.bincount(draw, minlength=len(patients))
        assert (counts[0::2] == counts[1::2]).all()
