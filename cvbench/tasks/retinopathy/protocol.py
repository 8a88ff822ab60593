"""Retinopathy's task-only metrics: the source study's averaged one-vs-rest "accuracy" and
referable-DR (grade >= 2) sensitivity / specificity. The test split is carved by patient in
the reader, and validation splits are carved by patient too (task.toml val_group_key)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cvbench.metrics import (
    MetricInput,
    _check_pair,
    _ratio,
    evaluate,
    per_class_report,
    register_metric,
)

from .reader import GRADES

REFERABLE_GRADE = 2


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
    return evaluate(y, scores, GRADES, metrics=("qwk", "referable", "mean_ovr_accuracy"))
