"""The method contract and registry.

A method follows scikit-learn's estimator contract: `__init__` stores plain parameters only,
`fit(split) -> self`, `predict_scores(split)` returns an `(n, n_classes)` float array (or a
`Scores` with auxiliary heads), `predict` is the argmax. Register a class, or a small function
that returns a configured method (a preset, as timm registers models):

    from cvbench.methods import Method, register_method
    from cvbench.params import Int

    @register_method("nearest-mean", family="classical")
    class NearestMean(Method):
        parameters = {"size": Int(4, 256)}
        def __init__(self, size=32):
            self.size = size
        def fit(self, split):
            ...
            return self
        def predict_scores(self, split):
            ...

    @register_method("fastnet", family="deep")
    def fastnet(**params):
        return DeepClassifier(**{**FASTNET_RECIPE, **params})

A registered method runs under every condition of every task (compositions, occlusion, ...):
the runner applies conditions to the splits, never to the method. Parameters are declared in
`parameters` (cvbench.params) and checked by `validate_params` before any fit.

Some parameter names say how to run, not what: `RUNTIME_PARAMS` (`runtime`: which inference
runtime embeds, all of them tested equal to torch's fp32 embeddings). The runner fills in
`seed`, `device` and `n_jobs` when a method declares them; runtime parameters never enter the
run key. After `fit`, a method may set `info_` (a JSON-able dict: backend, learning curves,
budget, ...) and the runner stores it in the record.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .errors import UserError
from .method_index import MethodInfo, first_paragraph, method_index
from .params import validate_params

#: How to run, not what: never part of a run key, never shown as a varying parameter.
RUNTIME_PARAMS = ("device", "n_jobs", "resume", "joblib_backend", "runtime")
#: Not part of what a configuration is (the seed varies within one): left out of tables.
HIDDEN_PARAMS = (*RUNTIME_PARAMS, "seed")
FAMILIES = ("classical", "deep", "pretrained", "baseline")


@dataclass
class Scores:
    """What `predict_scores` may return instead of a bare array: the main (n, n_classes)
    scores plus named auxiliary heads, e.g. {"gender": (n, 2), "age": (n, 9)}, scored by the
    runner against the task's extra labels of the same name, and facts about the prediction
    (`info`: test-side timings, cache hits) for the record, so that predict_scores never has
    to change the fitted method."""

    main: np.ndarray
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, out: Any) -> Scores:
        return out if isinstance(out, Scores) else cls(np.asarray(out))

    def __array__(self, dtype=None, copy=None):
        """A Scores reads as its main scores wherever numpy expects an array."""
        return np.asarray(self.main, dtype=dtype)

    def __getattr__(self, name: str):  # .argmax(1), .shape, .sum(...) ... of the main scores
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(np.asarray(self.__dict__["main"]), name)

    def __getitem__(self, index):
        return np.asarray(self.main)[index]

    def __len__(self) -> int:
        return len(self.main)


class Method(BaseEstimator):
    """Base class: get_params/set_params from scikit-learn, predict = argmax of scores.

    Class attributes a method may set:
      parameters:            {name: cvbench.params spec} (merged with the bases')
      feature_cache_params:  parameters whose change re-uses cached features (k of a k-NN on
                             cached histograms): the leaderboard times such a run by the run
                             of its block that computed the features
      batch_augment:         True when fit applies the training split's per-batch augmentation
                             itself (the deep engine); otherwise the runner hands fit the
                             split plus one augmented copy of every image
    """

    parameters: dict = {}
    feature_cache_params: tuple[str, ...] = ()
    batch_augment: bool = False
    info_: dict[str, Any]

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """Named parameters of every __init__ along the MRO, so a subclass may take **kwargs
        for its base's parameters instead of retyping them (sklearn reads only its own)."""
        names: set[str] = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object or not issubclass(klass, Method):
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    names.add(p.name)
        return sorted(names)

    def validate(self, context: dict[str, Any] | None = None) -> None:
        """Check every parameter against the declaration (raises UserError)."""
        validate_params(type(self), self.get_params(deep=False), context,
                        name=getattr(self, "registered_name", None))

    def fit(self, split):  # pragma: no cover - interface
        raise NotImplementedError

    def predict_scores(self, split):  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, split) -> np.ndarray:
        return Scores.of(self.predict_scores(split)).main.argmax(axis=1)

    @property
    def run_info(self) -> dict[str, Any]:
        return dict(getattr(self, "info_", {}) or {})


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry: `build(**params)` returns the configured method."""

    name: str
    build: Callable[..., Method]
    family: str
    description: str

    @property
    def cls(self) -> type:
        return type(self.prototype())

    def prototype(self) -> Method:
        return self.build()

    def params(self) -> dict[str, Any]:
        """Default parameters of the configured method."""
        return self.prototype().get_params(deep=False)


_METHODS: dict[str, MethodSpec] = {}
_PLUGINS_LOADED = False


def register_method(name: str, family: str = "classical", description: str = ""):
    """Decorator for a Method class, or for a function returning a configured Method (a
    preset such as `resnet-se`), making it available as `name` to suites and the CLI."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def deco(obj):
        if name in _METHODS and _METHODS[name].build is not obj:
            raise ValueError(f"method {name!r} registered twice ({_METHODS[name].build} and {obj})")
        doc = description or first_paragraph(inspect.getdoc(obj) or "")

        def build(**params):
            method = obj(**params)
            method.registered_name = name
            method.family = family
            return method

        build.__wrapped__ = obj  # type: ignore[attr-defined]
        _METHODS[name] = MethodSpec(name, build, family, doc)
        return obj

    return deco


