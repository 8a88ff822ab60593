"""Protocol conditions: Split -> Split transforms owned by a task, never by a method.

A condition acts on one of three things:

- "train": the training split (FairFace's compositions draw a subset);
- "test": the test split (Hotel-ID's occluded test photographs);
- "train_batches": the training batches, through `Split.augment` (occlusion pasted during
  training). The deep engine applies it per batch; any other method is handed the training
  split plus one augmented copy of every image.

A suite block sweeps conditions beside parameters (`conditions = { composition = [...] }`);
the runner applies them, records them as the run's conditions, fits once per training
condition and predicts under every test condition. Any registered method runs under every
condition of every task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UserError

ACTS_ON = ("train", "test", "train_batches")


@dataclass(frozen=True)
class Condition:
    """name: the suite key; acts_on: see the module docstring; values: the accepted values
    (empty: any string `check` accepts); apply(split, value, seed) -> Split; what: one line
    for pages and errors; neutral: the value that changes nothing (dropped from a run's
    conditions, so the run is the one without the condition)."""

    name: str
    acts_on: str
    apply: Callable[..., Any]
    values: tuple[Any, ...] = ()
    check: Callable[[Any], None] | None = None
    what: str = ""
    neutral: Any = None  # the value that changes nothing (a run with it is the run without it)

    def __post_init__(self):
        if self.acts_on not in ACTS_ON:
            raise ValueError(f"condition {self.name!r}: acts_on must be one of {ACTS_ON}")

    def validate(self, value: Any, task: str) -> None:
        if self.values and value not in self.values:
            raise UserError(f"task {task!r}: condition {self.name} = {value!r} is not valid; "
                            f"expected one of {', '.join(map(repr, self.values))}")
        if not isinstance(value, (str, int, float, bool)):
            raise UserError(f"task {task!r}: condition {self.name} = {value!r} must be a string or number")
        if self.check is not None:
            self.check(value)


def split_conditions(conditions: Mapping[str, Any], known: Mapping[str, Condition]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training-side conditions, test-side conditions) of a run's conditions."""
    train = {k: v for k, v in conditions.items() if known[k].acts_on != "test"}
    test = {k: v for k, v in conditions.items() if known[k].acts_on == "test"}
    return train, test


def apply_train(train, conditions: Mapping[str, Any], known: Mapping[str, Condition], seed: int,
                stages: tuple[str, ...] = ("train", "train_batches")):
    """The training split under the run's training-side conditions (train, then batches);
    `stages` picks one of them (the plan draws the training split, the run adds batches)."""
    for stage in stages:
        for name, value in sorted(conditions.items()):
            cond = known[name]
            if cond.acts_on == stage:
                train = cond.apply(train, value, seed)
    return train


def apply_test(test, conditions: Mapping[str, Any], known: Mapping[str, Condition], seed: int):
    for name, value in sorted(conditions.items()):
        cond = known[name]
        if cond.acts_on == "test":
            test = cond.apply(test, value, seed)
    return test
