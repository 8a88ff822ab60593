"""Bag-of-words encodings: word assignment, (spatial pyramid) histograms, normalisation.

Assignment is a BLAS nearest-centre search: argmin_k |c_k|^2 - 2 x.c_k (|x|^2 is the same
for every k), in row chunks so memory stays bounded at step 1. ``assign_blocks`` does it
straight from SIFT byte values: with x = y / |y| (y the descriptor, or its square root for
RootSIFT), argmin_k |c_k|^2 - 2 x.c_k = argmin_k |y| |c_k|^2 - 2 y.c_k, which is one GEMM of
[y, |y|] against [-2 C, |c|^2]^T per block of 1024 descriptors (the block's scores stay in L2
for the argmin). It gives the words of ``assign_hard(transform_descriptors(d))`` without
building the normalised float matrix; with the numpy dense SIFT backend the blocks come
straight from extraction (sift.dense_sift_blocks), so a step-1 image never exists as an
(n, 128) matrix. Whichever way the blocks were made (extracted, or read from the descriptor
cache), the GEMM sees the same layout, so the words do not depend on the cache state.

Soft assignment is the kernel codebook with codeword uncertainty (van Gemert et al. 2010):
each descriptor spreads a unit vote over words with weights exp(-d^2 / 2 sigma^2),
normalised per descriptor.

Spatial pyramid (Lazebnik et al. 2006): level l splits the image into 2^l x 2^l cells; cell
histograms are divided by the image's descriptor count and weighted 1/2^L at level 0 and
1/2^(L-l+1) at level l >= 1, then concatenated (dimension K * sum_l 4^l), so the histogram
intersection of two vectors is the pyramid match kernel. The whole vector is then normalised
(``hist_norm``: "l1", "l2", "sqrt" = Hellinger: sqrt of the L1-normalised vector, or "none").
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from cvbench.errors import UserError

HIST_NORMS = ("l1", "l2", "sqrt", "none")
ENCODINGS = ("hard", "soft")
_CHUNK = 8192


def pyramid_dim(vocab_size: int, levels: int) -> int:
    """Length of a spatial-pyramid vector: K * sum_{l=0..L} 4^l."""
    return int(vocab_size) * sum(4**level for level in range(int(levels) + 1))


def pyramid_weights(levels: int) -> np.ndarray:
    """Lazebnik's level weights: 1/2^L for level 0, 1/2^(L-l+1) for l >= 1."""
    L = int(levels)
    return np.array([1.0 / 2**L if lvl == 0 else 1.0 / 2 ** (L - lvl + 1) for lvl in range(L + 1)])


def _sq_dists(X: np.ndarray, centres: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, K), clipped at 0 (BLAS trick)."""
    d = X @ centres.T
    d *= -2.0
    d += c2[None, :]
    d += np.einsum("ij,ij->i", X, X)[:, None]
    np.maximum(d, 0.0, out=d)
    return d


def assign_hard(X: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for every row of X (int32), chunked BLAS."""
    X = np.asarray(X, dtype=np.float32)
    centres = np.asarray(centres, dtype=np.float32)
    c2 = np.einsum("ij,ij->i", centres, centres)
    out = np.empty(len(X), dtype=np.int32)
    for s in range(0, len(X), _CHUNK):
        g = X[s : s + _CHUNK] @ centres.T
        g *= -2.0
        g += c2[None, :]
        out[s : s + _CHUNK] = g.argmin(axis=1)
    return out


