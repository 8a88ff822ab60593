"""Classifiers on feature matrices, with one API for k-NN, linear and additive-kernel SVMs.

Public API (stable; used by tiny-knn / tiny-svm and bow-sift):

    make_classifier(name, C=1.0, seed=0, *, k=1, metric="l2", weighted=False,
                    kernel_mode="exact", map_order=2, n_jobs=None, n_classes=None)
        name: "knn"        k-NN (baselines.knn.KNNClassifier; k, metric, weighted)
              "linear-svm" one-vs-rest LinearSVC (C)
              "chi2-svm"   SVM with the additive chi2 kernel  k(x, y) = sum 2 x y / (x + y)
              "hik-svm"    SVM with the histogram intersection kernel k(x, y) = sum min(x, y)
        kernel_mode (chi2/hik only):
              "exact" SVC(kernel="precomputed") on the exact kernel matrix, trained one-vs-rest
                      (one binary SVC per class on the same kernel; decision values per class)
              "map"   homogeneous kernel map (Vedaldi & Zisserman 2012; 2 * map_order + 1
                      dims per input dim) + one-vs-rest LinearSVC: linear cost, approximate kernel
    clf.fit(X, y, n_classes=None) -> clf
    clf.decision_scores(X) -> (n, n_classes) float; argmax = prediction. k-NN gives vote
        fractions; SVMs give decision values. A class absent from training gets a score below
        every other score, so it is never predicted.
    clf.predict(X) -> (n,) int labels
    The "knn" classifier's fit / decision_scores also take an optional `cache_key` string
    naming the feature matrix (e.g. split fingerprint + feature params): the neighbour cache
    then skips hashing the matrices (see baselines.knn).
    clf.info() -> JSON-able dict (name, kernel, feature dims, ...)

Helpers: chi2_kernel(A, B), intersection_kernel(A, B), homogeneous_kernel_map(X, kernel, order).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from cvbench.errors import UserError

from .knn import KNNClassifier

CLASSIFIERS = ("knn", "linear-svm", "chi2-svm", "hik-svm")
KERNEL_MODES = ("exact", "map")

# Default sampling step L of the kernel map (rectangular window), chosen by the max error of
# psi(x).psi(y) vs k(x, y) on random L1-normalised histograms at order 2: about 1.5% of the
# largest kernel value for chi2 (L = 0.5, scikit-learn's AdditiveChi2Sampler value for 2
# steps) and 8% for the intersection kernel (L = 0.9; its spectrum decays slowly).
_MAP_STEP = {"chi2": 0.5, "intersection": 0.9}


KERNEL_BLOCK_ENTRIES = 2_000_000  # kernel entries per block of rows (one step of its progress bar)


def _check_nonneg(X: np.ndarray, what: str) -> None:
    if np.any(X < 0):
        raise UserError(
            f"{what} needs non-negative features (histograms); these have negative values"
        )


def chi2_kernel(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Additive chi2 kernel sum_d 2 a_d b_d / (a_d + b_d) (0/0 = 0), via scikit-learn's Cython."""
    from sklearn.metrics.pairwise import additive_chi2_kernel

    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    _check_nonneg(A, "the chi2 kernel")
    _check_nonneg(B, "the chi2 kernel")
    # 2ab/(a+b) = (a + b - (a-b)^2/(a+b)) / 2 and additive_chi2_kernel = -sum (a-b)^2/(a+b)
    return 0.5 * (A.sum(1)[:, None] + B.sum(1)[None, :] + additive_chi2_kernel(A, B))


