"""Classifiers on feature matrices: kernels, kernel maps, fit/predict on separable toy sets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.kernel_approximation import AdditiveChi2Sampler

from cvbench.baselines.classifiers import (
    CLASSIFIERS,
    chi2_kernel,
    homogeneous_kernel_map,
    intersection_kernel,
    make_classifier,
)
from cvbench.errors import UserError


def toy_histograms(n_per_class=15, n_classes=3, dim=12, seed=0):
    """Separable non-negative L1-normalised histograms: class c puts its mass on bins 4c..4c+3."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(n_classes):
        h = rng.random((n_per_class, dim)) * 0.2
        h[:, 4 * c : 4 * c + 4] += 1.0
        X.append(h / h.sum(1, keepdims=True))
        y += [c] * n_per_class
    return np.concatenate(X), np.array(y)


def test_chi2_and_intersection_kernels_match_definitions():
    rng = np.random.default_rng(1)
    A, B = rng.random((5, 4)), rng.random((3, 4))
    A[0, 0] = B[0, 0] = 0.0  # 0/0 = 0
    ref_chi2 = np.array([[sum(2 * x * y / (x + y) for x, y in zip(a, b) if x + y) for b in B] for a in A])
    ref_hik = np.array([[sum(min(x, y) for x, y in zip(a, b)) for b in B] for a in A])
    np.testing.assert_allclose(chi2_kernel(A, B), ref_chi2, rtol=1e-10)
    np.testing.assert_allclose(intersection_kernel(A, B, chunk_elems=5), ref_hik, rtol=1e-6)
    with pytest.raises(UserError, match="non-negative"):
        chi2_kernel(-A, B)


def test_chi2_map_equals_sklearn_sampler():
    X = np.random.default_rng(2).random((20, 6))
    X[0, :3] = 0.0
    ours = homogeneous_kernel_map(X, "chi2", order=2, step=0.5)
    skl = AdditiveChi2Sampler(sample_steps=3, sample_interval=0.5).fit_transform(X)
    np.testing.assert_allclose(ours, skl, atol=1e-6)


@pytest.mark.parametrize("kernel,fn,tol", [("chi2", chi2_kernel, 0.03), ("intersection", intersection_kernel, 0.1)])
def test_kernel_map_approximates_kernel(kernel, fn, tol):
    X, _ = toy_histograms(seed=3)
    M = homogeneous_kernel_map(X, kernel, order=2).astype(np.float64)
    K = fn(X, X)
    assert M.shape == (len(X), X.shape[1] * 5)
    assert np.abs(M @ M.T - K).max() <= tol * K.max()


CASES = [(n, "exact") for n in CLASSIFIERS] + [("chi2-svm", "map"), ("hik-svm", "map")]


@pytest.mark.parametrize("name,mode", CASES)
def test_classifiers_fit_separable_toy_set(name, mode):
    X, y = toy_histograms()
    Xt, yt = toy_histograms(seed=9)
    clf = make_classifier(name, C=10.0, seed=0, k=3, metric="l1", kernel_mode=mode).fit(X, y)
    scores = clf.decision_scores(Xt)
    assert scores.shape == (len(Xt), 3)
    np.testing.assert_array_equal(scores.argmax(1), clf.predict(Xt))
    assert (clf.predict(Xt) == yt).mean() == 1.0
    info = clf.info()
    assert info["classifier"] == name and info["n_features"] == X.shape[1]


@pytest.mark.parametrize("name", ["linear-svm", "chi2-svm", "hik-svm"])
def test_untrained_and_binary_classes_map_to_full_score_matrix(name):
    X, y = toy_histograms(n_classes=3)
    keep = y != 1  # class 1 absent from training; two classes left (binary decision values)
    clf = make_classifier(name, C=10.0).fit(X[keep], y[keep] * 1, n_classes=4)
    scores = clf.decision_scores(X)
    assert scores.shape == (len(X), 4)
    assert (scores[:, 1] < scores[:, [0, 2]].min(axis=1)).all()  # never predicted
    assert (scores[:, 3] < scores[:, [0, 2]].min(axis=1)).all()
    np.testing.assert_array_equal(clf.predict(X[keep]), y[keep])


def test_make_classifier_rejects_bad_names():
    with pytest.raises(UserError, match="unknown classifier"):
        make_classifier("random-forest")
    with pytest.raises(UserError, match="kernel_mode"):
        make_classifier("chi2-svm", kernel_mode="approx")
    X, y = toy_histograms()
    with pytest.raises(UserError, match="two classes"):
        make_classifier("linear-svm").fit(X[:5], np.zeros(5, int))


@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_svm_in_row_space_equals_linearsvc_on_raw_features(n_classes):
    """More features than samples: the SVM is solved on the rows' coordinates in their span,
    the same dual problem, so the decision values are LinearSVC's on the raw features."""
    from sklearn.svm import LinearSVC

    from cvbench.baselines.classifiers import LinearSVMClassifier

    rng = np.random.default_rng(n_classes)
    centres = rng.normal(size=(n_classes, 600))
    y = np.arange(70) % n_classes
    X = (centres[y] + rng.normal(scale=3, size=(70, 600))).astype(np.float32)
    Xt = (centres[rng.integers(0, n_classes, 30)] + rng.normal(scale=3, size=(30, 600))).astype(np.float32)
    m = LinearSVMClassifier(C=0.5, seed=3).fit(X, y)
    assert m.info()["solved_in_row_space"] and m.info()["converged"]
    ref = LinearSVC(C=0.5, random_state=3, max_iter=5000).fit(X.astype(np.float64), y)
    want = ref.decision_function(Xt.astype(np.float64))
    got = m.decision_scores(Xt)
    if n_classes == 2:
        got = got[:, 1]
    np.testing.assert_allclose(got, want, atol=1e-9)
    # fewer features than samples: LinearSVC itself, unchanged
    small = LinearSVMClassifier().fit(X[:, :20], y)
    assert not small.info()["solved_in_row_space"]
