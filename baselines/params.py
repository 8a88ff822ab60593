"""Parameter declarations shared by the classical methods (cvbench.params specs)."""

from __future__ import annotations

from cvbench.params import AnyOf, Bool, Choice, Float, Int, Jobs, Text

from .classifiers import CLASSIFIERS, KERNEL_MODES
from .encode import ENCODINGS, HIST_NORMS
from .knn import METRICS
from .sift import BACKENDS, parse_scales
from .vocab import KMEANS_BACKENDS

NORMS = ("none", "l1", "l2")  # tiny-image normalisations
JOBLIB_BACKENDS = ("loky", "threading", "multiprocessing", "dask", "ray")

RUNTIME = {
    "seed": Int(0),
    "n_jobs": Jobs(),
    "joblib_backend": Choice(*JOBLIB_BACKENDS),
}
KNN = {
    "k": Int(1, at_most="n_train"),
    "metric": Choice(*METRICS),
    "weighted": Bool(),
}
TINY = {
    "size": Int(4, 256),
    "crop": Bool(),
    "zero_mean": Bool(),
    "norm": Choice(*NORMS),
    "C": Float(0.0, lo_open=True),
}
SIFT = {
    "step": Int(1, 128),
    "bin_size": Int(1, 64),
    "scales": AnyOf(Text(lambda s: parse_scales(s, 4), "bin sizes like '4,6,8,10'", none=True), Int(1, 64)),
    "backend": Choice(*BACKENDS),
    "smooth": Bool(none=True),
    "contrast_threshold": Float(0.0),
    "rootsift": Bool(),
    "vocab_sample": Int(1, 100_000_000),
    "vocab_step": Int(1, 128),
    "max_side": Int(16, 16384, none=True),
}
BOW = {
    "vocab_size": Int(1, 100_000),
    "kmeans": Choice(*KMEANS_BACKENDS),
    "kmeans_iter": Int(1, 10_000),
    "encoding": Choice(*ENCODINGS),
    "sigma": Float(0.0, lo_open=True),
    "hist_norm": Choice(*HIST_NORMS),
    "pyramid_levels": Int(0, 4),
    "classifier": Choice(*CLASSIFIERS),
    "C": Float(0.0, lo_open=True),
    "kernel_mode": Choice(*KERNEL_MODES),
}
FISHER = {
    "pca_dim": Int(1, 128),
    "n_components": Int(1, 4096),
    "gmm_iter": Int(1, 10_000),
    "pyramid_levels": Int(0, 4),
    "C": Float(0.0, lo_open=True),
}
