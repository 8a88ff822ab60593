"""Retinopathy's task-only metrics: the source study's averaged one-vs-rest "accuracy",
referable-DR (grade >= 2) sensitivity / specificity, and QWK re-weighted to EyePACS's released
grade mix. The test split is carved by patient in the reader, and validation splits are
carved by patient too (task.toml val_group_key).

QWK depends on the test set's grade mix. The shared subset is disease-enriched (about half
grade 0); EyePACS as released is 73.5% grade 0. `qwk_eyepacs` weighs each test item by
(EyePACS share of its grade) / (test share of its grade), so the weighted grade mix equals
the released one: the number the literature's natural-mix QWKs (and Kaggle's) compare with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cvbench.metrics import (
    MetricInput,
    _check_pair,
    _ratio,
    evaluate,
    per_class_report,
    quadratic_weighted_kappa_fast,
    register_metric,
)

from .reader import GRADES

REFERABLE_GRADE = 2
# Kaggle EyePACS 2015 training labels as released: grades 0-4 of 35,126 images.
EYEPACS_GRADE_COUNTS = (25810, 2443, 5292, 873, 708)
EYEPACS_MIX = tuple(c / sum(EYEPACS_GRADE_COUNTS) for c in EYEPACS_GRADE_COUNTS)


def prevalence_weights(y_true: Any, target: tuple[float, ...] = EYEPACS_MIX) -> np.ndarray:
    """Per-item weights that make the weighted grade mix of y_true equal `target` (grades
    absent from y_true get no weight; the others are renormalised)."""
    y = np.asarray(y_true, dtype=np.int64)
    counts = np.bincount(y, minlength=len(target)).astype(np.float64)
    present = counts > 0
    share = np.where(present, np.asarray(target) / max(np.asarray(target)[present].sum(), 1e-12), 0.0)
    per_grade = np.divide(share * len(y), counts, out=np.zeros_like(counts), where=present)
    return per_grade[y] if len(y) else np.zeros(0)


def qwk_at_eyepacs_mix(y_true: Any, y_pred: Any, n_classes: int = 5) -> float:
    """QWK with test items weighted to EyePACS's released grade mix."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if not len(y_true):
        return 0.0
    return quadratic_weighted_kappa_fast(y_true, y_pred, n_classes, prevalence_weights(y_true))


@register_metric("qwk_eyepacs", bootstrap="group", pair=qwk_at_eyepacs_mix)
def _qwk_eyepacs(inp: MetricInput) -> float:
    """QWK re-weighted to EyePACS's released grade mix (73.5% grade 0)"""
    return qwk_at_eyepacs_mix(inp.y_true, inp.y_pred, len(inp.classes))


def referable_dr(y_true: Any, y_pred: Any, threshold: int = REFERABLE_GRADE) -> dict[str, float]:
    """Sensitivity and specificity for referable diabetic retinopathy (grade >= threshold)."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    pos_true, pos_pred = y_true >= threshold, y_pred >= threshold
    tp = np.sum(pos_true & pos_pred)
    tn = np.sum(~pos_true & ~pos_pred)
    return {
        "sensitivity": float(_ratio(tp, pos_true.sum())),
        "specificity": float(_ratio(tn, (~pos_true).sum())),
    }


@register_metric("referable")
def _referable(inp: MetricInput) -> dict[str, Any]:
    """referable DR (grade >= 2): sensitivity and specificity"""
    return {"referable": referable_dr(inp.y_true, inp.y_pred)}


@register_metric("mean_ovr_accuracy")
def _mean_ovr(inp: MetricInput) -> float:
    """the per-grade one-vs-rest accuracies averaged: what the source study calls accuracy"""
    report = per_class_report(inp.y_true, inp.y_pred, len(inp.classes))
    return float(report["ovr_accuracy"].mean()) if len(inp.classes) else 0.0


def all_zeros_metrics(y_true: list[int]) -> dict:
    """Metrics of the trivial predictor that always says grade 0, from a record's test labels."""
    y = np.asarray(y_true, dtype=np.int64)
    scores = np.zeros((len(y), len(GRADES)))
    scores[:, 0] = 1.0
    return evaluate(y, scores, GRADES, metrics=("qwk", "qwk_eyepacs", "referable", "mean_ovr_accuracy"))
