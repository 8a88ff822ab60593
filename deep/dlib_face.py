"""dlib's face-descriptor ResNet as a backbone (`dlib_face_resnet`, 128-d).

The images are face crops (FairFace: the detected face box padded by 0.25 of its size on each
side, so the face is the central 1/1.5 of the crop): the central box is the face rectangle,
dlib's 5-point `shape_predictor` finds the landmarks in it and
`face_recognition_model_v1.compute_face_descriptor` aligns a 150x150 chip and maps it to the
128-d descriptor (dlib's own API throughout). Model files come from the `face-recognition-
models` package, found without importing it (its __init__ needs pkg_resources), and are
SHA-256-checked before dlib reads them (they are dlib archives, not pickles).

dlib's DNN holds the GIL and runs on one core (measured here: ~7 images/s, and two threads
are no faster), so extraction runs in joblib processes (loky), each loading the two models
once and decoding its own images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvbench.images import decode_item

FAIRFACE_MARGIN = 0.25 / 1.5  # the face box inside a padding=0.25 crop, as a share of the side
_MODELS: dict[tuple[str, str], tuple] = {}  # per process: (predictor, descriptor) by file pair


def _models(predictor: str, descriptor: str):
    key = (predictor, descriptor)
    if key not in _MODELS:
        import dlib

        _MODELS[key] = (dlib.shape_predictor(predictor),
                        dlib.face_recognition_model_v1(descriptor))
    return _MODELS[key]


def face_descriptor(img: np.ndarray, predictor: str, descriptor: str,
                    margin: float = FAIRFACE_MARGIN, tta: str = "none") -> np.ndarray:
    """128-d descriptor of the face in the central box of uint8 RGB `img` (float32);
    tta="flip" averages it with the mirror image's."""
    import dlib

    sp, fr = _models(predictor, descriptor)
    h, w = img.shape[:2]
    box = dlib.rectangle(int(round(margin * w)), int(round(margin * h)),
                         int(round((1 - margin) * w)) - 1, int(round((1 - margin) * h)) - 1)
    views = [img, np.ascontiguousarray(img[:, ::-1])] if tta == "flip" else [img]
    out = [np.asarray(fr.compute_face_descriptor(v, sp(v, box)), np.float32) for v in views]
    return np.mean(out, axis=0)


def _chunk(items, predictor: str, descriptor: str, margin: float, tta: str) -> np.ndarray:
    return np.stack([face_descriptor(decode_item(it), predictor, descriptor, margin, tta)
                     for it in items]).astype(np.float32)


class DlibFaceBackbone:
    """A loaded dlib face backbone (see the module doc); `extract` embeds split items."""

    kind = "dlib"

    def __init__(self, spec, paths: list[Path], digests: list[str]):
        self.spec = spec
        self.name = spec.name
        self.num_features = spec.num_features
        self.digests = digests
        self.predictor, self.descriptor = (str(p) for p in paths)
        self.margin = float(spec.extra.get("margin", FAIRFACE_MARGIN))

    def extract(self, items, tta: str = "none", n_jobs: int = 1, progress=None,
                chunk: int = 32) -> np.ndarray:
        """float32 (len(items), 128) for image paths or uint8 arrays; `progress(n)` is called
        as chunks finish."""
        from joblib import Parallel, delayed

        n = len(items)
        if n == 0:
            return np.zeros((0, self.num_features), np.float32)
        bounds = list(range(0, n, chunk)) + [n]
        jobs = [delayed(_chunk)(items[a:b], self.predictor, self.descriptor, self.margin, tta)
                for a, b in zip(bounds[:-1], bounds[1:])]
        out = []
        if n_jobs <= 1:
            for job in jobs:
                fn, args, kwargs = job
                out.append(fn(*args, **kwargs))
                if progress:
                    progress(len(out[-1]))
        else:
            for part in Parallel(n_jobs=n_jobs, backend="loky", return_as="generator")(jobs):
                out.append(part)
                if progress:
                    progress(len(part))
        return np.concatenate(out)
