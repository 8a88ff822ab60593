"""Ordinal regression for graded labels (e.g. diabetic-retinopathy grades 0-4), for any task.

One name for the objective: `objective="ordinal"`. The model predicts a scalar grade (a
regression head trained with MSE on the grade), and the grade is the number of sorted
thresholds below it; the thresholds are fitted on a validation split (grouped as the task says,
e.g. by patient) to maximise quadratic weighted kappa, starting from the grade mid-points.

Scores of a thresholded model (`threshold_scores`): scores[:, k] = -(distance, in grade units,
from the scalar grade to the interval (t_k, t_{k+1}] of grade k), so the thresholded grade
scores exactly 0, every other grade < 0, and argmax is the thresholded grade.

`OrdinalObjective` is the engine-side mix-in (targets, loss, scalar grade, scores, threshold
fit) that every deep method with an `objective` parameter shares (`finetune`, and a task's own
graders); the frozen-embedding probe uses the functions directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvbench.metrics import quadratic_weighted_kappa_fast

OBJECTIVES = ("classification", "ordinal")


def default_thresholds(n_classes: int) -> np.ndarray:
    """The grade mid-points 0.5, 1.5, ...: rounding the scalar grade."""
    return np.arange(n_classes - 1, dtype=np.float64) + 0.5


def grades_from_values(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Grade = number of (sorted) thresholds strictly below each scalar value."""
    t = np.sort(np.asarray(thresholds, dtype=np.float64))
    return np.searchsorted(t, np.asarray(values, dtype=np.float64), side="left").astype(np.int64)


def threshold_scores(values: torch.Tensor | np.ndarray, thresholds) -> torch.Tensor | np.ndarray:
    """(n, k+1) scores = -distance from each value to grade j's interval (t_j, t_{j+1}].

    The interval holding the value scores 0 and all others < 0 (a value exactly on t_{j+1}
    ties grades j and j+1, and argmax picks the lower, as `grades_from_values` does)."""
    as_numpy = not isinstance(values, torch.Tensor)
    v = torch.as_tensor(np.asarray(values, dtype=np.float64) if as_numpy else values)
    t = torch.sort(torch.as_tensor(np.asarray(thresholds, dtype=np.float64), dtype=v.dtype,
                                   device=v.device)).values
    inf = torch.full((1,), float("inf"), dtype=v.dtype, device=v.device)
    lo, hi = torch.cat([-inf, t]), torch.cat([t, inf])
    v = v.reshape(-1, 1)
    dist = torch.clamp(lo[None, :] - v, min=0) + torch.clamp(v - hi[None, :], min=0)
    scores = -dist
    return scores.numpy() if as_numpy else scores


def optimise_thresholds(y_true: np.ndarray, values: np.ndarray, n_classes: int = 5,
                        init: tuple[float, ...] | None = None, max_iter: int = 1000) -> np.ndarray:
    """Sorted thresholds maximising QWK of `grades_from_values(values, t)` against y_true.

    Nelder-Mead (scipy) on the step-shaped objective, started from the grade mid-points and
    from the quantiles matching the true class shares; the better of the two (never worse
    than the mid-points) is returned."""
    from scipy.optimize import minimize

    y = np.asarray(y_true, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    mid = np.asarray(init if init is not None else np.arange(n_classes - 1) + 0.5, dtype=np.float64)

    def loss(t: np.ndarray) -> float:
        return -quadratic_weighted_kappa_fast(y, grades_from_values(v, t), n_classes)

    starts = [mid]
    shares = np.cumsum(np.bincount(y, minlength=n_classes))[:-1] / max(1, len(y))
    if len(v) and 0 < shares.min() and shares.max() < 1:
        starts.append(np.quantile(v, shares))
    best_t, best = mid, loss(mid)
    for start in starts:
        res = minimize(loss, start, method="Nelder-Mead",
                       options={"maxiter": max_iter, "xatol": 1e-3, "fatol": 1e-6,
                                "initial_simplex": _simplex(start)})
        if res.fun < best - 1e-12:
            best_t, best = np.sort(res.x), float(res.fun)
    return np.sort(best_t)


def fit_validation_thresholds(y_true: np.ndarray, values: np.ndarray,
                              n_classes: int) -> tuple[np.ndarray, dict[str, Any]]:
    """`optimise_thresholds` on a validation split's scalar grades, and what a record keeps of
    it: the default and fitted thresholds, the split's size and its QWK under each."""
    default = default_thresholds(n_classes)
    default_qwk = quadratic_weighted_kappa_fast(y_true, grades_from_values(values, default), n_classes)
    t = optimise_thresholds(y_true, values, n_classes=n_classes)
    fitted_qwk = quadratic_weighted_kappa_fast(y_true, grades_from_values(values, t), n_classes)
    return t, {"default_thresholds": default.tolist(),
               "thresholds": [round(float(v), 4) for v in t], "val_n": len(y_true),
               "val_qwk_default": round(float(default_qwk), 4),
               "val_qwk_fitted": round(float(fitted_qwk), 4)}


def _simplex(start: np.ndarray, step: float = 0.3) -> np.ndarray:
    """A simplex wide enough to leave the flat step of the start point."""
    return np.vstack([start] + [start + step * np.eye(len(start))[i] for i in range(len(start))])


class OrdinalObjective:
    """Mix-in for a DeepClassifier subclass with an `objective` parameter ("classification" or
    "ordinal"): with "ordinal" the network has one output, trained with MSE on the grade, and
    its test scores are `threshold_scores` under thresholds fitted on the validation carve
    (`fit_thresholds`, after training). A subclass may also threshold a classifier's expected
    grade by overriding `thresholded`."""

    objective: str

    @property
    def ordinal(self) -> bool:
        return self.objective == "ordinal"

    @property
    def thresholded(self) -> bool:
        return self.ordinal

    def model_outputs(self, n_outputs: int) -> int:
        """How many outputs the network needs: one scalar grade when ordinal."""
        return 1 if self.ordinal else n_outputs

    def targets(self, split) -> torch.Tensor:
        if self.ordinal:
            return torch.as_tensor(split.labels, dtype=torch.float32)
        return super().targets(split)

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.ordinal:
            return F.mse_loss(outputs[:, 0].float(), targets.float())
        return super().compute_loss(outputs, targets)

    def scalar_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        """The model's continuous grade: the regression output, or the softmax expectation."""
        if self.ordinal:
            return outputs[:, 0].float()
        p = torch.softmax(outputs[:, : self.n_classes_].float(), dim=1)
        return p @ torch.arange(self.n_classes_, dtype=p.dtype, device=p.device)

    def scores_from_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        if not self.thresholded:
            return super().scores_from_outputs(outputs)
        t = getattr(self, "thresholds_", None)
        t = default_thresholds(self.n_classes_) if t is None else t
        return threshold_scores(self.scalar_grade(outputs), t)

    def fit_thresholds(self, val, outputs: torch.Tensor) -> dict[str, Any]:
        """Thresholds maximising QWK on the validation split `val` from the trained net's
        `outputs` on it; what the record keeps of the fit."""
        self.thresholds_, info = fit_validation_thresholds(
            val.labels, self.scalar_grade(outputs).numpy().astype(np.float64), self.n_classes_)
        return {"objective": self.objective, **info,
                "val_group": self.val_group or val.meta.get("val_group_key"),
                "note": "thresholds fitted on this validation carve, so its fitted QWK is optimistic"}