def intersection_kernel(A: np.ndarray, B: np.ndarray, chunk_elems: int = 8_000_000) -> np.ndarray:
    """Histogram intersection kernel sum_d min(a_d, b_d), computed in bounded-memory chunks."""
    A = np.asarray(A, dtype=np.float32)
    B = np.asarray(B, dtype=np.float32)
    _check_nonneg(A, "the intersection kernel")
    _check_nonneg(B, "the intersection kernel")
    out = np.empty((len(A), len(B)), dtype=np.float64)
    rows = max(1, chunk_elems // max(1, B.size))
    for s in range(0, len(A), rows):
        out[s : s + rows] = np.minimum(A[s : s + rows, None, :], B[None, :, :]).sum(
            axis=2, dtype=np.float64
        )
    return out


def homogeneous_kernel_map(
    X: np.ndarray, kernel: str = "chi2", order: int = 2, step: float | None = None
) -> np.ndarray:
    """Explicit feature map psi with psi(x).psi(y) ~ k(x, y) for an additive homogeneous kernel.

    Sampled spectrum kappa(w) of the kernel signature: chi2 sech(pi w); intersection
    2 / (pi (1 + 4 w^2)). Each input dim becomes 2*order+1 dims:
    sqrt(x L kappa(0)), sqrt(2 x L kappa(jL)) [cos, sin](j L log x), j = 1..order.
    For chi2 this equals scikit-learn's AdditiveChi2Sampler(sample_steps=order + 1).
    """
    X = np.asarray(X, dtype=np.float64)
    _check_nonneg(X, f"the {kernel} kernel map")
    if kernel == "chi2":
        spectrum = lambda w: 1.0 / np.cosh(np.pi * w)  # noqa: E731
    elif kernel == "intersection":
        spectrum = lambda w: 2.0 / (np.pi * (1.0 + 4.0 * w * w))  # noqa: E731
    else:
        raise UserError(f"unknown kernel {kernel!r} for the kernel map; valid: chi2, intersection")
    L = float(step if step is not None else _MAP_STEP[kernel])
    pos = X > 0
    logx = np.log(np.where(pos, X, 1.0))
    parts = [np.sqrt(X * L * spectrum(0.0))]
    for j in range(1, order + 1):
        amp = np.sqrt(2.0 * X * L * spectrum(j * L))
        parts.append(np.where(pos, amp * np.cos(j * L * logx), 0.0))
        parts.append(np.where(pos, amp * np.sin(j * L * logx), 0.0))
    # Same column order as AdditiveChi2Sampler: all dims of part 0, then part 1, ...
    return np.hstack(parts).astype(np.float32)


def _full_scores(dec: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Decision values for the trained classes -> (n, n_classes); untrained classes lowest."""
    dec = np.asarray(dec, dtype=np.float64)
    if dec.ndim == 1:  # binary problem: positive means classes[1]
        dec = np.stack([-dec, dec], axis=1)
    out = np.empty((len(dec), n_classes), dtype=np.float64)
    floor = (dec.min() if dec.size else 0.0) - 1.0
    out[:] = floor
    out[:, classes] = dec
    return out


class _Base:
    name = ""

    def _prepare(self, X: Any, y: Any, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D feature matrix, got shape {X.shape}")
        y = np.asarray(y, dtype=np.int64)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise UserError(
                f"classifier {self.name!r} needs at least two classes in training, got "
                f"{len(self.classes_)}"
            )
        self.n_classes_ = int(n_classes) if n_classes else int(self.classes_.max()) + 1
        self.n_features_in_ = X.shape[1]
        return X, y

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_scores(X).argmax(axis=1)

    def info(self) -> dict[str, Any]:
        return {"classifier": self.name, "n_features": int(getattr(self, "n_features_in_", 0))}


def _linear_svc(C: float, seed: int, max_iter: int, dual: bool | str = "auto"):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=C, random_state=seed, max_iter=max_iter, dual=dual)


def _fit_quietly(est, X, y):
    from sklearn.exceptions import ConvergenceWarning

    from cvbench import progress

    with warnings.catch_warnings(record=True) as caught, progress.stage(
            f"{type(est).__name__}: fit on {X.shape[0]} x {X.shape[1]}"):
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(X, y)
    return any(issubclass(w.category, ConvergenceWarning) for w in caught)


def _row_space_coordinates(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X', M) with X' = X V (n, r) the coordinates of the rows of X (n, d) in an orthonormal
    basis V (d, r) of their span, and M (r, n) with V = X^T M^T, i.e. w = V w' = X^T (M^T w').

    From the Gram matrix: X X^T = U diag(lam) U^T, X' = U sqrt(lam), V = X^T U / sqrt(lam),
    over the eigenvalues above 1e-12 of the largest (the rest span nothing of the data)."""
    G = X @ X.T
    lam, U = np.linalg.eigh(G)
    keep = lam > max(float(lam[-1]), 0.0) * 1e-12
    lam, U = lam[keep], U[:, keep]
    root = np.sqrt(lam)
    return U * root, (U / root).T


class LinearSVMClassifier(_Base):
    """One-vs-rest linear SVM (LinearSVC, squared hinge) on raw features.

    With more features than training samples (d > 2n, e.g. Fisher vectors: 1500 x 40960) the
    same problem is solved in the n-dimensional span of the training rows: liblinear's dual
    depends on the data only through the inner products [x_i, 1].[x_j, 1], which the row-space
    coordinates X' = X V keep, so the dual, its solution (to the solver's tolerance) and the
    primal w = V w' are the same, at n / d of liblinear's per-pass cost (tests/test_classifiers.py
    checks the decision values against LinearSVC on the raw features)."""

    name = "linear-svm"

    def __init__(self, C: float = 1.0, seed: int = 0, max_iter: int = 5000):
        self.C, self.seed, self.max_iter = C, seed, max_iter

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int | None = None):
        X, y = self._prepare(X, y, n_classes)
        X = np.asarray(X, np.float64)
        self.row_space_ = X.shape[1] > 2 * X.shape[0]
        # dual="auto" picks the dual solver on the raw features (d > n); the row-space problem
        # has d' <= n, so it is asked for by name: the same solver on the same dual
        self.model_ = _linear_svc(self.C, self.seed, self.max_iter, True if self.row_space_ else "auto")
        if self.row_space_:
            Xr, M = _row_space_coordinates(X)
            self.converged_ = not _fit_quietly(self.model_, Xr, y)
            self.coef_ = (M.T @ self.model_.coef_.T).T @ X  # (classes or 1, d)
        else:
            self.converged_ = not _fit_quietly(self.model_, X, y)
            self.coef_ = self.model_.coef_
        self.intercept_ = self.model_.intercept_
        return self

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        dec = np.asarray(X, np.float64) @ self.coef_.T + self.intercept_
        if dec.shape[1] == 1:  # binary: positive means classes_[1], as LinearSVC's decision
            dec = dec.ravel()
        return _full_scores(dec, self.model_.classes_, self.n_classes_)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "C": self.C, "converged": bool(self.converged_),
                "solved_in_row_space": bool(self.row_space_)}


