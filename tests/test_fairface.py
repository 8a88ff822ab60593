"""FairFace task: reader, compositions at equal size (the task's condition), per-group tables
and paired-bootstrap differences, and a tiny real-data run."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cvbench.compare import variant_name
from cvbench.errors import DataError, UserError
from cvbench.leaderboard import render_task
from cvbench.metrics import group_bootstrap, group_statistics
from cvbench.report import Page
from cvbench.results import RunRecord
from cvbench.split import Split
from cvbench.tasks import get_task
from cvbench.tasks.fairface.protocol import (
    BIASED_MIX,
    compose,
    fitting_total,
    largest_remainder,
    parse_mix,
)
from cvbench.tasks.fairface.reader import AGES, RACES, read_label_csv
from cvbench.tasks.fairface.reader import read as read_fairface
from tests.conftest import task_data


# ---------------------------------------------------------------- fixtures
def _write_release(root, rows_train, rows_val, touch=True):
    """A FairFace-layout folder with the given CSV rows (images are empty placeholder files)."""
    for name, rows in (("fairface_label_train.csv", rows_train), ("fairface_label_val.csv", rows_val)):
        lines = ["file,age,gender,race,service_test"] + [",".join(r) for r in rows]
        (root / name).write_text("\n".join(lines) + "\n")
        if touch:
            for r in rows:
                (root / r[0]).parent.mkdir(parents=True, exist_ok=True)
                (root / r[0]).write_bytes(b"")
    return root


def _rows(prefix, n_per_race=2):
    rows, i = [], 0
    for race in RACES:
        for j in range(n_per_race):
            i += 1
            rows.append((f"{prefix}/{i}.jpg", AGES[i % len(AGES)], ("Male", "Female")[j % 2], race, "True"))
    return rows


def _synthetic_split(per_race=100):
    n = per_race * len(RACES)
    races = np.repeat(np.array(RACES), per_race)
    return Split(
        items=np.array([f"img{i}.jpg" for i in range(n)], dtype=object),
        labels=np.repeat(np.arange(len(RACES)), per_race),
        classes=RACES,
        name="fairface/train",
        groups={"race": races, "gender": np.tile(np.array(["Male", "Female"]), n // 2)},
    )


# ---------------------------------------------------------------- reader
def test_reader_reads_labels_and_groups(tmp_path):
    _write_release(tmp_path, _rows("train"), _rows("val", 1))
    train, test = read_fairface(tmp_path)
    assert (len(train), len(test)) == (14, 7)
    assert train.classes == RACES
    assert train.labels.tolist() == np.repeat(np.arange(7), 2).tolist()
    assert train.groups["race"][2] == "Black" and train.groups["gender"][1] == "Female"
    assert train.groups["race_gender"][0] == "White/Male"
    assert train.groups["age_id"][0] == 1 and train.groups["age"][0] == AGES[1]
    assert "validation" in test.meta["variant"] and "2 per race" in test.meta["variant"]
    assert test.name == "fairface/test"


@pytest.mark.parametrize("field, value, what", [(3, "Martian", "race"), (2, "Other", "gender"),
                                                 (1, "70+", "age")])
def test_reader_rejects_unknown_value_with_file_and_line(tmp_path, field, value, what):
    rows = [list(r) for r in _rows("train")]
    rows[4][field] = value  # data row 5 = line 6 of the CSV (header is line 1)
    _write_release(tmp_path, rows, _rows("val", 1))
    with pytest.raises(DataError, match=rf"fairface_label_train\.csv:6: unknown {what} '{re.escape(value)}'"):
        read_fairface(tmp_path)


def test_reader_reports_missing_image_and_skip_bad_drops_it(tmp_path):
    _write_release(tmp_path, _rows("train"), _rows("val", 1))
    (tmp_path / "val" / "3.jpg").unlink()
    with pytest.raises(DataError, match=r"fairface_label_val\.csv:4: image file .*3\.jpg does not exist"):
        read_fairface(tmp_path)
    split = read_label_csv(tmp_path, "fairface_label_val.csv", "fairface/test", skip_bad=True)
    assert len(split) == 6 and split.meta["missing_files"] == 1


@pytest.mark.parametrize("bad, message", [("train/9.jpg,3-9,Male", "malformed row"),
                                          ("../9.jpg,3-9,Male,White,True", "must be a path inside")])
def test_reader_rejects_malformed_rows(tmp_path, bad, message):
    _write_release(tmp_path, _rows("train"), _rows("val", 1))
    csv_path = tmp_path / "fairface_label_val.csv"
    csv_path.write_text(csv_path.read_text() + bad + "\n")
    with pytest.raises(DataError, match=rf"fairface_label_val\.csv:9: .*{message}"):
        read_fairface(tmp_path)


def test_reader_rejects_missing_column_and_missing_csv(tmp_path):
    (tmp_path / "fairface_label_train.csv").write_text("file,age,race\ntrain/1.jpg,3-9,White\n")
    with pytest.raises(DataError, match=r"fairface_label_train\.csv:1: missing column\(s\) gender"):
        read_label_csv(tmp_path, "fairface_label_train.csv", "x")
    with pytest.raises(DataError, match="missing label file"):
        read_label_csv(tmp_path, "fairface_label_val.csv", "x")


# ---------------------------------------------------------------- compositions
def test_largest_remainder_by_hand():
    # quotas 3.5, 2.1, 1.4 -> floors 3, 2, 1; the one seat left goes to the largest remainder
    assert largest_remainder(np.array([0.5, 0.3, 0.2]), 7).tolist() == [4, 2, 1]
    # ties go to the earlier group
    assert largest_remainder(np.full(3, 1 / 3), 5).tolist() == [2, 2, 1]
    assert largest_remainder(np.array([0.25, 0.75]), 0).tolist() == [0, 0]


def test_biased_composition_counts_match_study_mix():
    split = _synthetic_split(100)
    n = fitting_total(split)
    assert n == 227  # floor(100 / 0.4393)
    sub = compose(split, "biased", seed=0)
    comp = sub.meta["composition"]
    counts = np.array([comp["counts"][r] for r in RACES])
    assert comp["total"] == len(sub) == n and counts.sum() == n
    assert counts.max() <= 100
    want = np.array([BIASED_MIX[r] for r in RACES]) / sum(BIASED_MIX.values())
    assert np.all(np.abs(counts - want * n) < 1)  # largest remainder: within one item
    assert counts.tolist() == largest_remainder(want, n).tolist()
    assert np.bincount(sub.labels, minlength=7).tolist() == counts.tolist()


def test_compositions_share_size_and_are_reproducible():
    split = _synthetic_split(100)
    sizes = {c: len(compose(split, c, seed=3)) for c in ("natural", "biased", "balanced")}
    assert set(sizes.values()) == {227}
    bal = compose(split, "balanced", seed=3)
    # 227 / 7 = 32.43: floors of 32, the 3 seats left go to the first races (ties: class order)
    assert list(bal.meta["composition"]["counts"].values()) == [33, 33, 33, 32, 32, 32, 32]
    assert compose(split, "biased", seed=3).fingerprint == compose(split, "biased", seed=3).fingerprint
    assert compose(split, "biased", seed=3).fingerprint != compose(split, "biased", seed=4).fingerprint
    # prefix design: the balanced set's items of a race are a subset of the biased set's
    bia = compose(split, "biased", seed=3)
    assert set(bal.items[bal.labels == 0]) <= set(bia.items[bia.labels == 0])


def test_user_mix_and_errors():
    split = _synthetic_split(100)
    assert parse_mix("White=2,Black=1")["White"] == pytest.approx(2 / 3)
    sub = compose(split, "White=50,Black=50", total=100)
    assert sub.meta["composition"]["counts"]["White"] == 50 and len(sub) == 100
    with pytest.raises(UserError, match="at most 166 fits"):
        compose(split, "White=60,Black=40", total=227)
    with pytest.raises(UserError, match="bad composition entry 'Klingon=3'"):
        parse_mix("White=3,Klingon=3")
    with pytest.raises(UserError, match="no positive share"):
        parse_mix("White=0")


def test_composition_condition_is_validated():
    cond = get_task("fairface").conditions["composition"]
    cond.validate("biased", "fairface")
    cond.validate("White=50,Black=50", "fairface")
    with pytest.raises(UserError, match="bad composition entry 'Klingon=3'"):
        cond.validate("Klingon=3", "fairface")
    drawn = cond.apply(_synthetic_split(100), "biased", 0)
    assert len(drawn) == 227 and drawn.meta["composition"]["counts"]["White"] == 100


# ---------------------------------------------------------------- group metrics and the page
def test_group_point_and_bootstrap_by_hand():
    strata = np.array(["a", "a", "b", "b", "b", "b"])
    correct = np.array([[1, 0, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]], dtype=bool)
    pt = group_statistics(correct, strata)
    assert pt["per_group"].tolist() == [[0.5, 0.75], [1.0, 0.0]]
    assert pt["overall"].tolist() == pytest.approx([4 / 6, 2 / 6])
    assert pt["gap"].tolist() == [0.25, 1.0]
    boot = group_bootstrap(correct, strata, n_boot=500, seed=1)
    assert boot["overall"].shape == (2, 500) and boot["per_group"].shape == (2, 2, 500)
    # run 1 is always right on a and wrong on b: no resample can change that
    assert np.all(boot["per_group"][1, 0] == 1.0) and np.all(boot["gap"][1] == 1.0)
    assert np.all(boot["overall"][1] == pytest.approx(2 / 6))  # strata sizes are fixed


def _record(composition, correct_by_race, seed=0, class_weight=None, gender=None):
    """A run record as the runner writes it, with per-race correctness given by hand."""
    from cvbench.metrics import evaluate

    y_true = np.repeat(np.arange(7), 10)
    y_pred = y_true.copy()
    for r, n_right in enumerate(correct_by_race):
        y_pred[r * 10 + n_right: (r + 1) * 10] = (r + 1) % 7
    genders = np.tile(np.array(["Male", "Female"]), 35)
    scores = np.eye(7)[y_pred]
    groups = {"race": np.array(RACES)[y_true], "gender": genders}
    metrics = evaluate(y_true, scores, RACES, metrics=("groups:race", "groups:race*gender"), groups=groups)
    class_counts = dict.fromkeys(RACES, 10)
    rec = RunRecord(
        key=f"{composition}{seed}{class_weight}", task="fairface", method="cnn", label="joint",
        seed=seed, family="deep", params={"class_weight": class_weight, "epochs": 3, "seed": seed},
        conditions={"composition": composition},
        data={"variant": "v", "train": {"n": 7000, "fingerprint": "t"},
              "train_used": {"n": 2276, "composition": {"name": composition, "total": 2276,
                                                         "counts": dict.fromkeys(RACES, 325)}},
              "test": {"n": 70, "fingerprint": "f", "class_counts": class_counts}},
        metrics=metrics,
        predictions={"y_true": y_true.tolist(), "y_pred": y_pred.tolist()},
        timings={"fit_s": 1.0, "predict_s": 0.1, "total_s": 1.1, "per_image_ms": 1.0},
        budget={"epochs": 3},
    )
    if gender:
        rec.predictions["groups"] = {"gender": genders.tolist()}
    return rec


def test_runs_under_a_corruption_stay_out_of_the_studys_comparison_and_render(tmp_path):
    """The robustness blocks ran each composition under corruptions too: their comparison
    families had the clean family's title, so the page wrote two figures of one name and
    failed to render, and each study table would have come five times. The study's comparison
    is of clean test images (corrupted runs are the robustness section's); a family's title
    names any other fixed condition, and figure names are unique per title."""
    from cvbench.compare import family_title
    from cvbench.tasks.fairface.report import _figure_name

    task = get_task("fairface")
    recs = []
    for corruption in (None, "jpeg:3"):
        for comp, right in (("biased", [10, 6, 8, 8, 8, 8, 4]), ("balanced", [8] * 7)):
            r = _record(comp, right)
            if corruption:
                r.conditions = {**r.conditions, "corruption": corruption}
                r.key += corruption
            recs.append(r)
    md = render_task(task, recs, tmp_path)
    titles = [line for line in md.splitlines() if line.startswith("### `cnn`") and "(paired)" in line]
    assert len(titles) == 1 and "corruption" not in titles[0]
    assert len(list(tmp_path.glob("per-race-*.png"))) == 1
    assert "## Robustness" in md and "jpeg:3" in md  # the corrupted runs are shown there
    assert "joint · test images jpeg:3 | biased |" in md  # run by run, named by its test images
    page = Page(task, recs, [], tmp_path)
    assert "corruption=jpeg:3" in family_title(page, [recs[2]])
    long = "`cnn` (" + "x" * 100
    assert _figure_name("per-race", long + "a)") != _figure_name("per-race", long + "b)")


def test_page_sections_tables_and_differences(tmp_path):
    task = get_task("fairface")
    balanced = _record("balanced", [8] * 7)
    biased = _record("biased", [10, 6, 8, 8, 8, 8, 4])
    mitig = _record("biased", [9, 7, 8, 8, 8, 8, 6], class_weight="balanced", gender=True)
    assert variant_name(Page(task, [], [], tmp_path), mitig) == "biased + class-balanced loss"
    md = render_task(task, [biased, balanced, mitig], tmp_path)
    assert "## Disparity across groups" in md and "Tables V–XI" in md
    # per race x gender table: White / Male for the biased run is 5/5 right
    row = next(line for line in md.splitlines() if line.startswith("| White / Male"))
    assert row.split("|")[2].strip() == "0.800" and row.split("|")[3].strip() == "1.000"
    # biased - balanced for Middle Eastern: 0.4 - 0.8, interval excludes 0 -> bold
    diff = next(line for line in md.splitlines() if line.startswith("| accuracy: Middle Eastern"))
    assert "**-0.400 [" in diff
    gap = next(line for line in md.splitlines() if line.startswith("| race gap (max − min)"))
    assert gap.split("|")[2].strip() == "0.000" and gap.split("|")[3].strip() == "0.600"
    assert "worst race × gender" in md  # genders stored in one record: race x gender rows
    assert any(p.name.startswith("confusion-biased-vs-balanced") for p in tmp_path.iterdir())


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_fairface_tiny_knn_writes_group_table(real_data, tmp_path):
    from cvbench.plan import RunOptions, RunSpec
    from cvbench.run import run_one
    from cvbench.split import per_class_limit
    from cvbench.tasks import get_task

    task = get_task("fairface")
    train, test = task.load_splits(real_data, seed=0)
    folder = task_data(real_data, "fairface")
    assert (len(train), len(test)) == (7000, 1400) and folder.is_dir()
    assert np.bincount(train.labels).tolist() == [1000] * 7
    train, test = per_class_limit(train, 30), per_class_limit(test, 10)
    records = []
    for comp in ("biased", "balanced"):
        spec = RunSpec("tiny-knn", {"size": 8, "n_jobs": 1}, conditions={"composition": comp})
        records.append(run_one(task, spec, RunOptions(save=False, progress=False), splits=(train, test)))
    assert records[0].composition["counts"]["White"] == 30
    assert records[0].composition["total"] == records[1].composition["total"] == 68
    assert records[0].conditions == {"composition": "biased"} and records[0].train_n == 68
    assert set(records[0].metrics["groups"]["race*gender"]["per_group"]) >= {"White / Male"}
    md = render_task(task, records, tmp_path)
    assert "| White / Female |" in md and "biased − balanced [95% CI]" in md


# ---------------------------------------------------------------- registered methods, fixture
def test_suite_blocks_sweep_compositions_with_the_joint_head():
    from cvbench.paths import repo_root
    from cvbench.suite import load_suite

    suite = load_suite(repo_root() / "suites" / "fairface.toml", "fairface")
    specs = suite.specs()
    comps = {s.conditions.get("composition") for s in specs if s.method == "cnn"}
    assert {"biased", "balanced", None} <= comps
    assert all(s.params["aux_targets"] == "gender:2,age:9" for s in specs if s.method == "cnn")
    assert not any(s.method.startswith("fairface") for s in specs)


def test_generated_fixture_joint_model_scores_gender_and_age(tmp_path):
    from cvbench.plan import RunOptions, RunSpec
    from cvbench.run import run_one
    from cvbench.tasks import get_task

    task = get_task("fairface")
    msg = task.make_fixture(tmp_path)
    assert "GENERATED FIXTURE" in msg
    train, test = task.load_splits(tmp_path)
    assert train.meta["variant"].startswith("GENERATED FIXTURE") and (len(train), len(test)) == (56, 28)
    assert train.aux_classes["gender"] == ("Male", "Female") and train.aux_classes["age"] == AGES
    spec = RunSpec("cnn", {"model": "resnet-small", "width": 0.25, "image_size": 16, "epochs": 1,
                           "batch_size": 16, "val_fraction": 0.0, "aux_targets": "gender:2,age:9"},
                   conditions={"composition": "balanced"})
    rec = run_one(task, spec, RunOptions(save=False, progress=False, device="cpu"), splits=(train, test))
    assert set(rec.metrics["aux"]) == {"gender", "age"} and rec.metrics["aux"]["age"]["n"] == 28
    assert rec.composition["total"] == 18  # floor(8 / 0.4393)
    assert rec.info["aux_classes"]["gender"] == ["Male", "Female"]
    assert set(rec.metrics["groups"]) == {"race", "race*gender"}