def _load_external() -> None:
    """Import $CVBENCH_PLUGINS (comma-separated modules) and the `cvbench.plugins` entry-point
    group, so their @register_method calls run (once)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for mod in filter(None, (m.strip() for m in os.environ.get("CVBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise UserError(f"cannot import plugin module {mod!r} named in CVBENCH_PLUGINS: {exc}") from None
    from importlib.metadata import entry_points

    for ep in entry_points(group="cvbench.plugins"):
        ep.load()


def load_plugins() -> None:
    """Import every built-in method module (the index's) and the plugins."""
    for mod in sorted({i.module for i in method_index().values()}):
        importlib.import_module(mod)
    _load_external()


def method_infos() -> list[MethodInfo]:
    """Name, family and description of every method, importing only the plugins (a built-in
    method's module, torch included, is imported when the method is built)."""
    _load_external()
    out = dict(method_index())
    for name, spec in _METHODS.items():
        out.setdefault(name, MethodInfo(name, spec.family, spec.description, ""))
    return [out[k] for k in sorted(out)]


def list_methods() -> list[MethodSpec]:
    """Every method's registry entry (imports every method module)."""
    load_plugins()
    return [_METHODS[k] for k in sorted(_METHODS)]


def method_names() -> list[str]:
    return [i.name for i in method_infos()]


def get_method_spec(name: str) -> MethodSpec:
    """The registry entry of `name`, importing only the module that defines it."""
    if isinstance(name, str) and name not in _METHODS:
        info = method_index().get(name)
        if info is not None:
            importlib.import_module(info.module)
        else:
            _load_external()
    if not isinstance(name, str) or name not in _METHODS:
        raise UserError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}")
    return _METHODS[name]


def create_method(name: str, **params) -> Method:
    """Build a registered method, rejecting unknown parameters with the list of valid ones.

    Values are not checked here (`__init__` only stores): `validate_params` does that."""
    spec = get_method_spec(name)
    valid = spec.params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(
            f"method {name!r} has no parameter {unknown[0]!r}; valid parameters: {', '.join(sorted(valid))}"
        )
    return spec.build(**params)


def full_params(method: Method) -> dict[str, Any]:
    """All parameters of a built method (defaults included), JSON-ready."""
    return {k: _plain(v) for k, v in sorted(method.get_params(deep=False).items())}


def key_params(method: Method) -> dict[str, Any]:
    """Parameters that define the result (runtime-only ones and the seed removed).

    A method may define `run_key_params(params) -> params` to drop more of them when they
    cannot change its result (e.g. a deep method's budget clock when it has no time budget).
    """
    params = {k: v for k, v in full_params(method).items() if k not in RUNTIME_PARAMS and k != "seed"}
    hook = getattr(method, "run_key_params", None)
    return hook(params) if callable(hook) else params


def method_facts(name: str, method: Method) -> dict[str, Any]:
    """What the leaderboard needs to know about a method, stored in each record so that
    rendering never asks the registry: family, defaults, feature_cache_params."""
    spec = get_method_spec(name)
    return {
        "family": spec.family,
        "defaults": {k: _plain(v) for k, v in sorted(spec.params().items()) if k not in RUNTIME_PARAMS},
        "feature_cache_params": list(getattr(method, "feature_cache_params", ()) or ()),
    }


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v
