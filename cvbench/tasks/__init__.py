"""Task registry: each task names its reader, classes, extra metrics, protocol and suite.

A task module calls `register_task(Task(...))`. The reader gets the task's folder under the
data root and returns (train, test) Splits in the task's standard protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, UserError
from ..paths import data_root, suites_dir
from ..split import Split


@dataclass(frozen=True)
class Task:
    """A benchmark task.

    name:          registry name ("scene15")
    title:         one line for the leaderboard
    source:        the study it re-runs (see SEEDS.md)
    folder:        sub-folder of the data root holding the official release layout
    layout:        the expected layout, shown in errors and `cvbench data where`
    load:          reader(folder: Path, seed: int, skip_bad: bool) -> (train, test)
    metrics:       extra metrics beyond accuracy & co: "qwk", "map5", "topk", "groups:<key>",
                   "referable" (retinopathy), "per_class" is always on
    primary:       the metric the leaderboard sorts by
    val_group_key: group that must not straddle train/validation (e.g. "patient")
    fetch_help:    how to obtain the data (URL with checksum, or the steps for Kaggle)
    fetch_urls:    [(url, sha256, filename)] downloadable archives, if any
    quick_limit:   items per class kept in --quick runs (train, test)
    """

    name: str
    title: str
    source: str
    folder: str
    layout: str
    load: Callable[..., tuple[Split, Split]]
    metrics: tuple[str, ...] = ()
    primary: str = "accuracy"
    val_group_key: str | None = None
    fetch_help: str = ""
    fetch_urls: tuple[tuple[str, str, str], ...] = ()
    quick_limit: tuple[int, int] = (20, 10)
    notes: str = ""
    extras: dict = field(default_factory=dict)

    def data_path(self, data_dir=None) -> Path:
        return data_root(data_dir) / self.folder if self.folder else data_root(data_dir)

    def suite_path(self) -> Path:
        return suites_dir() / f"{self.name}.toml"

    def load_splits(self, data_dir=None, seed: int = 0, skip_bad: bool = False) -> tuple[Split, Split]:
        """Read (train, test), turning a missing folder into one clear sentence."""
        path = self.data_path(data_dir)
        if self.folder and not path.is_dir():
            root = data_root(data_dir)
            where = "" if root.is_dir() else f" (the data root {root} does not exist either)"
            raise DataError(
                f"no data for task {self.name!r}: expected folder {path}{where} with layout "
                f"{self.layout}; set --data-dir or $CVBENCH_DATA, or run `cvbench data fetch {self.name}`"
            )
        return self.load(path, seed=seed, skip_bad=skip_bad)

    def make_fixture(self, dest, **kwargs) -> str:
        """`cvbench data fixture TASK DEST`: write generated stand-in data (extras
        "generate_fixture"(folder, **kwargs)) to DEST/<folder>, or DEST itself when it already
        has the task's folder name; returns the sentence saying what was written and how to
        run it. Readers label such data "GENERATED FIXTURE" in its variant."""
        generate = self.extras.get("generate_fixture")
        if generate is None:
            raise UserError(f"task {self.name!r} has no generated fixture; only tasks whose data "
                            "is not downloadable here have one")
        dest = Path(dest)
        folder = dest if dest.name == self.folder else dest / self.folder
        generate(folder, **kwargs)
        note = self.extras.get("fixture_note", "synthetic images")
        return (f"wrote a GENERATED FIXTURE ({note}) in the {self.name} layout to {folder}; "
                f"run it with `cvbench suite {self.name} --data-dir {folder.parent}`")

    def has_data(self, data_dir=None) -> bool:
        return not self.folder or self.data_path(data_dir).is_dir()


_TASKS: dict[str, Task] = {}
TASK_MODULES = ("demo", "scene15", "cifar10", "fairface", "retinopathy", "hotelid")


def register_task(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def _load_all() -> None:
    for mod in TASK_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # a task module not written yet
            if exc.name != f"{__name__}.{mod}":
                raise


def list_tasks() -> list[Task]:
    _load_all()
    order = {n: i for i, n in enumerate(TASK_MODULES)}
    return sorted(_TASKS.values(), key=lambda t: (order.get(t.name, 99), t.name))


def get_task(name: str) -> Task:
    _load_all()
    if name not in _TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(t.name for t in list_tasks())}")
    return _TASKS[name]