def assign_blocks(blocks, n: int, centres: np.ndarray, rootsift: bool = False) -> np.ndarray:
    """Nearest-word index (int32) of n descriptors given as (slice, (128, m) float32 block of
    byte values) pairs (sift.dense_sift_blocks / sift.u8_blocks). Same words as
    ``assign_hard(transform_descriptors(desc, rootsift), centres)`` (see the module docstring);
    an all-zero descriptor gets the word nearest the origin, as there."""
    centres = np.asarray(centres, dtype=np.float32)
    K, d = centres.shape
    c2 = np.einsum("ij,ij->i", centres, centres)
    aug = np.empty((d + 1, K), np.float32)
    aug[:d] = -2.0 * centres.T
    aug[d] = c2
    nearest_origin = int(c2.argmin())
    out = np.empty(n, dtype=np.int32)
    buf = scores = None
    for sl, q in blocks:
        m = q.shape[1]
        if buf is None or buf.shape[1] < m:
            buf = np.empty((d + 1, m), np.float32)
            scores = np.empty((m, K), np.float32)
        y = buf[:d, :m]
        # sums of squared byte values are integers < 2^24: exact in float32 in any order
        if rootsift:
            np.sqrt(q, out=y)
            norm = np.sqrt(q.sum(axis=0))
        else:
            y[...] = q
            norm = np.sqrt(np.einsum("ij,ij->j", q, q))
        buf[d, :m] = norm
        np.matmul(buf[:, :m].T, aug, out=scores[:m])
        words = scores[:m].argmin(axis=1)
        words[norm == 0] = nearest_origin
        out[sl] = words
    return out


def assign_descriptors(desc: np.ndarray, centres: np.ndarray, rootsift: bool = False) -> np.ndarray:
    """``assign_blocks`` over uint8 descriptors (n, 128)."""
    from .sift import u8_blocks

    return assign_blocks(u8_blocks(np.asarray(desc)), len(desc), centres, rootsift)


def assign_soft(X: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """Kernel-codebook weights (n, K), each row summing to 1 (codeword uncertainty)."""
    if sigma <= 0:
        raise UserError(f"soft assignment needs sigma > 0, got {sigma!r}")
    X = np.asarray(X, dtype=np.float32)
    centres = np.asarray(centres, dtype=np.float32)
    c2 = np.einsum("ij,ij->i", centres, centres)
    out = np.empty((len(X), len(centres)), dtype=np.float32)
    for s in range(0, len(X), _CHUNK):
        d = _sq_dists(X[s : s + _CHUNK], centres, c2)
        d -= d.min(axis=1, keepdims=True)  # stable: nearest word has weight exp(0)
        w = np.exp(d * (-0.5 / sigma**2))
        w /= w.sum(axis=1, keepdims=True)
        out[s : s + _CHUNK] = w
    return out


def normalise(h: np.ndarray, how: str) -> np.ndarray:
    """Normalise a histogram vector (or rows of a matrix): l1, l2, sqrt (Hellinger), none."""
    if how not in HIST_NORMS:
        raise UserError(f"unknown hist_norm {how!r}; valid: {', '.join(HIST_NORMS)}")
    h = np.asarray(h, dtype=np.float32)
    if how == "none":
        return h
    if how in ("l1", "sqrt"):
        s = np.abs(h).sum(axis=-1, keepdims=True)
        h = h / np.maximum(s, 1e-12)
        return np.sqrt(h) if how == "sqrt" else h
    n = np.sqrt((h * h).sum(axis=-1, keepdims=True))
    return h / np.maximum(n, 1e-12)


def pyramid_histogram(
    xy: np.ndarray,
    shape: tuple[int, int],
    votes: np.ndarray,
    vocab_size: int,
    levels: int = 0,
    hist_norm: str = "l1",
) -> np.ndarray:
    """Spatial-pyramid bag of words of one image (float32, length pyramid_dim).

    xy: (n, 2) descriptor centres (x, y) in an image of `shape` (h, w); votes: (n,) word
    indices (hard) or (n, K) weights (soft).
    """
    K = int(vocab_size)
    h, w = shape
    n = len(xy)
    weights = pyramid_weights(levels)
    parts = []
    soft = votes.ndim == 2
    for lvl in range(int(levels) + 1):
        g = 2**lvl
        cx = np.clip((xy[:, 0] * g / w).astype(np.int64), 0, g - 1)
        cy = np.clip((xy[:, 1] * g / h).astype(np.int64), 0, g - 1)
        cell = cy * g + cx
        if soft:  # (cells x n) one-hot matrix times (n x K) weights
            onehot = sparse.csr_matrix((np.ones(n), (cell, np.arange(n))), shape=(g * g, n))
            hist = np.asarray(onehot @ votes, dtype=np.float64).ravel()
        else:
            hist = np.bincount(cell * K + votes, minlength=g * g * K).astype(np.float64)
        parts.append(hist * (weights[lvl] / max(n, 1)))
    return normalise(np.concatenate(parts), hist_norm)
