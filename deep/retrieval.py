"""Retrieval scoring: a class scores its best cosine match over its training images (MAP@5
over hotels on hotelid), and `cnn-retrieval`, a network trained as a classifier whose
embedding ranks the training images."""

from __future__ import annotations

import numpy as np

from cvbench.methods import register_method
from cvbench.split import Split

from .classifier import DeepClassifier


def retrieval_scores(
    query: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, n_classes: int
) -> np.ndarray:
    """(n_query, n_classes): a class's score is its best cosine similarity over its gallery
    images; classes without gallery images score -2 (below any cosine)."""
    q = np.asarray(query, np.float64)
    g = np.asarray(gallery, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    sim = q @ g.T
    scores = np.full((len(q), n_classes), -2.0)
    labels = np.asarray(gallery_labels, np.int64)
    for c in np.unique(labels):  # one max per class present (<= n_classes columns)
        scores[:, c] = sim[:, labels == c].max(axis=1)
    return scores


@register_method("cnn-retrieval", family="deep")
class CNNRetrieval(DeepClassifier):
    """Deep embedding + nearest-neighbour retrieval: the network is trained as a classifier,
    then every test image is matched (cosine) against all training images; a class scores
    its best match (top-5 classes = the 5 best-matching classes)."""

    def fit(self, split: Split):
        super().fit(split)
        self.gallery_ = self.embed(split)
        self.gallery_labels_ = split.labels
        self.info_["retrieval"] = {"gallery": len(self.gallery_), "dim": int(self.gallery_.shape[1]),
                                   "similarity": "cosine, max over a class's training images"}
        return self

    def predict_scores(self, split: Split) -> np.ndarray:
        return retrieval_scores(self.embed(split), self.gallery_, self.gallery_labels_, split.n_classes)