class AdditiveKernelSVM(_Base):
    """SVM with an additive kernel (chi2 or intersection): exact precomputed kernel or map."""

    def __init__(
        self,
        kernel: str = "chi2",
        C: float = 1.0,
        kernel_mode: str = "exact",
        seed: int = 0,
        map_order: int = 2,
        n_jobs: int | None = None,
        max_iter: int = 5000,
    ):
        if kernel not in ("chi2", "intersection"):
            raise UserError(f"unknown additive kernel {kernel!r}; valid: chi2, intersection")
        if kernel_mode not in KERNEL_MODES:
            raise UserError(
                f"unknown kernel_mode {kernel_mode!r}; valid: {', '.join(KERNEL_MODES)}"
            )
        self.kernel, self.C, self.kernel_mode = kernel, C, kernel_mode
        self.seed, self.map_order, self.n_jobs, self.max_iter = seed, map_order, n_jobs, max_iter
        self.name = "chi2-svm" if kernel == "chi2" else "hik-svm"

    def _kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """The kernel matrix, in blocks of rows of A (each row's values are computed alone, so
        blocks change nothing), with a progress bar."""
        from cvbench import progress

        fn = chi2_kernel if self.kernel == "chi2" else intersection_kernel
        rows = max(1, KERNEL_BLOCK_ENTRIES // max(1, len(B)))
        if len(A) <= rows:
            return fn(A, B)
        out = None
        with progress.bar(len(A), f"{self.kernel} kernel {len(A)} x {len(B)}", unit="row") as bar:
            for a in range(0, len(A), rows):
                block = fn(A[a:a + rows], B)
                if out is None:
                    out = np.empty((len(A), len(B)), dtype=block.dtype)
                out[a:a + rows] = block
                bar.update(len(block))
        return out

    def _map(self, X: np.ndarray) -> np.ndarray:
        return homogeneous_kernel_map(X, self.kernel, self.map_order)

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int | None = None):
        X, y = self._prepare(X, y, n_classes)
        if self.kernel_mode == "exact":
            from sklearn.multiclass import OneVsRestClassifier
            from sklearn.svm import SVC

            self.X_train_ = np.asarray(X, dtype=np.float64)
            K = self._kernel(self.X_train_, self.X_train_)
            self.model_ = OneVsRestClassifier(
                SVC(kernel="precomputed", C=self.C, random_state=self.seed), n_jobs=self.n_jobs
            )
            from cvbench import progress

            with progress.stage(f"SVM: one-vs-rest on the {len(K)} x {len(K)} kernel"):
                self.model_.fit(K, y)
            self.converged_ = True
        else:
            self.model_ = _linear_svc(self.C, self.seed, self.max_iter)
            self.converged_ = not _fit_quietly(self.model_, self._map(X), y)
        return self

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        if self.kernel_mode == "exact":
            dec = self.model_.decision_function(self._kernel(np.asarray(X, np.float64), self.X_train_))
        else:
            dec = self.model_.decision_function(self._map(X))
        return _full_scores(dec, self.model_.classes_, self.n_classes_)

    def info(self) -> dict[str, Any]:
        out = {**super().info(), "C": self.C, "kernel": self.kernel, "kernel_mode": self.kernel_mode,
               "converged": bool(self.converged_)}
        if self.kernel_mode == "map":
            out["map_dims"] = int(self.n_features_in_ * (2 * self.map_order + 1))
        return out


