"""From records to tables (cvbench.aggregate and the pages that format it): class names in
the task's order, the default cell in the overview, pooling that respects test sets,
headlines chosen on validation, rank intervals, runtimes that mean one thing, results.csv,
what a headline trained and tested on, re-running a record, and pages that show what they
promise. Each test fails on the aggregation the leaderboard had before (issue 23)."""

from __future__ import annotations

import csv
import json
import textwrap

import numpy as np
import pytest

from cvbench import cli
from cvbench import report as report_module
from cvbench.aggregate import (
    choose,
    group_configs,
    headlines,
    pooled_samples,
    superseded,
    task_table,
)
from cvbench.leaderboard import render_all, render_index, render_task
from cvbench.metrics import evaluate, holm, mcnemar_p
from cvbench.plan import RunOptions
from cvbench.report import Page
from cvbench.results import RunRecord, append_record, load_records
from cvbench.run import run_suite
from cvbench.tasks import get_task


def _record(key: str, task: str, y_true, y_pred, classes, seed: int = 0, label: str = "m",
            method: str = "m", family: str = "classical", params=None, conditions=None, ids=None,
            info=None, timings=None, groups=None, **kw) -> RunRecord:
    """A record whose metrics are computed from its per-item predictions, as a run's are."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = np.eye(len(classes))[y_pred]
    metrics = evaluate(y_true, scores, classes, metrics=get_task(task).metrics if task == "retinopathy" else (),
                       groups=groups or {}, seed=seed)
    counts = {c: int((y_true == i).sum()) for i, c in enumerate(classes)}
    data = {"variant": "v", "train": {"n": 10}, "test": {"n": len(y_true), "fingerprint": "t",
                                                          "class_counts": dict(sorted(counts.items()))}}
    pred = {"ids": ids if ids is not None else [f"i{j}" for j in range(len(y_true))],
            "y_true": y_true.tolist(), "y_pred": y_pred.tolist(), "scores": scores.tolist()}
    if groups:
        pred["groups"] = {k: [str(x) for x in v] for k, v in groups.items()}
    return RunRecord(key=key, task=task, method=method, family=family, params=params or {}, seed=seed,
                     label=label, data=data, metrics=metrics, predictions=pred,
                     timings=timings or {"fit_s": 1.0, "predict_s": 0.0}, info=info or {},
                     conditions=conditions or {}, **kw)


# ---------------------------------------------------------------- 1. class names


def test_class_names_follow_the_tasks_order_in_tables_and_figures(tmp_path, monkeypatch):
    """retinopathy's grades are not in alphabetical order; the record stores class_counts with
    sorted keys (as every record did); the per-class table and the confusion figure must still
    name grade 0 "No DR"."""
    task = get_task("retinopathy")
    classes = task.classes
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    y[:80] = 0
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, 5, 200))
    pred[y == 0] = 0  # every No DR image predicted No DR: its recall is 1
    rec = _record("r1", "retinopathy", y, pred, classes)
    assert list(rec.data["test"]["class_counts"]) != list(classes)  # alphabetical, as stored
    seen = {}
    real = report_module.confusion_png

    def spy(cm, names, path, title):
        seen["cm"], seen["names"] = np.asarray(cm), list(names)
        real(cm, names, path, title)

    monkeypatch.setattr(report_module, "confusion_png", spy)
    page = Page(task, [rec], [], tmp_path)
    report_module.section_confusion(page)
    assert seen["names"] == list(classes)
    for i in range(5):  # row i of the figure is the items whose truth is class i
        assert seen["cm"][i].sum() == int((y == i).sum())
    table = report_module.section_per_class(page)
    row = table.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    names = [c.strip() for c in table.strip().splitlines()[-3].strip("|").split("|")]
    for i, name in enumerate(classes):
        recall = float(np.mean(pred[y == i] == i))
        assert float(cells[names.index(name)]) == pytest.approx(recall, abs=1e-3), name
    assert float(cells[names.index("No DR")]) == 1.0


def test_fairface_paired_tables_name_each_race_by_its_own_items(tmp_path):
    from cvbench.compare import paired_quantities

    task = get_task("fairface")
    classes = task.classes
    y = np.repeat(np.arange(7), 20)
    good = np.where(y == 0, 0, (y + 1) % 7)  # only White (class 0) right
    recs = [_record(f"f{c}", "fairface", y, good, classes, label="x", conditions={"composition": c})
            for c in ("biased", "balanced")]
    page = Page(task, recs, [], tmp_path)
    quantities = {name: val for name, val, _ in paired_quantities(page, recs)}
    assert quantities["accuracy: White"][0] == 1.0
    assert quantities["accuracy: Black"][0] == 0.0


# ---------------------------------------------------------------- 2. like with like


def _hotel_records(n_seeds: int = 2):
    classes = tuple(f"h{k}" for k in range(4))
    recs = []
    cells = {("none", "none"): 0.3, ("none", "masks"): 0.6, ("masks", "masks"): 0.9, ("masks", "none"): 0.5}
    for seed in range(n_seeds):
        y = np.arange(20) % 4
        for (tr, te), acc in cells.items():
            p = np.where(np.arange(20) < acc * 20, y, (y + 1) % 4)
            recs.append(_record(f"h{tr}{te}{seed}", "hotelid", y, p, classes, seed=seed, label="cnn x occ",
                                method="cnn", family="deep",
                                conditions={"train_occlusion": tr, "test_occlusion": te},
                                ids=[f"s{seed}/{j}" for j in range(20)]))
    return recs


def test_the_overview_shows_the_default_cell_and_names_it():
    task = get_task("hotelid")
    index = render_index([task], {"hotelid": _hotel_records()})
    row = next(line for line in index.splitlines() if line.startswith("| [hotelid]"))
    assert "test_occlusion=none, train_occlusion=none" in row
    assert "0.30" in row and "0.90" not in row  # clean/clean, not the best cell


# ---------------------------------------------------------------- 3. pooling


def test_seeds_with_different_test_sets_are_resampled_each_within_its_own():
    """Two hold-out splits whose labels coincide: pairing by position would cancel their
    errors (each is right where the other is wrong) and give a zero-width interval."""
    classes = ("a", "b")
    y = np.arange(40) % 2
    right_first = np.where(np.arange(40) < 20, y, 1 - y)
    right_last = np.where(np.arange(40) >= 20, y, 1 - y)
    a = _record("a", "hotelid", y, right_first, classes, seed=0, ids=[f"split0/{j}" for j in range(40)])
    b = _record("b", "hotelid", y, right_last, classes, seed=1, ids=[f"split1/{j}" for j in range(40)])
    samples = pooled_samples([a, b], "accuracy", classes, None)
    lo, hi = np.quantile(samples, [0.025, 0.975])
    assert hi - lo > 0.1 and lo < 0.5 < hi
    same_set = [a, _record("c", "hotelid", y, right_last, classes, seed=1, ids=a.item_ids())]
    lo2, hi2 = np.quantile(pooled_samples(same_set, "accuracy", classes, None), [0.025, 0.975])
    assert hi2 - lo2 == 0  # on one test set the two seeds pair item by item


def test_qwk_resamples_whole_patients(tmp_path):
    task = get_task("retinopathy")
    y = np.repeat(np.arange(5), 8)
    p = y.copy()
    p[::3] = 0
    patients = np.repeat(np.arange(20), 2)
    recs = [_record(f"q{s}", "retinopathy", y, p, task.classes, seed=s, groups={"patient": patients})
            for s in (0, 1)]
    (config,) = group_configs(task, recs)
    lo, hi = config.interval("qwk")
    assert lo < config.mean("qwk") < hi


# ---------------------------------------------------------------- 4. chosen on validation


def test_a_label_and_a_family_are_chosen_by_validation_not_test():
    task = get_task("demo")
    classes = task.classes
    y = np.arange(100) % 10

    def rec(key, n_right, val, label, params):
        p = np.where(np.arange(100) < n_right, y, (y + 1) % 10)
        return _record(key, "demo", y, p, classes, label=label, params=params,
                       info={"selection": {"metric": "accuracy", "score": val, "carve": "20% of train"}})

    recs = [rec("x1", 80, 0.6, "A", {"k": 1}), rec("x2", 70, 0.7, "A", {"k": 3}),  # test prefers k=1
            rec("y1", 90, 0.5, "B", {"C": 1})]
    table = task_table(task, recs)
    row_a = next(r for r in table.rows if r.label == "A")
    assert row_a.params["k"] == 3 and row_a.selection == "validation" and not row_a.test_selected
    ((head, n, how),) = table.headlines
    assert head.label == "A" and how == "validation" and n == 2  # B has the better test score
    index = render_index([task], {"demo": recs})
    assert not any("†" in line for line in index.splitlines() if line.startswith("| [demo]"))
    assert "chosen on the test split" not in index  # no mark, so no note about it


def test_without_validation_scores_a_choice_is_marked_as_made_on_test():
    task = get_task("demo")
    y = np.arange(50) % 10
    recs = [_record(f"k{k}", "demo", y, np.where(np.arange(50) < 10 * k, y, (y + 1) % 10), task.classes,
                    label="A", params={"k": k}) for k in (1, 3)]
    config, how, n = choose(group_configs(task, recs))
    assert how == "test" and n == 2 and config.params["k"] == 3


def test_test_runs_of_points_a_later_validation_selection_turned_down_are_not_shown(tmp_path):
    """scene15's records kept test-split runs of every step × k point from before the block
    chose on validation; re-run with select = "validation", only the chosen point is new. The
    old points made the headline a best-of-test again (0.654 † over 20, not the chosen
    0.626). Superseded records are left out of every table, and counted on the page."""
    task = get_task("demo")
    y = np.arange(100) % 10

    def pred(n_right):
        return np.where(np.arange(100) < n_right, y, (y + 1) % 10)

    old = [_record(f"old{k}", "demo", y, pred(60 + 5 * k), task.classes, label="A", params={"k": k, "size": 8},
                   started=f"2026-12-01T10:0{k}:00+00:00") for k in (1, 3, 5)]
    points = [{"params": {"k": k}, "mean": m, "scores": {"0": m}} for k, m in ((1, 0.5), (3, 0.7), (5, 0.6))]
    chosen = _record("new3", "demo", y, pred(70), task.classes, label="A", params={"k": 3, "size": 8},
                     started="2026-12-06T08:00:00+00:00",
                     info={"selection": {"metric": "accuracy", "score": 0.7, "carve": "20% of train",
                                         "points": points}})
    other = _record("b", "demo", y, pred(90), task.classes, label="B", params={"k": 5, "size": 8},
                    started="2026-12-01T10:00:00+00:00")  # another label's point: not a candidate
    later = _record("old9", "demo", y, pred(99), task.classes, label="A", params={"k": 9, "size": 8},
                    started="2026-12-01T10:09:00+00:00")  # not among the selection's points
    recs = old + [chosen, other, later]
    current, superseded_ = superseded(recs)
    assert {r.key for r in superseded_} == {"old1", "old5"}  # old3 is the chosen config's own
    assert {r.key for r in current} == {"old3", "new3", "b", "old9"}
    page = render_task(task, recs, tmp_path)
    assert "Not shown: 2 older test-split record(s)" in page and "(A)" in page
    assert "0.8500" not in page  # old5's test score (85 of 100) appears nowhere
    index = render_index([task], {"demo": current})
    assert "0.8500" not in index
    assert superseded(old) == (old, [])  # without a selection nothing is superseded


def test_records_check_counts_the_records_a_selection_set_aside(tmp_path, capsys):
    task = get_task("demo")
    y = np.arange(20) % 10
    points = [{"params": {"k": k}, "mean": 0.5, "scores": {"0": 0.5}} for k in (1, 3)]
    old = _record("old1", "demo", y, y, task.classes, label="A", params={"k": 1},
                  started="2026-12-01T10:00:00+00:00")
    new = _record("new3", "demo", y, y, task.classes, label="A", params={"k": 3},
                  started="2026-12-06T10:00:00+00:00",
                  info={"selection": {"metric": "accuracy", "score": 0.5, "points": points}})
    for r in (old, new):
        append_record(r, tmp_path)
    assert cli.main(["records", "check", "--leaderboard", str(tmp_path)]) == 0
    assert "demo: 2 valid record(s), 1 of them set aside" in capsys.readouterr().out


def test_the_confusion_figure_is_the_rows_first_seed_never_the_best_run(tmp_path, monkeypatch):
    task = get_task("demo")
    y = np.arange(100) % 10
    worse = _record("s0", "demo", y, np.where(np.arange(100) < 50, y, (y + 1) % 10), task.classes, seed=0)
    better = _record("s1", "demo", y, y, task.classes, seed=1)
    seen = []
    monkeypatch.setattr(report_module, "confusion_png", lambda cm, names, path, title: seen.append((cm, title)))
    text = report_module.section_confusion(Page(task, [better, worse], [], tmp_path))
    (cm, title), = seen
    assert np.trace(np.asarray(cm)) == 50 and "seed 0" in title and "seed 0 of 2 seeds" in text


def test_select_validation_runs_only_the_chosen_point_on_test(tmp_path, monkeypatch):
    monkeypatch.setenv("CVBENCH_LEADERBOARD", str(tmp_path / "lb"))
    suite = tmp_path / "demo.toml"
    suite.write_text(textwrap.dedent('''\
        task = "demo"
        [[run]]
        method = "tiny-knn"
        label = "k on validation"
        params = { size = 8, k = [1, 15, 60] }
        seeds = [0, 1]
        select = "validation"
        '''))
    options = RunOptions(device="cpu", progress=False)
    run_suite("demo", options, path=suite, log=lambda m: None)
    recs = load_records("demo")
    assert len(recs) == 2 and {r.seed for r in recs} == {0, 1}  # one point, both seeds
    sel = recs[0].info["selection"]
    assert len(sel["points"]) == 3 and {p["params"]["k"] for p in sel["points"]} == {1, 15, 60}
    best = max(sel["points"], key=lambda p: p["mean"])
    assert recs[0].params["k"] == best["params"]["k"] == recs[1].params["k"]
    assert all(set(p["scores"]) == {"0", "1"} for p in sel["points"])
    listed = []  # resume: the stored selection is reused, nothing is fitted again
    report = run_suite("demo", options, path=suite, log=listed.append, dry_run=True)
    assert report.resumed == 2 and not any("choosing" in m for m in listed)
    assert "demo: 2 run(s) after the validation selections (4 of points not chosen" in "\n".join(listed)


# ---------------------------------------------------------------- 5. runtimes


def test_a_row_shows_its_own_runtime_cold_and_says_mean_of_n(tmp_path):
    task = get_task("demo")
    y = np.arange(20) % 10

    def rec(key, seed, seconds, hits, label="A", k=1):
        cache = {"fit": {"descriptors": {"hits": 1 if hits else 0, "misses": 0 if hits else 1}}, "predict": {}}
        return _record(key, "demo", y, y, task.classes, seed=seed, label=label, params={"k": k},
                       timings={"fit_s": seconds, "predict_s": 0.0}, info={"cache": cache})

    recs = [rec("a0", 0, 60.0, False), rec("a1", 1, 0.5, True), rec("a2", 2, 0.7, True),
            rec("b0", 0, 0.2, True, label="B", k=8)]  # B re-used A's features: warm, its own time
    table = task_table(task, recs)
    a = next(r for r in table.rows if r.label == "A")
    b = next(r for r in table.rows if r.label == "B")
    assert a.runtime().seconds == 60.0 and a.runtime().kind == "cold" and a.runtime().n == 1
    assert b.runtime().seconds == pytest.approx(0.2) and b.runtime().kind == "warm"
    assert "warm: descriptors cached" in report_module.fmt_runtime(b)
    warm_only = task_table(task, recs[1:3]).rows[0]
    assert "mean of 2" in report_module.fmt_runtime(warm_only)


def test_the_runner_records_which_stages_a_cache_served(tmp_path):
    from cvbench.baselines import knn, tiny
    from cvbench.plan import RunSpec
    from cvbench.run import run_one

    tiny._mem_cache.clear()  # this process may hold the demo's thumbnails from another test
    knn.NEIGHBOUR_CACHE.clear()
    first = run_one("demo", RunSpec("tiny-knn", params={"size": 8}), RunOptions(save=False, progress=False))
    again = run_one("demo", RunSpec("tiny-knn", params={"size": 8, "k": 3}), RunOptions(save=False, progress=False))
    assert first.cache_hits == () and "tiny images" in again.cache_hits  # a fresh cache per test
    assert "info" in first.to_json() and isinstance(first.info["cache"]["fit"], dict)


def test_a_cold_bag_of_words_run_is_cold_although_it_reads_back_its_own_store():
    """The fit writes the descriptor store while sampling the vocabulary and reads it to encode:
    that is not a cache hit. A second run (another k) finds vocabulary and histograms cached."""
    from cvbench.plan import RunSpec
    from cvbench.run import run_one

    opts = RunOptions(save=False, progress=False)
    params = {"vocab_size": 8, "step": 4, "k": 1}
    first = run_one("demo", RunSpec("bow-sift", params=params), opts)
    again = run_one("demo", RunSpec("bow-sift", params={**params, "k": 3}), opts)
    assert first.cache_hits == (), first.info["cache"]
    assert first.info["cache"]["fit"]["descriptors"]["misses"] > 0
    assert {"vocabulary", "bag-of-words histograms"} <= set(again.cache_hits), again.info["cache"]


# ---------------------------------------------------------------- 6. rank groups


def test_identical_methods_share_a_rank_and_a_clearly_worse_one_does_not():
    task = get_task("demo")
    rng = np.random.default_rng(1)
    y = np.arange(400) % 10
    good = np.where(rng.random(400) < 0.9, y, (y + 1) % 10)
    bad = np.where(rng.random(400) < 0.5, y, (y + 1) % 10)
    recs = [_record("g1", "demo", y, good, task.classes, label="good"),
            _record("g2", "demo", y, good, task.classes, label="good copy"),
            _record("b", "demo", y, bad, task.classes, label="bad")]
    table = task_table(task, recs)
    ranks = {r.label: r.rank for r in table.rows}
    assert ranks["good"] == ranks["good copy"] == (1, 2)
    assert ranks["bad"] == (3, 3) and "McNemar" in table.ranked


def test_mcnemar_and_holm():
    a = np.array([1, 1, 1, 1, 0, 0], bool)
    assert mcnemar_p(a, a) == 1.0
    assert mcnemar_p(np.ones(30, bool), np.zeros(30, bool)) < 1e-6
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


# ---------------------------------------------------------------- 7. results.csv


def test_results_csv_has_a_row_per_configuration_and_every_record(tmp_path):
    suite = tmp_path / "demo.toml"
    suite.write_text(textwrap.dedent('''\
        task = "demo"
        [[run]]
        method = "tiny-knn"
        label = "k sweep"
        params = { size = 8, k = [1, 5] }
        seeds = [0, 1]
        [[run]]
        method = "majority-class"
        '''))
    run_suite("demo", RunOptions(device="cpu", progress=False), path=suite, log=lambda m: None)
    index = render_all(tasks=[get_task("demo")])
    rows = list(csv.DictReader(open(index.parent / "results.csv")))
    recs = {r.key: r for r in load_records("demo")}
    keys = [k for row in rows for k in row["record_keys"].split()]
    assert sorted(keys) == sorted(recs) and len(rows) == 3  # two k configurations + the floor
    for row in rows:
        mine = [recs[k] for k in row["record_keys"].split()]
        assert float(row["mean"]) == pytest.approx(np.mean([r.metrics["accuracy"] for r in mine]), abs=1e-6)
        assert json.loads(row["params"]) == {k: v for k, v in mine[0].params.items()
                                             if k not in ("device", "n_jobs", "seed", "resume", "joblib_backend")}
        assert row["test_n"] == "599" and row["commits"] and row["selection"] in ("test", "not shown", "single")
    shown = [r for r in rows if r["label"] == "k sweep" and r["selection"] == "test"]
    assert len(shown) == 1 and shown[0]["rank_low"]


# ---------------------------------------------------------------- 8. what a headline trained on


def test_the_overview_says_what_each_headline_trained_and_tested_on():
    task = get_task("retinopathy")
    y = np.array([0] * 30 + [1] * 10 + [2] * 10)
    p = y.copy()
    p[:5] = 1
    rec = _record("r", "retinopathy", y, p, task.classes, groups={"patient": np.arange(50) // 2})
    index = render_index([task], {"retinopathy": [rec]})
    row = next(line for line in index.splitlines() if line.startswith("| [retinopathy]"))
    assert "qwk_eyepacs" in row and "test mix 60.0% grade 0, EyePACS 73.5%" in row
    fair = get_task("fairface")
    yf = np.arange(70) % 7
    comp = _record("c", "fairface", yf, yf, fair.classes, conditions={"composition": "balanced"})
    comp.data["train_used"] = {"n": 2276, "composition": {"total": 2276}}
    row = next(line for line in render_index([fair], {"fairface": [comp]}).splitlines() if line.startswith("| [fairface]"))
    assert "2276 (composition=balanced)" in row


# ---------------------------------------------------------------- 9. re-running a record


def test_rerun_reruns_a_record_by_its_key_and_compares(tmp_path, capsys):
    board = tmp_path / "lb"
    assert cli.main(["run", "demo", "tiny-knn", "--set", "size=8", "--leaderboard", str(board), "--no-progress"]) == 0
    (rec,) = load_records("demo", board)
    assert rec.command[:3] == ["cvbench", "run", "demo"]
    capsys.readouterr()
    assert cli.main(["rerun", rec.key[:10], "--leaderboard", str(board), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"re-running {rec.key}" in out and "the same" in out and "recorded at commit" in out
    assert cli.main(["rerun", "ffffffffff", "--leaderboard", str(board)]) == 2


# ---------------------------------------------------------------- 10. pages keep their promises


def test_the_hotelid_page_gives_the_p_values_it_promises_and_the_chance_level(tmp_path):
    task = get_task("hotelid")
    text = render_task(task, _hotel_records(), tmp_path)
    promised = text.count("p for no difference")
    assert promised and text.count("p = ") >= promised
    assert "1/4 = 25.0%" in text and "40 queries in all" in text


def test_headlines_come_from_the_default_cell_in_order_of_preference():
    task = get_task("fairface")
    y = np.arange(70) % 7
    whole = _record("w", "fairface", y, y, task.classes, label="deep all", family="deep")
    comp = _record("b", "fairface", y, y, task.classes, label="deep bal", family="deep",
                   conditions={"composition": "balanced"})
    table = task_table(task, [whole, comp])
    ((row, n, how),) = headlines(table.rows, table.default_cell)
    assert row.label == "deep all" and how == "single"


def test_a_collapse_to_one_class_under_a_corruption_is_named(tmp_path):
    """demo's Small ResNet predicted "8" for all 599 contrast:3 images (0.097): the robustness
    table says so, rather than leaving it to read as a graded loss."""
    task = get_task("demo")
    y = np.arange(100) % 10
    clean = _record("c", "demo", y, y, task.classes, label="net")
    flat = _record("f", "demo", y, np.full(100, 8), task.classes, label="net",
                   conditions={"corruption": "contrast:3"})
    noisy = _record("n", "demo", y, np.where(np.arange(100) < 90, y, (y + 1) % 10), task.classes,
                    label="net", conditions={"corruption": "jpeg:3"})
    text = report_module.section_robustness(Page(task, [clean, flat, noisy], [], tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| net |"))
    assert '¹ all "8"' in row and row.count("¹") == 1  # jpeg:3 is a graded loss, not flagged
    assert "predicted one class for every test image" in text
