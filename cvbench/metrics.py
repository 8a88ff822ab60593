"""Metrics for every task: accuracy & co, per-class report, top-k, QWK, MAP@5, per-group
accuracy with disparity, bootstrap intervals (by item, by group, paired), and the registry
through which a task names its metrics (task-only metrics register from the task folder).

Conventions (so records never hold NaN):
- Empty input (n = 0) gives 0.0 for every rate and (0.0, 0.0) for intervals.
- Any ratio whose denominator is 0 (precision of a never-predicted class, specificity when
  every item is positive, ...) is 0.0, as sklearn's `zero_division=0`.
- Predictions from scores are `argmax` (ties go to the lower class index); `top_k_accuracy`
  and `map_at_k` rank ties the same way, so top-1 accuracy == accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "confusion",
    "disparity_summary",
    "evaluate",
    "group_accuracy",
    "group_bootstrap",
    "holm",
    "mcnemar_p",
    "register_metric",
    "macro_f1",
    "map_at_k",
    "paired_bootstrap_diff",
    "per_class_report",
    "quadratic_weighted_kappa",
    "top_k_accuracy",
    "unpaired_bootstrap_diff",
]



def _skm():
    """scikit-learn's metrics, imported when first needed (it takes a second: `cvbench list`
    and the task configs need this module, not sklearn)."""
    from sklearn import metrics

    return metrics


def _labels(y: Any) -> np.ndarray:
    return np.asarray(y, dtype=np.int64).reshape(-1)


def _check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    return y_true, y_pred


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0.0 where den == 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of items predicted correctly (0.0 when empty)."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    return float(_skm().accuracy_score(y_true, y_pred)) if len(y_true) else 0.0


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean recall over the classes present in y_true (sklearn); 0.0 when empty."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        return 0.0
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected
        warnings.simplefilter("ignore", UserWarning)
        return float(_skm().balanced_accuracy_score(y_true, y_pred))


def macro_f1(y_true: Any, y_pred: Any) -> float:
    """Unweighted mean F1 over the classes seen in y_true or y_pred (0.0 when empty)."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        return 0.0
    return float(_skm().f1_score(y_true, y_pred, average="macro", zero_division=0))


def confusion(
    y_true: Any, y_pred: Any, n_classes: int, normalize: str | None = None
) -> np.ndarray:
    """(n_classes, n_classes) confusion matrix, rows = true class, columns = predicted.

    normalize=None gives int64 counts; "true" divides each row by its total (a class absent
    from y_true gives a row of zeros, not NaN).
    """
    if normalize not in (None, "true"):
        raise ValueError(f"normalize must be None or 'true', got {normalize!r}")
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    else:
        with warnings.catch_warnings():  # sklearn warns about any 1x1 matrix, even with labels
            warnings.simplefilter("ignore", UserWarning)
            cm = _skm().confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
        cm = cm.astype(np.int64)
    if normalize == "true":
        return _ratio(cm, cm.sum(axis=1, keepdims=True))
    return cm


def per_class_report(y_true: Any, y_pred: Any, n_classes: int) -> dict[str, np.ndarray]:
    """Per-class precision, recall (= sensitivity), specificity, f1, one-vs-rest accuracy
    ((TP + TN) / N) and support, each an array of length n_classes; 0/0 gives 0."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        zeros = np.zeros(n_classes)
        return {k: zeros.copy() for k in ("precision", "recall", "specificity", "f1", "ovr_accuracy")} | {
            "support": np.zeros(n_classes, dtype=np.int64)
        }
    labels = np.arange(n_classes)
    precision, recall, f1, support = _skm().precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    mcm = _skm().multilabel_confusion_matrix(y_true, y_pred, labels=labels)  # [[tn, fp], [fn, tp]]
    tn, fp, tp = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 1]
    return {
        "precision": precision.astype(np.float64),
        "recall": recall.astype(np.float64),
        "specificity": _ratio(tn, tn + fp),
        "f1": f1.astype(np.float64),
        "ovr_accuracy": (tp + tn) / len(y_true),
        "support": support.astype(np.int64),
    }


def _true_class_rank(y_true: Any, scores: Any) -> np.ndarray:
    """1-based rank of the true class in each row of scores; ties go to the lower index."""
    y_true = _labels(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(y_true):
        raise ValueError(f"scores must be (n={len(y_true)}, n_classes), got shape {scores.shape}")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1}")
    true_score = scores[np.arange(len(y_true)), y_true][:, None]
    lower_index = np.arange(scores.shape[1])[None, :] < y_true[:, None]
    ahead = (scores > true_score) | ((scores == true_score) & lower_index)
    return ahead.sum(axis=1) + 1


def top_k_accuracy(y_true: Any, scores: Any, k: int = 5) -> float:
    """Fraction of items whose true class is among the k highest scores (0.0 when empty)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank = _true_class_rank(y_true, scores)
    return float(np.mean(rank <= k)) if len(rank) else 0.0


