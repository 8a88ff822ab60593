"""Metrics for every task: accuracy & co, per-class report, top-k, QWK, MAP@5, per-group
accuracy with disparity, referable-DR sensitivity/specificity, and bootstrap intervals.

Conventions (so records never hold NaN):
- Empty input (n = 0) gives 0.0 for every rate and (0.0, 0.0) for intervals.
- Any ratio whose denominator is 0 (precision of a never-predicted class, specificity when
  every item is positive, ...) is 0.0, as sklearn's `zero_division=0`.
- Predictions from scores are `argmax` (ties go to the lower class index); `top_k_accuracy`
  and `map_at_k` rank ties the same way, so top-1 accuracy == accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "EXTRA_METRICS",
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "confusion",
    "disparity_summary",
    "evaluate",
    "group_accuracy",
    "macro_f1",
    "map_at_k",
    "paired_bootstrap_diff",
    "per_class_report",
    "quadratic_weighted_kappa",
    "referable_dr",
    "top_k_accuracy",
    "unpaired_bootstrap_diff",
]

#: Extra metric names a task may list in `Task.metrics` ("groups:<spec>" takes a group key
#: or "a*b" for the pair of two keys; "per_class" is accepted and always on).
EXTRA_METRICS = ("topk", "qwk", "map5", "referable", "per_class", "groups:<key>", "groups:<a>*<b>")


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
    return float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else 0.0


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean recall over the classes present in y_true (sklearn); 0.0 when empty."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        return 0.0
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(y_true, y_pred))


def macro_f1(y_true: Any, y_pred: Any) -> float:
    """Unweighted mean F1 over the classes seen in y_true or y_pred (0.0 when empty)."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        return 0.0
    return float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


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
            cm = skm.confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
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
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    mcm = skm.multilabel_confusion_matrix(y_true, y_pred, labels=labels)  # [[tn, fp], [fn, tp]]
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
        kappa = float(skm.cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic"))
    return 0.0 if not np.isfinite(kappa) else kappa


def referable_dr(y_true: Any, y_pred: Any, threshold: int = 2) -> dict[str, float]:
    """Sensitivity and specificity for referable diabetic retinopathy (grade >= threshold)."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    pos_true, pos_pred = y_true >= threshold, y_pred >= threshold
    tp = np.sum(pos_true & pos_pred)
    tn = np.sum(~pos_true & ~pos_pred)
    return {
        "sensitivity": float(_ratio(tp, pos_true.sum())),
        "specificity": float(_ratio(tn, (~pos_true).sum())),
    }


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
    correct_a: Any, correct_b: Any, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
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
        return {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p_value": 1.0}
    # outcome cells: only a right, only b right (both/neither leave the difference unchanged)
    shares = np.array([np.sum(a & ~b), np.sum(~a & b), np.sum(a == b)]) / n
    counts = np.random.default_rng(seed).multinomial(n, shares, size=n_boot)
    samples = (counts[:, 0] - counts[:, 1]) / n
    return _diff_result(a.mean() - b.mean(), samples, alpha)


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


def _validate_extras(extras: Sequence[str]) -> None:
    plain = {"topk", "qwk", "map5", "referable", "per_class"}
    bad = [e for e in extras if e not in plain and not (e.startswith("groups:") and len(e) > 7)]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; valid: {', '.join(EXTRA_METRICS)}")


def evaluate(
    y_true: Any,
    scores: Any,
    classes: Sequence[str],
    extras: Sequence[str] = (),
    groups: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric a run record stores, as plain JSON values.

    Always: accuracy, accuracy_ci [lo, hi] (95% percentile bootstrap, 1000 resamples, `seed`),
    balanced_accuracy, macro_f1, confusion (counts, rows = true), per_class
    {class: {precision, recall, specificity, f1, ovr_accuracy, support}}, mean_ovr_accuracy
    (per-class one-vs-rest accuracies averaged, as the retinopathy study reports "accuracy").
    `extras` (from Task.metrics) add: "topk" -> top1_accuracy, top5_accuracy; "qwk" -> qwk;
    "map5" -> map5, top5_accuracy; "referable" -> referable {sensitivity, specificity};
    "groups:<spec>" -> groups[spec] = {"per_group", "summary"}. Predictions are argmax(scores).
    """
    extras = tuple(extras)
    _validate_extras(extras)
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
        "mean_ovr_accuracy": float(report["ovr_accuracy"].mean()) if n_classes else 0.0,
    }
    for extra in extras:
        if extra == "topk":
            out["top1_accuracy"] = top_k_accuracy(y_true, scores, 1)
            out["top5_accuracy"] = top_k_accuracy(y_true, scores, 5)
        elif extra == "map5":
            out["map5"] = map_at_k(y_true, scores, 5)
            out["top5_accuracy"] = top_k_accuracy(y_true, scores, 5)
        elif extra == "qwk":
            out["qwk"] = quadratic_weighted_kappa(y_true, y_pred, n_classes)
        elif extra == "referable":
            out["referable"] = referable_dr(y_true, y_pred)
        elif extra.startswith("groups:"):
            spec = extra.removeprefix("groups:")
            per_group = group_accuracy(y_true, y_pred, _group_values(groups, spec, len(y_true)))
            out.setdefault("groups", {})[spec] = {
                "per_group": per_group,
                "summary": disparity_summary(per_group),
            }
    return out
