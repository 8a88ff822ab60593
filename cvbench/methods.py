"""The method contract and registry.

A method follows scikit-learn's estimator contract: `__init__` stores plain parameters only,
`fit(split) -> self`, `predict_scores(split) -> (n, n_classes)` float array, `predict` is the
argmax. Register it under a name and a suite TOML can build it:

    from cvbench.methods import Method, register_method

    @register_method("nearest-mean", family="classical")
    class NearestMean(Method):
        def __init__(self, size=16):
            self.size = size
        def fit(self, split):
            ...
            return self
        def predict_scores(self, split):
            ...

Three parameter names are special: `seed`, `device` and `n_jobs`. The runner fills them in
from the run (when the method declares them); `device` and `n_jobs` do not enter the run key.
After `fit`, a method may set `info_` (a JSON-able dict: backend used, learning curves,
parameter count, budget...) and the runner stores it in the record.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .errors import UserError

RUNTIME_PARAMS = ("device", "n_jobs", "resume", "joblib_backend")  # how, not what: outside the run key


class Method(BaseEstimator):
    """Base class: get_params/set_params from scikit-learn, predict = argmax of scores."""

    info_: dict[str, Any]
    # Parameters whose change re-uses cached features (e.g. k of a k-NN on cached histograms):
    # the leaderboard times such a run by the run of its block that computed the features.
    feature_cache_params: tuple[str, ...] = ()

    def fit(self, split):  # pragma: no cover - interface
        raise NotImplementedError

    def predict_scores(self, split) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, split) -> np.ndarray:
        return np.asarray(self.predict_scores(split)).argmax(axis=1)

    @property
    def run_info(self) -> dict[str, Any]:
        return dict(getattr(self, "info_", {}) or {})


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type
    family: str  # "classical" or "deep" (or "baseline" for trivial predictors)
    description: str

    def params(self) -> dict[str, Any]:
        """Default parameters, from the class signature."""
        sig = inspect.signature(self.cls.__init__)
        return {
            k: p.default
            for k, p in sig.parameters.items()
            if k != "self" and p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty
        }


_METHODS: dict[str, MethodSpec] = {}
_PLUGINS_LOADED = False
PLUGIN_MODULES = ("cvbench.baselines", "cvbench.deep", "cvbench.tasks")


def register_method(name: str, family: str = "classical", description: str = ""):
    """Class decorator: make `cls` available as `name` to suites and the CLI."""

    def deco(cls):
        if name in _METHODS and _METHODS[name].cls is not cls:
            raise ValueError(f"method {name!r} registered twice ({_METHODS[name].cls} and {cls})")
        doc = description or (inspect.getdoc(cls) or "").split("\n")[0]
        _METHODS[name] = MethodSpec(name, cls, family, doc)
        cls.registered_name = name
        cls.family = family
        return cls

    return deco


def load_plugins() -> None:
    """Import the built-in method packages, $CVBENCH_PLUGINS (comma-separated modules) and
    the `cvbench.plugins` entry-point group, so their @register_method calls run."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for mod in PLUGIN_MODULES:
        importlib.import_module(mod)
    for mod in filter(None, (m.strip() for m in os.environ.get("CVBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise UserError(f"cannot import plugin module {mod!r} named in CVBENCH_PLUGINS: {exc}") from None
    from importlib.metadata import entry_points

    for ep in entry_points(group="cvbench.plugins"):
        ep.load()


def list_methods() -> list[MethodSpec]:
    load_plugins()
    return [_METHODS[k] for k in sorted(_METHODS)]


def get_method_spec(name: str) -> MethodSpec:
    load_plugins()
    if name not in _METHODS:
        raise UserError(f"unknown method {name!r}; valid methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def create_method(name: str, **params) -> Method:
    """Build a registered method, rejecting unknown parameters with the list of valid ones."""
    spec = get_method_spec(name)
    valid = spec.params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(
            f"method {name!r} has no parameter {unknown[0]!r}; valid parameters: {', '.join(sorted(valid))}"
        )
    try:
        return spec.cls(**params)
    except (TypeError, ValueError) as exc:
        raise UserError(f"method {name!r}: bad parameters {params}: {exc}") from None


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


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def method_variant(
    base: type,
    name: str | None = None,
    doc: str | None = None,
    defaults: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    validate=None,
    namespace: dict[str, Any] | None = None,
) -> type:
    """A subclass of method class `base` with new defaults and extra parameters, without
    retyping base's signature (which scikit-learn's get_params reads).

    defaults:  new defaults for base's own parameters (or for names in `extra`)
    extra:     new parameters {name: default}, stored as attributes after base.__init__
    validate:  called with {extra name: value} before base.__init__ (raise UserError)
    namespace: methods of the subclass (fit, predict_scores, ...); they may call base's
    """
    defaults, extra = dict(defaults or {}), dict(extra or {})
    P = inspect.Parameter
    params = [p for n, p in inspect.signature(base.__init__).parameters.items() if n != "self"]
    bad = [p.name for p in params if p.kind not in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)]
    if bad:
        raise TypeError(f"{base.__name__}.__init__ takes *args/**kwargs ({bad}); cannot extend it")
    names = {p.name for p in params}
    own = [k for k in extra if k not in names]
    unknown = sorted(set(defaults) - names - set(own))
    if unknown:
        raise TypeError(f"{base.__name__} has no parameter(s) {unknown}")
    extra.update({k: v for k, v in defaults.items() if k in own})
    signature = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD)]
        + [p.replace(kind=P.POSITIONAL_OR_KEYWORD, default=defaults.get(p.name, p.default))
           for p in params]
        + [P(k, P.POSITIONAL_OR_KEYWORD, default=extra[k]) for k in own]
    )

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        mine = {k: values.pop(k) for k in own}
        if validate is not None:
            validate(mine)
        base.__init__(self, **values)
        for k, v in mine.items():
            setattr(self, k, v)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    cls_name = name or f"{base.__name__}Variant"
    body = {"__init__": __init__, "__doc__": doc or base.__doc__, "__module__": base.__module__,
            "__qualname__": cls_name, **(namespace or {})}
    return type(cls_name, (base,), body)
