"""Trivial reference predictors every task can show beside real methods."""

from __future__ import annotations

import numpy as np

from cvbench.methods import Method, register_method
from cvbench.split import Split


@register_method("majority-class", family="baseline",
                 description="Always predicts the most frequent training class (the floor to beat)")
class MajorityClass(Method):
    """Always the most frequent training class; scores are the training class frequencies.

    On retinopathy this is the all-zeros (No DR) predictor, whose QWK is 0 by definition."""

    def __init__(self) -> None:
        pass

    parameters: dict = {}

    def fit(self, split: Split) -> MajorityClass:
        counts = split.class_counts().astype(np.float64)
        self.priors_ = counts / max(1.0, counts.sum())
        self.majority_ = int(np.argmax(counts))
        self.info_ = {"majority_class": split.classes[self.majority_],
                      "train_priors": [round(float(p), 6) for p in self.priors_]}
        return self

    def predict_scores(self, split: Split) -> np.ndarray:
        return np.tile(self.priors_, (len(split), 1))
