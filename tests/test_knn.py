"""k-NN against a brute-force reference (plain Python loops), ties, weighting and the cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvbench.baselines import knn
from cvbench.baselines.knn import (
    NEIGHBOUR_CACHE,
    KNNClassifier,
    knn_scores,
    nearest_neighbours,
    pairwise_distances,
)
from cvbench.errors import UserError


def ref_distance(a, b, metric):
    if metric == "l1":
        return sum(abs(x - y) for x, y in zip(a, b))
    if metric == "l2":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    if metric == "cosine":
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        return 1.0 - sum(x * y for x, y in zip(a, b)) / (na * nb)
    if metric == "chi2":
        return 0.5 * sum((x - y) ** 2 / (x + y) for x, y in zip(a, b) if x + y != 0)
    raise AssertionError(metric)


def ref_predict(train_X, train_y, test_X, k, metric, weighted=False, eps=1e-8):
    """Brute force: sort by (distance, index); vote; ties -> class of the nearest neighbour."""
    preds = []
    for t in test_X:
        d = [(ref_distance(t, x, metric), i) for i, x in enumerate(train_X)]
        d.sort()
        nn = d[:k]
        votes = {}
        for dist, i in nn:
            votes[train_y[i]] = votes.get(train_y[i], 0.0) + (1.0 / (dist + eps) if weighted else 1.0)
        best = max(votes.values())
        tied = {c for c, v in votes.items() if math.isclose(v, best, rel_tol=1e-9)}
        for _dist, i in nn:  # nearest first
            if train_y[i] in tied:
                preds.append(train_y[i])
                break
    return np.array(preds)


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "cache"))
    NEIGHBOUR_CACHE.clear()
    yield
    NEIGHBOUR_CACHE.clear()


@pytest.mark.parametrize("metric", knn.METRICS)
def test_pairwise_distances_match_reference(metric):
    rng = np.random.default_rng(1)
    A = rng.random((7, 5))
    B = rng.random((6, 5))
    B[0] = 0.0
    A[0, :2] = 0.0  # 0/0 terms for chi2
    B[1, :2] = 0.0
    if metric == "cosine":
        B[0] = 1.0  # cosine is undefined for a zero vector
    D = pairwise_distances(A, B, metric)
    ref = np.array([[ref_distance(a, b, metric) for b in B] for a in A])
    np.testing.assert_allclose(D, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", knn.METRICS)
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("weighted", [False, True])
def test_predictions_match_brute_force(metric, k, weighted):
    rng = np.random.default_rng(k * 10 + len(metric))
    train_X = rng.random((40, 6))
    train_y = rng.integers(0, 4, size=40)
    test_X = rng.random((25, 6))
    scores = knn_scores(train_X, train_y, test_X, k=k, metric=metric, weighted=weighted, n_classes=4)
    assert scores.shape == (25, 4)
    expected = ref_predict(train_X, train_y, test_X, k, metric, weighted)
    np.testing.assert_array_equal(scores.argmax(axis=1), expected)


def test_vote_fractions_and_top_k_order():
    rng = np.random.default_rng(0)
    train_X = rng.random((50, 3))
    train_y = rng.integers(0, 5, size=50)
    test_X = rng.random((10, 3))
    k = 7
    scores = knn_scores(train_X, train_y, test_X, k=k, metric="l2", n_classes=5)
    idx, _ = nearest_neighbours(train_X, test_X, k, "l2")
    counts = np.stack([np.bincount(train_y[row], minlength=5) for row in idx])
    np.testing.assert_allclose(scores, counts / k, atol=1e-9)  # fractions (+ tiny tie bonus)
    # Ranking by score never puts a class with fewer votes above one with more.
    order = np.argsort(-scores, axis=1)
    ranked_counts = np.take_along_axis(counts, order, axis=1)
    assert (np.diff(ranked_counts, axis=1) <= 0).all()


def test_tie_goes_to_nearest_neighbours_class():
    # Integer features: distances are exact. Test point at 0.
    train_X = np.array([[3.0], [1.0], [-2.0], [4.0]])
    train_y = np.array([0, 1, 0, 1])
    test_X = np.array([[0.0]])
    # k=2: neighbours 1.0 (class 1) and -2.0 (class 0): one vote each -> class 1 (nearest).
    assert knn_scores(train_X, train_y, test_X, k=2, metric="l1").argmax() == 1
    # k=4: two votes each; nearest is class 1.
    assert knn_scores(train_X, train_y, test_X, k=4, metric="l1").argmax() == 1
    # Swap labels: the tie now goes to class 0.
    assert knn_scores(train_X, 1 - train_y, test_X, k=2, metric="l1").argmax() == 0


def test_equal_distances_are_ordered_by_train_index():
    # Two training points at exactly the same distance: the lower index counts as nearer.
    train_X = np.array([[2.0], [-2.0], [5.0]])
    test_X = np.array([[0.0]])
    idx, dist = nearest_neighbours(train_X, test_X, 2, "l1")
    assert idx.tolist() == [[0, 1]] and dist.tolist() == [[2.0, 2.0]]
    assert knn_scores(train_X, np.array([3, 1, 0]), test_X, k=2, metric="l1", n_classes=4).argmax() == 3
    assert knn_scores(train_X, np.array([1, 3, 0]), test_X, k=2, metric="l1", n_classes=4).argmax() == 1
    # Many exact ties at the k-th position (the argpartition fallback path).
    train_X = np.zeros((20, 2))
    idx, _ = nearest_neighbours(train_X, np.zeros((3, 2)), 5, "l2", cache=False)
    assert idx.tolist() == [[0, 1, 2, 3, 4]] * 3


def test_weighted_vote_can_overrule_majority():
    train_X = np.array([[0.1], [1.0], [1.1]])
    train_y = np.array([0, 1, 1])
    test_X = np.array([[0.0]])
    assert knn_scores(train_X, train_y, test_X, k=3, metric="l1").argmax() == 1  # 2 votes vs 1
    w = knn_scores(train_X, train_y, test_X, k=3, metric="l1", weighted=True)
    assert w.argmax() == 0  # 1/0.1 = 10 > 1/1 + 1/1.1
    np.testing.assert_allclose(w.sum(), 1.0, atol=1e-8)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(3)
    train_X, test_X = rng.random((30, 4)), rng.random((17, 4))
    a = nearest_neighbours(train_X, test_X, 6, "l1", cache=False)
    b = nearest_neighbours(train_X, test_X, 6, "l1", cache=False, chunk_elems=31)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])


def test_k_sweep_reuses_cached_neighbours(monkeypatch):
    rng = np.random.default_rng(4)
    train_X, train_y, test_X = rng.random((60, 8)), rng.integers(0, 3, 60), rng.random((20, 8))
    calls = []
    real = knn.pairwise_distances
    monkeypatch.setattr(knn, "pairwise_distances", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    first = [knn_scores(train_X, train_y, test_X, k=k, metric="l1") for k in range(1, 11)]
    assert len(calls) == 1  # distances computed once for the whole sweep
    NEIGHBOUR_CACHE._mem.clear()  # a new process: the disk cache answers
    again = [knn_scores(train_X, train_y, test_X, k=k, metric="l1") for k in range(1, 11)]
    assert len(calls) == 1
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    knn_scores(train_X, train_y, test_X, k=3, metric="l2")  # another metric: new distances
    assert len(calls) == 2


def test_k_larger_than_training_set_and_errors():
    X = np.array([[0.0], [1.0]])
    s = knn_scores(X, np.array([0, 1]), np.array([[0.2]]), k=10, metric="l2")
    assert s.argmax() == 0
    with pytest.raises(UserError, match="metric"):
        knn_scores(X, np.array([0, 1]), X, metric="hamming")
    with pytest.raises(UserError, match="non-negative"):
        knn_scores(-X - 1, np.array([0, 1]), X, metric="chi2")
    with pytest.raises(UserError, match="positive integer"):
        knn_scores(X, np.array([0, 1]), X, k=0)


def test_classifier_api():
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(0, 0.1, (20, 2)), rng.normal(3, 0.1, (20, 2))])
    y = np.repeat([0, 2], 20)
    clf = KNNClassifier(k=3, metric="l2").fit(X, y, n_classes=4)
    s = clf.decision_scores(X)
    assert s.shape == (40, 4)
    np.testing.assert_array_equal(clf.predict(X), y)


def test_cache_key_replaces_hashing():
    rng = np.random.default_rng(6)
    train_X, train_y, test_X = rng.random((30, 4)), rng.integers(0, 3, 30), rng.random((10, 4))
    clf = KNNClassifier(k=3, metric="l1").fit(train_X, train_y, cache_key="train-v1")
    a = clf.decision_scores(test_X, cache_key="test-v1")
    misses = NEIGHBOUR_CACHE.misses
    b = clf.decision_scores(test_X, cache_key="test-v1")
    assert NEIGHBOUR_CACHE.misses == misses  # answered from the cache
    np.testing.assert_array_equal(a, b)
    clf.decision_scores(test_X + 1, cache_key="test-v2")  # another name: computed again
    assert NEIGHBOUR_CACHE.misses == misses + 1


def test_classes_without_votes_are_ranked_by_their_nearest_neighbour():
    # 1-D points; test point at 0. Nearest per class: c2 at 1, c0 at 2, c3 at 4, c1 at 7.
    train_X = np.array([[7.0], [2.0], [1.0], [4.0], [-3.0], [9.0]])
    train_y = np.array([1, 0, 2, 3, 0, 2])
    s = knn_scores(train_X, train_y, np.array([[0.0]]), k=1, metric="l1", n_classes=5)
    assert np.argsort(-s[0]).tolist() == [2, 0, 3, 1, 4]  # class 4 has no training item
    assert s[0, 2] > 0.99 and s[0, [0, 1, 3, 4]].max() < 1e-9