class _KNNWrapper(_Base):
    """KNNClassifier with the common API (fit with n_classes, info)."""

    name = "knn"

    def __init__(self, k: int = 1, metric: str = "l2", weighted: bool = False):
        self.knn = KNNClassifier(k=k, metric=metric, weighted=weighted)

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int | None = None,
            cache_key: str | None = None):
        X = np.asarray(X)
        self.n_features_in_ = X.shape[1] if X.ndim == 2 else 0
        self.knn.fit(X, y, n_classes=n_classes, cache_key=cache_key)
        self.n_classes_ = self.knn.n_classes_
        return self

    def decision_scores(self, X: np.ndarray, cache_key: str | None = None) -> np.ndarray:
        return self.knn.decision_scores(X, cache_key=cache_key)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "k": self.knn.k, "metric": self.knn.metric,
                "weighted": self.knn.weighted}


def make_classifier(
    name: str,
    C: float = 1.0,
    seed: int = 0,
    *,
    k: int = 1,
    metric: str = "l2",
    weighted: bool = False,
    kernel_mode: str = "exact",
    map_order: int = 2,
    n_jobs: int | None = None,
    max_iter: int = 5000,
):
    """Build a classifier by name (see the module docstring for names and parameters)."""
    if name == "knn":
        return _KNNWrapper(k=k, metric=metric, weighted=weighted)
    if name == "linear-svm":
        return LinearSVMClassifier(C=C, seed=seed, max_iter=max_iter)
    if name in ("chi2-svm", "hik-svm"):
        kernel = "chi2" if name == "chi2-svm" else "intersection"
        return AdditiveKernelSVM(kernel=kernel, C=C, kernel_mode=kernel_mode, seed=seed,
                                 map_order=map_order, n_jobs=n_jobs, max_iter=max_iter)
    raise UserError(f"unknown classifier {name!r}; valid classifiers: {', '.join(CLASSIFIERS)}")
