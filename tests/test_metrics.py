"""cvbench.metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from cvbench import metrics as M


@pytest.fixture
def random_run():
    rng = np.random.default_rng(3)
    n, c = 400, 6
    y_true = rng.integers(0, c, n)
    scores = rng.normal(size=(n, c))
    scores[np.arange(n), y_true] += 1.0  # better than chance
    return y_true, scores, scores.argmax(1)


def test_basic_rates_match_sklearn(random_run):
    y, _, p = random_run
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    assert M.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert M.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))


def test_confusion_counts_and_normalised_rows():
    y = [0, 0, 1, 1, 1, 0]
    p = [0, 1, 1, 1, 0, 0]
    cm = M.confusion(y, p, n_classes=3)
    assert cm.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    norm = M.confusion(y, p, n_classes=3, normalize="true")
    np.testing.assert_allclose(norm, [[2 / 3, 1 / 3, 0], [1 / 3, 2 / 3, 0], [0, 0, 0]])
    assert not np.isnan(norm).any()
    with pytest.raises(ValueError, match="normalize"):
        M.confusion(y, p, 3, normalize="all")


def test_per_class_report_hand_computed():
    # class 0: TP=2 FP=1 FN=1 TN=2 ; class 1: TP=2 FP=1 FN=1 TN=2 ; class 2 never seen
    y = [0, 0, 1, 1, 1, 0]
    p = [0, 1, 1, 1, 0, 0]
    r = M.per_class_report(y, p, n_classes=3)
    np.testing.assert_allclose(r["precision"], [2 / 3, 2 / 3, 0])
    np.testing.assert_allclose(r["recall"], [2 / 3, 2 / 3, 0])
    np.testing.assert_allclose(r["specificity"], [2 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(r["f1"], [2 / 3, 2 / 3, 0])
    np.testing.assert_allclose(r["ovr_accuracy"], [4 / 6, 4 / 6, 1.0])
    assert r["support"].tolist() == [3, 3, 0]


def test_per_class_report_matches_sklearn(random_run):
    y, _, p = random_run
    r = M.per_class_report(y, p, 6)
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, p, labels=range(6), zero_division=0)
    np.testing.assert_allclose(r["precision"], prec)
    np.testing.assert_allclose(r["recall"], rec)
    np.testing.assert_allclose(r["f1"], f1)
    assert r["support"].tolist() == sup.tolist()
    for c in range(6):  # specificity = recall of the "not c" class
        assert r["specificity"][c] == pytest.approx(skm.recall_score(y != c, p != c))
        assert r["ovr_accuracy"][c] == pytest.approx(skm.accuracy_score(y == c, p == c))


@pytest.mark.filterwarnings("ignore:.*greater than or equal to:UserWarning")
@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_top_k_matches_sklearn(random_run, k):
    y, s, p = random_run
    assert M.top_k_accuracy(y, s, k) == pytest.approx(
        skm.top_k_accuracy_score(y, s, k=k, labels=range(6))
    )
    if k == 1:
        assert M.top_k_accuracy(y, s, 1) == M.accuracy(y, p)


def test_top_k_ties_go_to_lower_index_like_argmax():
    scores = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 2.0]])
    # row 0: rank of class 2 is 3; row 1: class 2 ties with class 1 -> rank 2
    assert M.top_k_accuracy([2, 2], scores, 1) == 0.0
    assert M.top_k_accuracy([2, 2], scores, 2) == 0.5
    assert M.top_k_accuracy([0, 1], scores, 1) == M.accuracy([0, 1], scores.argmax(1)) == 1.0


def test_map_at_5_hand_computed():
    # true class ranks: 1, 2, 3, 6 (outside top 5) -> (1 + 1/2 + 1/3 + 0) / 4
    scores = np.array(
        [
            [9, 1, 2, 3, 4, 5],
            [5, 9, 1, 2, 3, 4],
            [5, 6, 9, 1, 2, 3],
            [0, 1, 2, 3, 4, 5],
        ],
        dtype=float,
    )
    y = [0, 0, 0, 0]
    assert M.map_at_k(y, scores, 5) == pytest.approx((1 + 1 / 2 + 1 / 3) / 4)
    assert M.map_at_k(y, scores, 1) == pytest.approx(1 / 4)
    assert M.top_k_accuracy(y, scores, 5) == 0.75


def test_qwk_matches_sklearn_and_constant_predictor(random_run):
    y, _, p = random_run
    assert M.quadratic_weighted_kappa(y, p) == pytest.approx(
        skm.cohen_kappa_score(y, p, weights="quadratic")
    )
    assert M.quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert M.quadratic_weighted_kappa([0, 1, 2, 3], [0, 0, 0, 0]) == pytest.approx(0.0)
    assert M.quadratic_weighted_kappa([0, 0, 0], [0, 0, 0], n_classes=5) == 0.0  # 0/0 -> 0
    assert M.quadratic_weighted_kappa([], []) == 0.0


def test_referable_dr():
    from cvbench.tasks.retinopathy.protocol import referable_dr

    y = np.array([0, 1, 2, 3, 4, 0, 2])
    p = np.array([0, 2, 2, 1, 4, 0, 0])
    r = referable_dr(y, p)
    # positives (>=2): idx 2,3,4,6 -> predicted >=2 at 2,4 -> sens 2/4; negatives 0,1,5 -> 2/3
    assert r == {"sensitivity": pytest.approx(0.5), "specificity": pytest.approx(2 / 3)}
    assert referable_dr([0, 0], [0, 3]) == {"sensitivity": 0.0, "specificity": 0.5}


def test_group_accuracy_and_disparity():
    y = np.array([0, 1, 1, 0, 1, 0])
    p = np.array([0, 1, 0, 0, 0, 1])
    g = np.array(["a", "a", "b", "b", "c", "c"], dtype=object)
    ga = M.group_accuracy(y, p, g)
    assert ga == {
        "a": {"accuracy": 1.0, "n": 2},
        "b": {"accuracy": 0.5, "n": 2},
        "c": {"accuracy": 0.0, "n": 2},
    }
    s = M.disparity_summary(ga)
    assert s["max"] == 1.0 and s["min"] == 0.0 and s["gap"] == 1.0 and s["ratio"] == 0.0
    assert s["mean"] == pytest.approx(0.5)
    assert s["std"] == pytest.approx(np.std([1.0, 0.5, 0.0]))  # population std
    s2 = M.disparity_summary([0.8, 0.6])
    assert s2["ratio"] == pytest.approx(0.75) and s2["gap"] == pytest.approx(0.2)
    assert M.disparity_summary([])["gap"] == 0.0


def test_bootstrap_ci_is_seeded_and_agrees_with_index_resampling():
    rng = np.random.default_rng(0)
    correct = rng.random(500) < 0.7
    lo, hi = M.bootstrap_ci(correct, n_boot=4000, seed=1)
    assert (lo, hi) == M.bootstrap_ci(correct, n_boot=4000, seed=1)
    assert lo < correct.mean() < hi
    idx = rng.integers(0, 500, size=(4000, 500))  # the textbook percentile bootstrap
    ref_lo, ref_hi = np.quantile(correct[idx].mean(1), [0.025, 0.975])
    assert lo == pytest.approx(ref_lo, abs=0.01) and hi == pytest.approx(ref_hi, abs=0.01)
    assert M.bootstrap_ci(np.ones(50, bool)) == (1.0, 1.0)
    assert M.bootstrap_ci([]) == (0.0, 0.0)


def test_paired_bootstrap_diff():
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.8
    same = M.paired_bootstrap_diff(a, a.copy(), n_boot=500, seed=0)
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p_value": 1.0}
    b = a.copy()
    b[np.flatnonzero(a)[:100]] = False  # b loses 100 items a got right
    d = M.paired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    assert d["diff"] == pytest.approx(0.1)
    assert 0 < d["lo"] < 0.1 < d["hi"]
    assert d["p_value"] < 0.01
    # textbook paired bootstrap: resample item indices, both runs together
    idx = rng.integers(0, 1000, size=(2000, 1000))
    ref = np.quantile(a[idx].mean(1) - b[idx].mean(1), [0.025, 0.975])
    assert d["lo"] == pytest.approx(ref[0], abs=0.006) and d["hi"] == pytest.approx(ref[1], abs=0.006)
    with pytest.raises(ValueError, match="same items"):
        M.paired_bootstrap_diff(a, b[:-1])


def test_unpaired_bootstrap_diff():
    rng = np.random.default_rng(0)
    a, b = rng.random(800) < 0.75, rng.random(600) < 0.75
    d = M.unpaired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    assert d["diff"] == pytest.approx(a.mean() - b.mean())
    assert d["lo"] < d["diff"] < d["hi"] and d["p_value"] > 0.05
    worse = rng.random(600) < 0.5
    assert M.unpaired_bootstrap_diff(a, worse, n_boot=2000, seed=0)["p_value"] < 0.01


def test_evaluate_record_is_json_ready(random_run):
    import cvbench.tasks.retinopathy.protocol  # noqa: F401  (registers referable, mean_ovr_accuracy)

    y, s, p = random_run
    classes = [f"c{i}" for i in range(6)]
    g = {"race": np.array(["x", "y"] * 200), "gender": np.array(["m"] * 200 + ["f"] * 200)}
    out = M.evaluate(y, s, classes, metrics=("topk", "qwk", "map5", "referable", "mean_ovr_accuracy",
                                            "groups:race", "groups:race*gender"), groups=g, seed=0)
    text = json.dumps(out, allow_nan=False)  # plain floats/ints/lists only
    assert json.loads(text) == out
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert out["top1_accuracy"] == out["accuracy"]
    assert out["confusion"] == skm.confusion_matrix(y, p).tolist()
    assert set(out["per_class"]) == set(classes)
    assert out["per_class"]["c2"]["support"] == int(np.sum(y == 2))
    assert out["mean_ovr_accuracy"] == pytest.approx(
        np.mean([skm.accuracy_score(y == c, p == c) for c in range(6)])
    )
    lo, hi = out["accuracy_ci"]
    assert lo < out["accuracy"] < hi
    assert set(out["groups"]) == {"race", "race*gender"}
    assert set(out["groups"]["race*gender"]["per_group"]) == {"x / m", "y / m", "x / f", "y / f"}
    assert out["groups"]["race"]["per_group"]["x"]["n"] == 200
    assert out["groups"]["race"]["summary"]["gap"] >= 0
    assert set(out["referable"]) == {"sensitivity", "specificity"}
    for name in ("qwk", "map5"):  # primary metrics carry their own bootstrap interval
        lo, hi = out[f"{name}_ci"]
        assert lo <= out[name] <= hi and hi - lo > 0


def test_evaluate_rejects_bad_input(random_run):
    y, s, _ = random_run
    classes = [f"c{i}" for i in range(6)]
    with pytest.raises(ValueError, match="unknown metric 'top5'"):
        M.evaluate(y, s, classes, metrics=("top5",))
    with pytest.raises(ValueError, match="groups:race.*available"):
        M.evaluate(y, s, classes, metrics=("groups:race",))
    with pytest.raises(ValueError, match="shape"):
        M.evaluate(y, s[:, :5], classes)


def test_evaluate_empty_and_single_class():
    out = M.evaluate([], np.zeros((0, 3)), ["a", "b", "c"], metrics=("topk", "qwk", "map5"))
    json.dumps(out, allow_nan=False)
    assert out["accuracy"] == 0.0 and out["accuracy_ci"] == [0.0, 0.0] and out["qwk"] == 0.0
    assert out["confusion"] == [[0] * 3] * 3
    one = M.evaluate([0, 0, 0], np.array([[1.0], [1.0], [1.0]]), ["only"], metrics=("qwk",))
    json.dumps(one, allow_nan=False)
    assert one["accuracy"] == 1.0 and one["qwk"] == 0.0
    assert one["per_class"]["only"]["specificity"] == 0.0  # no negatives: 0/0 -> 0
