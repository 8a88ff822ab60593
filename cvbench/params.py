"""Declared method parameters, checked before any fit (as scikit-learn's `_parameter_constraints`).

A method class declares what each `__init__` parameter accepts:

    class TinyKNN(Method):
        parameters = {
            "size": Int(4, 256),                       # 4 <= size <= 256
            "k": Int(1, at_most="n_train"),            # limit known once the data is read
            "metric": Choice("l1", "l2", "cosine", "chi2"),
            "weighted": Bool(),
        }

`validate_params(cls, params, context)` checks a parameter dict against the declaration: the
planner (cvbench.plan) calls it once for every run, before the first fit (`fit` does not check
again). A bad value raises `UserError` (exit 2) with one sentence naming the method, the
parameter, the value and what was expected. `__init__` only stores.

Bools are never accepted as numbers (`k = true` is an error, not k = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UserError


class Spec:
    """What one parameter accepts; `none=True` also admits None."""

    none: bool = False

    def check(self, value: Any, context: Mapping[str, Any]) -> str | None:
        """None when `value` is valid, else what was expected (a phrase)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _none(self) -> str:
        return " or None" if self.none else ""


def _limit(bound: float | str | None, context: Mapping[str, Any]) -> tuple[float | None, str]:
    """A numeric bound, or a name looked up in the context ('n_train'); (value, how to say it)."""
    if isinstance(bound, str):
        value = context.get(bound)
        return (None, bound) if value is None else (float(value), f"{bound} = {value}")
    return bound, "" if bound is None else f"{bound:g}"


@dataclass(frozen=True)
class Int(Spec):
    """An integer in [lo, hi]; `at_most` names a context limit such as 'n_train'."""

    lo: int | None = None
    hi: int | None = None
    at_most: str | None = None
    none: bool = False

    def check(self, value, context):
        if value is None:
            return None if self.none else self.describe()
        if isinstance(value, bool) or not isinstance(value, int):
            return self.describe()
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            return self.describe()
        cap, text = _limit(self.at_most, context)
        if cap is not None and value > cap:
            return f"an integer at most the training set's size ({text})"
        return None

    def describe(self) -> str:
        return f"an integer{_range(self.lo, self.hi)}{self._none()}"


@dataclass(frozen=True)
class Jobs(Spec):
    """Worker processes, as joblib counts them: -1 (every core) or 1..hi; None is the method's
    own choice. 0 means nothing to joblib and is refused here, before the fit."""

    hi: int = 256
    none: bool = True

    def check(self, value, context):
        if value is None:
            return None if self.none else self.describe()
        if isinstance(value, bool) or not isinstance(value, int) or not (value == -1 or 1 <= value <= self.hi):
            return self.describe()
        return None

    def describe(self) -> str:
        return f"-1 (every core) or a number of processes from 1 to {self.hi}{self._none()}"


@dataclass(frozen=True)
class Float(Spec):
    """A real number in [lo, hi] (or (lo, hi] with lo_open); ints are accepted."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    none: bool = False

    def check(self, value, context):
        if value is None:
            return None if self.none else self.describe()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return self.describe()
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return self.describe()
        if self.hi is not None and value > self.hi:
            return self.describe()
        return None

    def describe(self) -> str:
        lo = "" if self.lo is None else ("> " if self.lo_open else ">= ") + f"{self.lo:g}"
        hi = "" if self.hi is None else f"<= {self.hi:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        return f"a number{' ' + bounds if bounds else ''}{self._none()}"


@dataclass(frozen=True)
class Bool(Spec):
    none: bool = False

    def check(self, value, context):
        if value is None and self.none:
            return None
        return None if isinstance(value, bool) else self.describe()

    def describe(self) -> str:
        return f"true or false{self._none()}"


class Choice(Spec):
    """One of the listed values (compared with ==, bools kept apart from ints)."""

    def __init__(self, *values: Any, none: bool = False):
        self.values = values
        self.none = none

    def check(self, value, context):
        if value is None and self.none:
            return None
        for v in self.values:
            if type(v) is type(value) and v == value:
                return None
        return self.describe()

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values) + self._none()


class Text(Spec):
    """A string, optionally checked by `parse` (which raises UserError/ValueError when bad)."""

    def __init__(self, parse: Callable[[str], Any] | None = None, what: str = "a string",
                 none: bool = False):
        self.parse = parse
        self.what = what
        self.none = none

    def check(self, value, context):
        if value is None:
            return None if self.none else self.describe()
        if not isinstance(value, str):
            return self.describe()
        if self.parse is not None:
            try:
                self.parse(value)
            except (UserError, ValueError, TypeError) as exc:
                return f"{self.what} ({exc})"
        return None

    def describe(self) -> str:
        return self.what + self._none()


class AnyOf(Spec):
    """Valid when any of the given specs accepts the value."""

    def __init__(self, *specs: Spec):
        self.specs = specs
        self.none = any(s.none for s in specs)

    def check(self, value, context):
        problems = [s.check(value, context) for s in self.specs]
        return None if any(p is None for p in problems) else self.describe()

    def describe(self) -> str:
        return " or ".join(s.describe() for s in self.specs)


class Seq(Spec):
    """A non-empty list (or tuple) whose every element `item` accepts."""

    def __init__(self, item: Spec, none: bool = False):
        self.item = item
        self.none = none

    def check(self, value, context):
        if value is None:
            return None if self.none else self.describe()
        if not isinstance(value, (list, tuple)) or not value:
            return self.describe()
        return None if all(self.item.check(v, context) is None for v in value) else self.describe()

    def describe(self) -> str:
        return f"a non-empty list of {self.item.describe()}s{self._none()}"


class Anything(Spec):
    """A runtime parameter whose value the method interprets itself."""

    def check(self, value, context):
        return None

    def describe(self) -> str:
        return "any value"


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def declared(cls: type) -> dict[str, Spec]:
    """The merged `parameters` declarations of `cls` and its bases (subclasses override)."""
    out: dict[str, Spec] = {}
    for klass in reversed(cls.__mro__):
        out.update(getattr(klass, "__dict__", {}).get("parameters", {}) or {})
    return out


def validate_params(cls: type, params: Mapping[str, Any], context: Mapping[str, Any] | None = None,
                    name: str | None = None) -> None:
    """Raise UserError naming the first parameter of `params` that `cls` does not accept."""
    specs = declared(cls)
    label = name or getattr(cls, "registered_name", cls.__name__)
    context = context or {}
    for key, value in params.items():
        spec = specs.get(key)
        if spec is None:
            continue  # unknown names are rejected by create_method against the signature
        problem = spec.check(value, context)
        if problem is not None:
            raise UserError(f"method {label!r}: parameter {key} = {value!r} is not valid; expected {problem}")
    check = getattr(cls, "check_params", None)
    if callable(check):
        problem = check(dict(params), dict(context))
        if problem:
            raise UserError(f"method {label!r}: {problem}")
