"""Methods on frozen pretrained embeddings (`deep/embeddings.py`): `linear-probe` and
`embedding-knn`. Both embed through the per-image cache, so a second method (or another
hyper-parameter) on the same images never extracts again.

`linear-probe` (objective="classification"): standardised embeddings (StandardScaler) and a
multinomial logistic regression (lbfgs). C is chosen on a validation carve of TRAIN
(`cvbench.split.carve_validation`, grouped by `split.meta["val_group_key"]` when the task has
one, e.g. patients), warm-started along the grid; then the probe is refitted on all of TRAIN.
info_["validation"] holds the curve and the chosen C.

`linear-probe` (objective="ordinal", retinopathy): standardised embeddings and a ridge
regression on the grade; alpha is chosen by out-of-fold QWK over K folds of TRAIN (folds
grouped by the task's group key, stratified), the QWK thresholds are fitted on the
out-of-fold predictions of the chosen alpha (`optimise_thresholds`), the ridge is refitted
on all of TRAIN, and test scores are `threshold_scores` (argmax = thresholded grade).

`embedding-knn`: cosine k-NN (`baselines.knn`, k chosen on the validation carve when k is
None), or scoring="max": a class scores its best cosine similarity over its training images
(`retrieval_scores`, Hotel-ID's retrieval: the top-5 hotels are the 5 best-matching ones).

The test split is only ever embedded in predict_scores: nothing in fit sees it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from cvbench.corruptions import parse_list
from cvbench.errors import UserError
from cvbench.methods import Method, Scores, register_method
from cvbench.metrics import quadratic_weighted_kappa_fast
from cvbench.params import Anything, Bool, Choice, Float, Int, Jobs, Seq, Text
from cvbench.split import Split, carve_validation

from .embeddings import PRECISIONS, RESIZE_MODES, TTA_MODES, embed_split
from .ordinal import grades_from_values, optimise_thresholds, threshold_scores
from .retrieval import retrieval_scores
from .runtime import RUNTIMES

DEFAULT_CS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_ALPHAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
K_GRID = (1, 3, 5, 10, 20)
OBJECTIVES = ("classification", "ordinal")
SCORINGS = ("vote", "max")
_ROW = "__row__"


def carve_rows(split: Split, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train part, validation part) of `carve_validation` on `split`, grouped
    by split.meta["val_group_key"] when set."""
    group = split.meta.get("val_group_key")
    if group is not None and group not in split.groups:
        group = None
    tagged = replace(split, groups={**split.groups, _ROW: np.arange(len(split))})
    tr, va = carve_validation(tagged, fraction=fraction, seed=seed, group_key=group)
    return np.asarray(tr.groups[_ROW]), np.asarray(va.groups[_ROW])


def map5(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean average precision at 5 with one true label per item (= MRR truncated at 5)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    hit = top == np.asarray(y)[:, None]
    return float((hit / np.arange(1, top.shape[1] + 1)).sum(axis=1).mean()) if len(y) else 0.0


def _backbones(text: str) -> None:
    from .backbones import list_backbones

    unknown = [b for b in (p.strip() for p in text.split("+")) if b not in list_backbones()]
    if unknown:
        raise ValueError(f"unknown backbone {unknown[0]!r}; backbones: {', '.join(list_backbones())}")


EMBEDDING_PARAMETERS = {
    "backbone": Text(_backbones, "a backbone (or several joined by '+')"),
    "size": Int(16, 1024, none=True),
    "resize": Choice(*RESIZE_MODES),
    "tta": Choice(*TTA_MODES),
    "weights": Text(none=True, what="a weights file"),
    "val_fraction": Float(0.0, 0.9, lo_open=True),
    "batch_size": Int(1, 4096),
    "precision": Choice(*PRECISIONS),
    "runtime": Choice(*RUNTIMES),  # how to run, not what (cvbench.methods.RUNTIME_PARAMS)
    "seed": Int(0),
    "device": Anything(),
    "n_jobs": Jobs(),
}


class _EmbeddingMethod(Method):
    """Shared parameters: the backbone and how images are embedded."""

    parameters = EMBEDDING_PARAMETERS

    def _embed(self, split: Split) -> tuple[np.ndarray, dict]:
        """(embeddings, facts for the record: how they were made, images/s)."""
        X, info = embed_split(split, backbone=self.backbone, size=self.size,
                              resize=self.resize, tta=self.tta, weights=self.weights,
                              device=self.device or "cpu", batch_size=self.batch_size,
                              n_jobs=self.n_jobs, precision=self.precision,
                              runtime=self.runtime)
        return X, info

    @staticmethod
    def _facts(role: str, info: dict) -> dict:
        facts = {"embeddings": {role: info}, "timings": {f"embed_{role}_s": info["total_seconds"]}}
        if "images_per_s" in info:
            facts[f"images_per_s_{role}"] = info["images_per_s"]
        return facts


def _full_scores(proba: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(proba), n_classes))
    out[:, classes] = proba
    return out