def map_at_k(y_true: Any, scores: Any, k: int = 5) -> float:
    """Kaggle MAP@k with one relevant class per item: mean of 1/rank of the true class when
    it is within the top k, else 0 (0.0 when empty)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank = _true_class_rank(y_true, scores)
    return float(np.mean(np.where(rank <= k, 1.0 / rank, 0.0))) if len(rank) else 0.0


def quadratic_weighted_kappa(y_true: Any, y_pred: Any, n_classes: int | None = None) -> float:
    """Cohen's kappa with quadratic weights (as sklearn). Where it is undefined (0/0: empty
    input, or truth and prediction the same single constant) it is defined as 0.0, the value
    any constant predictor gets whenever kappa is defined."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        return 0.0
    labels = np.arange(n_classes) if n_classes is not None else None
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # sklearn's "undefined" warning
        kappa = float(_skm().cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic"))
    return 0.0 if not np.isfinite(kappa) else kappa


def _group_keys(groups: Any) -> np.ndarray:
    return np.asarray(groups).astype(str).reshape(-1)


def group_accuracy(y_true: Any, y_pred: Any, groups: Any) -> dict[str, dict[str, float | int]]:
    """Accuracy and item count per group value: {str(value): {"accuracy", "n"}}."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    keys = _group_keys(groups)
    if len(keys) != len(y_true):
        raise ValueError(f"groups has {len(keys)} values but there are {len(y_true)} items")
    values, inverse = np.unique(keys, return_inverse=True)
    n = np.bincount(inverse, minlength=len(values))
    hits = np.bincount(inverse, weights=(y_true == y_pred).astype(np.float64), minlength=len(values))
    return {str(v): {"accuracy": float(h / c), "n": int(c)} for v, h, c in zip(values, hits, n)}


def disparity_summary(accuracies: Mapping[str, Any] | Iterable[float]) -> dict[str, float]:
    """Spread of per-group accuracies: max, min, mean, std (population, ddof=0), gap = max - min,
    ratio = min / max (1.0 when every group is at 0). Empty input gives all 0.0.

    Accepts a list of floats, {group: accuracy} or group_accuracy's {group: {"accuracy", "n"}}.
    """
    if isinstance(accuracies, Mapping):
        accuracies = [v["accuracy"] if isinstance(v, Mapping) else v for v in accuracies.values()]
    acc = np.asarray(list(accuracies), dtype=np.float64)
    if not len(acc):
        return dict.fromkeys(("max", "min", "mean", "std", "gap", "ratio"), 0.0)
    hi, lo = float(acc.max()), float(acc.min())
    return {
        "max": hi,
        "min": lo,
        "mean": float(acc.mean()),
        "std": float(acc.std(ddof=0)),
        "gap": hi - lo,
        "ratio": lo / hi if hi > 0 else 1.0,
    }


def _quantiles(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _bool(correct: Any, name: str = "correct") -> np.ndarray:
    arr = np.asarray(correct).reshape(-1)
    if arr.dtype != bool and len(arr) and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be a boolean (or 0/1) array")
    return arr.astype(bool)


def bootstrap_ci(
    correct: Any, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of accuracy from per-item correctness.

    Resampling n Bernoulli items with replacement gives a mean distributed exactly as
    Binomial(n, acc) / n, so the n_boot resamples are drawn that way: O(n_boot), not
    O(n_boot * n). Seeded numpy Generator; (0.0, 0.0) when empty.
    """
    correct = _bool(correct)
    n = len(correct)
    if n == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    return _quantiles(rng.binomial(n, correct.mean(), size=n_boot) / n, alpha)


def _diff_result(diff: float, samples: np.ndarray, alpha: float) -> dict[str, float]:
    """Percentile interval plus a two-sided p-value for "no difference": the share of
    bootstrap differences, shifted to mean zero, at least as far from 0 as the observed one
    (Efron & Tibshirani 1993, sec. 16.4), with +1 smoothing so it is never exactly 0."""
    lo, hi = _quantiles(samples, alpha)
    extreme = np.sum(np.abs(samples - samples.mean()) >= abs(diff) - 1e-12)
    return {
        "diff": float(diff),
        "lo": lo,
        "hi": hi,
        "p_value": float(min(1.0, (extreme + 1) / (len(samples) + 1))),
    }


def paired_bootstrap_diff(
    correct_a: Any, correct_b: Any, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
    samples: bool = False,
) -> dict[str, Any]:
    """Accuracy difference a - b of two runs on the same test items, with a paired bootstrap
    interval and p-value: {"diff", "lo", "hi", "p_value"}.

    Items are resampled as (a, b) pairs; the four outcome counts of a resample are drawn
    exactly as Multinomial(n, observed shares), so no (n_boot, n) index array is built.
    """
    a, b = _bool(correct_a, "correct_a"), _bool(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(f"paired runs need the same items: {len(a)} vs {len(b)}")
    n = len(a)
    if n == 0:
        return {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p_value": 1.0, **({"samples": np.zeros(n_boot)} if samples else {})}
    # outcome cells: only a right, only b right (both/neither leave the difference unchanged)
    shares = np.array([np.sum(a & ~b), np.sum(~a & b), np.sum(a == b)]) / n
    counts = np.random.default_rng(seed).multinomial(n, shares, size=n_boot)
    draws = (counts[:, 0] - counts[:, 1]) / n
    out: dict[str, Any] = _diff_result(a.mean() - b.mean(), draws, alpha)
    if samples:  # the resampled differences themselves (to pool several test sets)
        out["samples"] = draws
    return out


def unpaired_bootstrap_diff(
    correct_a: Any, correct_b: Any, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
    """Accuracy difference a - b of two runs on different test sets, resampling each set
    independently (each mean drawn as Binomial(n, acc) / n): {"diff", "lo", "hi", "p_value"}."""
    a, b = _bool(correct_a, "correct_a"), _bool(correct_b, "correct_b")
    if not len(a) or not len(b):
        return {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p_value": 1.0}
    rng = np.random.default_rng(seed)
    samples = rng.binomial(len(a), a.mean(), size=n_boot) / len(a) - rng.binomial(
        len(b), b.mean(), size=n_boot
    ) / len(b)
    return _diff_result(a.mean() - b.mean(), samples, alpha)


def _group_values(groups: Mapping[str, Any] | None, spec: str, n: int) -> np.ndarray:
    """Per-item group labels for a spec "key" or "a*b" (pair values joined with " / ")."""
    keys = spec.split("*")
    groups = groups or {}
    missing = [k for k in keys if k not in groups]
    if missing or not all(keys):
        raise ValueError(
            f"metric 'groups:{spec}' needs group(s) {missing or keys} in the test split; "
            f"available: {sorted(groups) or 'none'}"
        )
    parts = [_group_keys(groups[k]) for k in keys]
    for k, p in zip(keys, parts):
        if len(p) != n:
            raise ValueError(f"group {k!r} has {len(p)} values but there are {n} items")
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, " / "), p)
    return out


# ---------------------------------------------------------------- bootstrap by group
def group_bootstrap(
    correct: Any, strata: Any, n_boot: int = 2000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Stratified paired bootstrap of per-group accuracy for R runs on the same test items.

    correct: (R, n) bool, one row per run; strata: (n,) group label per item. Items are
    resampled within each group (the test design fixes the group sizes), with the same draws
    for every run, so differences between runs are paired. Returns arrays of shape (R, B)
    for "overall", "balanced" (the mean of the per-group accuracies), "gap" (max - min over
    groups), "std", "min", and (R, G, B) "per_group"; "groups" lists the group names.
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=bool))
    strata = np.asarray(strata).astype(str)
    names, inverse = np.unique(strata, return_inverse=True)
    rng = np.random.default_rng(seed)
    n_runs, n = correct.shape
    per_group = np.empty((n_runs, len(names), n_boot))
    weights = np.bincount(inverse, minlength=len(names)) / max(n, 1)
    for g in range(len(names)):
        idx = np.flatnonzero(inverse == g)
        draw = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        per_group[:, g, :] = correct[:, draw].mean(axis=2)
    return {
        "groups": names,
        "per_group": per_group,
        "overall": np.einsum("g,rgb->rb", weights, per_group),
        "balanced": per_group.mean(axis=1),
        "gap": per_group.max(axis=1) - per_group.min(axis=1),
        "std": per_group.std(axis=1),
        "min": per_group.min(axis=1),
    }


def group_statistics(correct: Any, strata: Any) -> dict[str, Any]:
    """The statistics of `group_bootstrap` on the observed data, for R runs."""
    correct = np.atleast_2d(np.asarray(correct, dtype=bool))
    names, inverse = np.unique(np.asarray(strata).astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(names))
    per_group = np.stack([np.bincount(inverse, weights=c, minlength=len(names)) / counts for c in correct])
    return {"groups": names, "per_group": per_group, "overall": correct.mean(axis=1),
            "balanced": per_group.mean(axis=1), "gap": per_group.max(1) - per_group.min(1),
            "std": per_group.std(1), "min": per_group.min(1)}


def resample_indices(n: int, n_boot: int, seed: int, groups: Any = None) -> list[np.ndarray] | np.ndarray:
    """Bootstrap resamples of item indices: items with replacement (one (n_boot, n) array),
    or whole groups with replacement when `groups` (per-item group ids, e.g. patients) is
    given, so items of one group (both eyes of a patient) always move together (a list)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.integers(0, n, size=(n_boot, n))
    names, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), size=len(members))
        out.append(np.concatenate([members[g] for g in pick]) if len(pick) else np.zeros(0, np.int64))
    return out


def bootstrap_metric(fn, y_true: Any, y_pred: Any, n_boot: int = 1000, seed: int = 0,
                     groups: Any = None, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile (1 - alpha) interval of fn(y_true, y_pred) over bootstrap resamples
    (`resample_indices`: by item, or by group); (0.0, 0.0) when empty."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        return 0.0, 0.0
    values = [fn(y_true[i], y_pred[i]) for i in resample_indices(len(y_true), n_boot, seed, groups)]
    return _quantiles(np.asarray(values, dtype=np.float64), alpha)


def bootstrap_mean(values: Any, n_boot: int = 1000, seed: int = 0, groups: Any = None,
                   alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean of per-item values (e.g. reciprocal ranks: MAP@5 by
    query), resampling items or whole groups; (0.0, 0.0) when empty."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not len(v):
        return 0.0, 0.0
    means = [v[i].mean() if len(i) else 0.0 for i in resample_indices(len(v), n_boot, seed, groups)]
    return _quantiles(np.asarray(means), alpha)


def mcnemar_p(correct_a: Any, correct_b: Any) -> float:
    """Exact two-sided McNemar p-value that two classifiers on the same items are equally
    accurate: a binomial test on the items exactly one of them gets right (1.0 when none)."""
    from scipy.stats import binomtest

    a, b = _bool(correct_a, "correct_a"), _bool(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(f"paired runs need the same items: {len(a)} vs {len(b)}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error over all the comparisons)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------- the metric registry
@dataclass(frozen=True)
class MetricInput:
    """What a metric sees: truth, argmax predictions, scores, classes and the test groups."""

    y_true: np.ndarray
    y_pred: np.ndarray
    scores: np.ndarray
    classes: tuple[str, ...]
    groups: Mapping[str, Any]
    seed: int = 0
    group_key: str | None = None  # the task's grouping (e.g. patient): "group" bootstraps by it

    def take(self, idx: np.ndarray) -> MetricInput:
        """The input restricted to items `idx` (a bootstrap resample)."""
        return MetricInput(self.y_true[idx], self.y_pred[idx], self.scores[idx], self.classes,
                           {k: np.asarray(v)[idx] for k, v in self.groups.items()}, self.seed,
                           self.group_key)


@dataclass(frozen=True)
class Metric:
    """A registered metric: compute(input) -> a value or a dict of named values.

    bootstrap: how its 95% interval is resampled, stored as `<name>_ci` for a scalar
    metric: "item" (test items), "group" (whole groups of the task's group key, task.toml's
    `val_group_key`, e.g. both eyes of a patient move together; items where the test split has
    no such groups), "group:<key>" (whole groups of a named key), or None (no interval).
    per_item(input) -> (n,) values makes the interval the bootstrap of their mean (MAP@5 by
    query); pair(y_true, y_pred, n_classes) -> value makes it the bootstrap of that function."""

    name: str
    compute: Callable[[MetricInput], Any]
    bootstrap: str | None = None
    per_item: Callable[[MetricInput], np.ndarray] | None = None
    pair: Callable[[np.ndarray, np.ndarray], float] | None = None
    description: str = ""

    def resampling_groups(self, inp: MetricInput) -> Any:
        """Per-item group ids the bootstrap resamples as wholes, or None (items)."""
        if self.bootstrap == "group":
            key = inp.group_key
        elif self.bootstrap and self.bootstrap.startswith("group:"):
            key = self.bootstrap.split(":", 1)[1]
        else:
            return None
        return inp.groups.get(key) if key else None  # items when the split has no such groups

    def value(self, inp: MetricInput) -> float:
        """The metric's scalar value on `inp` (a metric computing several values names the
        scalar after itself, e.g. map5's {"map5", "top5_accuracy"})."""
        if self.per_item is not None:
            v = self.per_item(inp)
            return float(np.mean(v)) if len(v) else 0.0
        if self.pair is not None:
            return float(self.pair(inp.y_true, inp.y_pred, len(inp.classes)))
        out = self.compute(inp)
        return float(out[self.name] if isinstance(out, Mapping) else out)

    def samples(self, inp: MetricInput, draws: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """The scalar value on every resample in `draws` (index arrays into inp's items, or
        one (n_boot, n) array when every resample has n items)."""
        if self.per_item is not None:
            v = np.asarray(self.per_item(inp), dtype=np.float64)
            if isinstance(draws, np.ndarray) and draws.ndim == 2:
                return v[draws].mean(axis=1) if draws.shape[1] else np.zeros(len(draws))
            return np.array([v[i].mean() if len(i) else 0.0 for i in draws])
        if self.pair is not None:
            k = len(inp.classes)
            return np.array([self.pair(inp.y_true[i], inp.y_pred[i], k) for i in draws], dtype=np.float64)
        return np.array([self.value(inp.take(i)) for i in draws])

    def interval(self, inp: MetricInput) -> list[float] | None:
        if self.bootstrap is None:
            return None
        groups = self.resampling_groups(inp)
        if self.per_item is not None:
            return list(bootstrap_mean(self.per_item(inp), seed=inp.seed, groups=groups))
        if self.pair is not None:
            k = len(inp.classes)
            return list(bootstrap_metric(lambda t, p: self.pair(t, p, k), inp.y_true, inp.y_pred,
                                         seed=inp.seed, groups=groups))
        return None


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, bootstrap: str | None = None, per_item=None, pair=None):
    """Decorator: `@register_metric("qwk", bootstrap="group", pair=...)` on a function of a
    `MetricInput`. Task-only metrics register from their task's protocol.py, which the task
    imports when it is constructed."""

    def deco(fn):
        _METRICS[name] = Metric(name, fn, bootstrap, per_item, pair,
                                (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def get_metric(name: str) -> Metric:
    if name.startswith("groups:") and len(name) > 7:
        spec = name.removeprefix("groups:")
        return Metric(name, lambda inp: _groups_metric(inp, spec))
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; registered: {', '.join(sorted(_METRICS))}, "
                         "groups:<key> (a task's own metrics register when the task is loaded)")
    return _METRICS[name]


def metric_names() -> list[str]:
    return sorted(_METRICS)


def _groups_metric(inp: MetricInput, spec: str) -> dict[str, Any]:
    per_group = group_accuracy(inp.y_true, inp.y_pred, _group_values(inp.groups, spec, len(inp.y_true)))
    return {"per_group": per_group, "summary": disparity_summary(per_group)}


def _reciprocal_rank5(inp: MetricInput) -> np.ndarray:
    rank = _true_class_rank(inp.y_true, inp.scores)
    return np.where(rank <= 5, 1.0 / rank, 0.0)


def quadratic_weighted_kappa_fast(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                                  weights: np.ndarray | None = None) -> float:
    """The same value as `quadratic_weighted_kappa` from a bincount confusion matrix (no
    sklearn call): for bootstrap resamples and threshold searches. `weights` weighs items
    (as sklearn's sample_weight)."""
    k = n_classes
    y_true, y_pred = _check_pair(y_true, y_pred)
    cm = np.bincount(y_true * k + y_pred, weights=weights, minlength=k * k).reshape(k, k).astype(np.float64)
    n = cm.sum()
    if n == 0:
        return 0.0
    idx = np.arange(k)
    w = (idx[:, None] - idx[None, :]) ** 2
    expected = np.outer(cm.sum(1), cm.sum(0)) / n
    den = float((w * expected).sum())
    return 0.0 if den == 0 else 1.0 - float((w * cm).sum()) / den


def _correct(inp: MetricInput) -> np.ndarray:
    return (inp.y_true == inp.y_pred).astype(np.float64)


# accuracy itself is computed by `evaluate` (with its binomial interval); the registry entry
# lets the aggregation resample it like any other metric
_METRICS["accuracy"] = Metric("accuracy", lambda inp: accuracy(inp.y_true, inp.y_pred), "item",
                              per_item=_correct, description="fraction of items predicted correctly")


@register_metric("topk")
def _topk(inp: MetricInput) -> dict[str, float]:
    """top-1 and top-5 accuracy"""
    return {"top1_accuracy": top_k_accuracy(inp.y_true, inp.scores, 1),
            "top5_accuracy": top_k_accuracy(inp.y_true, inp.scores, 5)}


@register_metric("map5", bootstrap="item", per_item=_reciprocal_rank5)
def _map5(inp: MetricInput) -> dict[str, float]:
    """Kaggle MAP@5 (one relevant class per query), interval resampled by query"""
    return {"map5": map_at_k(inp.y_true, inp.scores, 5),
            "top5_accuracy": top_k_accuracy(inp.y_true, inp.scores, 5)}


@register_metric("qwk", bootstrap="group", pair=quadratic_weighted_kappa_fast)
def _qwk(inp: MetricInput) -> float:
    """quadratic weighted kappa, interval resampled by the task's groups (patients) where the test split has them"""
    return quadratic_weighted_kappa(inp.y_true, inp.y_pred, len(inp.classes))


def evaluate(
    y_true: Any,
    scores: Any,
    classes: Sequence[str],
    metrics: Sequence[str] = (),
    groups: Mapping[str, Any] | None = None,
    seed: int = 0,
    group_key: str | None = None,
) -> dict[str, Any]:
    """Every metric a run record stores, as plain JSON values.

    Always: accuracy, accuracy_ci [lo, hi] (95% percentile bootstrap, 1000 resamples, `seed`),
    balanced_accuracy, macro_f1, confusion (counts, rows = true), per_class
    {class: {precision, recall, specificity, f1, ovr_accuracy, support}}. `metrics` (from the
    task) names registered metrics ("topk", "map5", "qwk", task-only ones) and "groups:<spec>"
    (per-group accuracy and disparity; spec = a group key or "a*b"). A registered metric with
    a bootstrap rule adds `<name>_ci`; `group_key` names the groups a "group" rule resamples
    (the task's, e.g. patient). Predictions are argmax(scores).
    """
    specs = [get_metric(m) for m in metrics if m != "per_class"]
    classes = tuple(classes)
    n_classes = len(classes)
    y_true = _labels(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (len(y_true), n_classes):
        raise ValueError(
            f"scores must have shape (n_items={len(y_true)}, n_classes={n_classes}), got {scores.shape}"
        )
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    y_pred = scores.argmax(axis=1) if len(y_true) else np.zeros(0, dtype=np.int64)
    correct = y_true == y_pred
    report = per_class_report(y_true, y_pred, n_classes)
    out: dict[str, Any] = {
        "accuracy": accuracy(y_true, y_pred),
        "accuracy_ci": list(bootstrap_ci(correct, seed=seed)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "confusion": confusion(y_true, y_pred, n_classes).tolist(),
        "per_class": {
            name: {k: (int(v[i]) if k == "support" else float(v[i])) for k, v in report.items()}
            for i, name in enumerate(classes)
        },
    }
    inp = MetricInput(y_true, y_pred, scores, classes, groups or {}, seed, group_key)
    for spec in specs:
        value = spec.compute(inp)
        if spec.name.startswith("groups:"):
            out.setdefault("groups", {})[spec.name.removeprefix("groups:")] = value
            continue
        if isinstance(value, dict):
            out.update(value)
        else:
            out[spec.name] = value
        ci = spec.interval(inp)
        if ci is not None:
            out[f"{spec.name}_ci"] = ci
    return out