@register_method("linear-probe", family="pretrained", description=(
    "Frozen pretrained embeddings (EfficientNet-Lite, dlib faces, torchvision nets) + "
    "standardised multinomial logistic regression (or ridge + QWK thresholds), "
    "regularisation chosen on a validation carve of train"))
class LinearProbe(_EmbeddingMethod):
    """Linear probe on frozen pretrained embeddings (see the module doc)."""

    feature_cache_params = ("objective", "Cs", "alphas", "val_fraction", "max_iter",
                            "class_weight")
    parameters = {
        "objective": Choice(*OBJECTIVES),
        "Cs": Seq(Float(0.0, lo_open=True), none=True),
        "alphas": Seq(Float(0.0, lo_open=True), none=True),
        "class_weight": Choice("balanced", none=True),
        "max_iter": Int(1, 100_000),
        "train_corruptions": Text(parse_list, "corruptions like 'jpeg:3,gaussian_noise:3'", none=True),
    }

    def __init__(self, backbone: str = "efficientnet_lite0", size: int | None = None,
                 resize: str = "squash", tta: str = "none", weights: str | None = None,
                 objective: str = "classification", Cs: tuple | None = None,
                 alphas: tuple | None = None, val_fraction: float = 0.2,
                 class_weight: str | None = None, max_iter: int = 1000,
                 train_corruptions: str | None = None,
                 batch_size: int = 32, precision: str = "fp32", runtime: str = "auto",
                 seed: int = 0, device: str = "cpu", n_jobs: int | None = None):
        self.train_corruptions = train_corruptions
        self.runtime = runtime
        self.backbone = backbone
        self.size = size
        self.resize = resize
        self.tta = tta
        self.weights = weights
        self.objective = objective
        self.Cs = Cs
        self.alphas = alphas
        self.val_fraction = val_fraction
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.precision = precision
        self.seed = seed
        self.device = device
        self.n_jobs = n_jobs

    def _grid(self, values, default) -> list[float]:
        grid = default if values is None else values
        try:
            grid = sorted(float(v) for v in grid)
        except (TypeError, ValueError):
            grid = []
        if not grid or min(grid) <= 0:
            raise UserError(f"regularisation grid must be positive numbers, got {values!r}")
        return grid

    def fit(self, split: Split):
        X, info = self._embed(split)
        self.info_ = self._facts("train", info)
        self.copies_ = self._corrupted_copies(split)
        y = split.labels
        self.n_classes_ = split.n_classes
        t0 = time.perf_counter()
        if self.objective == "ordinal":
            self._fit_ordinal(split, X, y)
        else:
            self._fit_classification(split, X, y)
        self.info_["timings"]["probe_fit_s"] = round(time.perf_counter() - t0, 3)
        return self

    def run_key_params(self, params: dict) -> dict:
        """Without the corruption defence when it is off (the runs from before it existed)."""
        if not params.get("train_corruptions"):
            params = {k: v for k, v in params.items() if k != "train_corruptions"}
        return params

    def _corrupted_copies(self, split: Split) -> list[np.ndarray]:
        """Embeddings of one corrupted copy of the training split per `train_corruptions`
        (the defence: the probe also fits on them; rows aligned with the clean ones)."""
        from cvbench.corruptions import corrupted_split

        copies = []
        for name, severity in parse_list(self.train_corruptions):
            Xc, info = self._embed(corrupted_split(split, f"{name}:{severity}", int(self.seed) + 7919))
            copies.append(Xc)
            self.info_.setdefault("train_corruptions", []).append(
                {"corruption": f"{name}:{severity}", "images": len(Xc), "seconds": info["total_seconds"]})
        return copies

    def _rows(self, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The training rows `rows` (all by default) with their corrupted copies appended."""
        idx = np.arange(len(X)) if rows is None else rows
        parts = [X[idx]] + [c[idx] for c in getattr(self, "copies_", [])]
        return np.concatenate(parts), np.tile(y[idx], len(parts))

    # -- classification
    def _logreg(self, C: float):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=int(self.max_iter), tol=1e-4,
                                  class_weight=self.class_weight, warm_start=True)

    def _fit_classification(self, split: Split, X: np.ndarray, y: np.ndarray) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.preprocessing import StandardScaler

        grid = self._grid(self.Cs, DEFAULT_CS)
        tr, va = carve_rows(split, float(self.val_fraction), int(self.seed))
        Xfit, yfit = self._rows(X, y, tr)  # copies of the carved-out rows stay out of the fit
        scaler = StandardScaler().fit(Xfit)
        Xtr, Xva = scaler.transform(Xfit), scaler.transform(X[va])
        curve = []
        clf = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for C in grid:  # ascending C, each fit warm-started from the previous solution
                if clf is None:
                    clf = self._logreg(C)
                else:
                    clf.set_params(C=C)
                clf.fit(Xtr, yfit)
                scores = _full_scores(clf.predict_proba(Xva), clf.classes_, split.n_classes)
                curve.append({"C": C, "val_accuracy": round(float((scores.argmax(1) == y[va]).mean()), 4),
                              "val_map5": round(map5(y[va], scores), 4),
                              "iterations": int(np.max(clf.n_iter_))})
            best = max(range(len(curve)), key=lambda i: (curve[i]["val_accuracy"], -i))
            self.C_ = grid[best]
            Xall, yall = self._rows(X, y)
            self.scaler_ = StandardScaler().fit(Xall)
            self.clf_ = self._logreg(self.C_).fit(self.scaler_.transform(Xall), yall)
        self.info_["validation"] = {
            "protocol": f"carve_validation(fraction={self.val_fraction}, seed={self.seed}, "
                        f"group_key={split.meta.get('val_group_key')!r}) of train",
            "n_train": int(len(tr)), "n_val": int(len(va)), "chosen_C": self.C_,
            "val_accuracy": curve[best]["val_accuracy"], "curve": curve,
        }

    # -- ordinal
    def _folds(self, split: Split, y: np.ndarray):
        from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

        n_splits = max(2, round(1 / float(self.val_fraction)))
        group = split.meta.get("val_group_key")
        if group in split.groups:
            cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=int(self.seed))
            return list(cv.split(np.zeros(len(y)), y, np.asarray(split.groups[group]))), group
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=int(self.seed))
        return list(cv.split(np.zeros(len(y)), y)), None

    def _fit_ordinal(self, split: Split, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import Ridge
        from sklearn.preprocessing import StandardScaler

        grid = self._grid(self.alphas, DEFAULT_ALPHAS)
        folds, group = self._folds(split, y)
        oof = np.zeros((len(grid), len(y)))
        for tr, va in folds:
            Xfit, yfit = self._rows(X, y, tr)
            scaler = StandardScaler().fit(Xfit)
            Xtr, Xva = scaler.transform(Xfit), scaler.transform(X[va])
            for a, alpha in enumerate(grid):
                oof[a, va] = Ridge(alpha=alpha, solver="cholesky").fit(Xtr, yfit).predict(Xva)
        k = split.n_classes
        curve = []
        for a, alpha in enumerate(grid):
            t = optimise_thresholds(y, oof[a], n_classes=k)
            curve.append({"alpha": alpha,
                          "oof_qwk_fitted_thresholds": round(quadratic_weighted_kappa_fast(y, grades_from_values(oof[a], t), k), 4),
                          "oof_qwk_midpoints": round(quadratic_weighted_kappa_fast(
                              y, np.clip(np.round(oof[a]), 0, k - 1).astype(np.int64), k), 4),
                          "oof_rmse": round(float(np.sqrt(np.mean((oof[a] - y) ** 2))), 4)})
        best = max(range(len(grid)), key=lambda i: (curve[i]["oof_qwk_fitted_thresholds"], -i))
        self.alpha_ = grid[best]
        self.thresholds_ = optimise_thresholds(y, oof[best], n_classes=k)
        Xall, yall = self._rows(X, y)
        self.scaler_ = StandardScaler().fit(Xall)
        self.ridge_ = Ridge(alpha=self.alpha_, solver="cholesky").fit(self.scaler_.transform(Xall), yall)
        self.info_["validation"] = {
            "protocol": f"{len(folds)}-fold out-of-fold predictions over train"
                        f"{f', grouped by {group}' if group else ''}; thresholds fitted on them",
            "chosen_alpha": self.alpha_, "thresholds": [round(float(v), 4) for v in self.thresholds_],
            "oof_qwk": curve[best]["oof_qwk_fitted_thresholds"], "curve": curve,
        }

    def predict_scores(self, split: Split) -> Scores:
        X, info = self._embed(split)
        X = self.scaler_.transform(X)
        if self.objective == "ordinal":
            scores = threshold_scores(self.ridge_.predict(X), self.thresholds_)
        else:
            scores = _full_scores(self.clf_.predict_proba(X), self.clf_.classes_, self.n_classes_)
        return Scores(scores, info=self._facts("test", info))


@register_method("embedding-knn", family="pretrained", description=(
    "Frozen pretrained embeddings + cosine k-NN (k chosen on a validation carve of train), or "
    "retrieval scoring (a class scores its best match: Hotel-ID's top-5 hotels)"))
class EmbeddingKNN(_EmbeddingMethod):
    """Cosine k-NN / best-match retrieval on frozen pretrained embeddings."""

    feature_cache_params = ("k", "scoring", "weighted", "val_fraction")
    parameters = {
        "k": Int(1, at_most="n_train", none=True),
        "scoring": Choice(*SCORINGS),
        "weighted": Bool(),
    }

    def __init__(self, backbone: str = "efficientnet_lite0", size: int | None = None,
                 resize: str = "squash", tta: str = "none", weights: str | None = None,
                 k: int | None = None, scoring: str = "vote", weighted: bool = False,
                 val_fraction: float = 0.2, batch_size: int = 32, precision: str = "fp32",
                 runtime: str = "auto", seed: int = 0, device: str = "cpu",
                 n_jobs: int | None = None):
        self.runtime = runtime
        self.backbone = backbone
        self.size = size
        self.resize = resize
        self.tta = tta
        self.weights = weights
        self.k = k
        self.scoring = scoring
        self.weighted = weighted
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.precision = precision
        self.seed = seed
        self.device = device
        self.n_jobs = n_jobs

    def _scores(self, train_X, train_y, X, n_classes: int, k: int | None) -> np.ndarray:
        from cvbench.baselines.knn import knn_scores

        if self.scoring == "max":
            return retrieval_scores(X, train_X, train_y, n_classes)
        return knn_scores(train_X, train_y, X, k=int(k), metric="cosine",
                          weighted=bool(self.weighted), n_classes=n_classes, cache="memory")

    def fit(self, split: Split):
        X, info = self._embed(split)
        self.info_ = self._facts("train", info)
        y = split.labels
        tr, va = carve_rows(split, float(self.val_fraction), int(self.seed))
        grid = [None] if self.scoring == "max" else ([int(self.k)] if self.k else list(K_GRID))
        curve = []
        for k in grid:
            s = self._scores(X[tr], y[tr], X[va], split.n_classes, k)
            curve.append({"k": k, "val_accuracy": round(float((s.argmax(1) == y[va]).mean()), 4),
                          "val_map5": round(map5(y[va], s), 4)})
        best = max(range(len(curve)), key=lambda i: (curve[i]["val_accuracy"], -i))
        self.k_ = grid[best]
        self.train_X_, self.train_y_, self.n_classes_ = X, y, split.n_classes
        self.info_["validation"] = {
            "protocol": f"carve_validation(fraction={self.val_fraction}, seed={self.seed}) of "
                        "train", "scoring": self.scoring, "chosen_k": self.k_,
            "val_accuracy": curve[best]["val_accuracy"], "val_map5": curve[best]["val_map5"],
            "curve": curve,
        }
        return self

    def predict_scores(self, split: Split) -> Scores:
        X, info = self._embed(split)
        return Scores(self._scores(self.train_X_, self.train_y_, X, self.n_classes_, self.k_),
                      info=self._facts("test", info))

