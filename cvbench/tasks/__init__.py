"""Tasks: one folder each under cvbench/tasks/<task>/, discovered automatically.

    task.toml     name, title, source, page order, data folder and layout, classes (a list, or
                  "from-folders"), metrics, primary metric, protocol, extra labels, report
                  sections, fetch help, fixture note, GPU packing
    reader.py     read(folder, seed=0, skip_bad=False) -> (train, test) Splits, and
                  generate_fixture(folder, **kwargs) where the data cannot be downloaded
    protocol.py   CONDITIONS (cvbench.conditions.Condition) and task-only metrics, if any;
                  imported when the task is constructed, so its metrics are registered
    methods.py    methods only this task uses (registered like any other), if any
    report.py     SECTIONS {name: fn(page) -> markdown} for page sections of its own

A folder with a task.toml is a task; nothing else registers it. Folders named in
$CVBENCH_TASKS (os.pathsep-separated folders that hold task folders) are tasks too, so a task
can live outside the checkout. The suite of runs lives in suites/<task>.toml at the top level.
Nothing outside cvbench/tasks/ imports a task folder: the rest of cvbench reaches a task
through `Task` (its config and `Task.module`).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import DataError, UserError
from ..paths import data_root, suites_dir
from ..split import Split

TASKS_DIR = Path(__file__).resolve().parent
_KEYS = {"name", "title", "source", "order", "folder", "layout", "classes", "metrics", "primary",
         "notes", "protocol", "extra_labels", "report", "fetch", "fixture", "gpu"}


def task_dirs() -> list[Path]:
    """Where task folders are looked for: cvbench/tasks/, then $CVBENCH_TASKS. A folder named
    there joins this package's search path, so its modules import as cvbench.tasks.<name>.*."""
    extra = [Path(p).expanduser().resolve() for p in os.environ.get("CVBENCH_TASKS", "").split(os.pathsep)
             if p.strip()]
    for p in extra:
        if str(p) not in __path__:
            __path__.append(str(p))
    return [TASKS_DIR, *extra]


def task_folder(name: str) -> Path | None:
    for d in task_dirs():
        if (d / name / "task.toml").is_file():
            return d / name
    return None


@functools.cache
def config(name: str) -> dict[str, Any]:
    """The parsed task.toml of task `name` (no module is imported)."""
    folder = task_folder(name)
    if folder is None:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}")
    path = folder / "task.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(_KEYS))}")
    if data.get("name") != name:
        raise ValueError(f"{path}: name = {data.get('name')!r} but the folder is {name!r}")
    return data


def classes_of(name: str) -> tuple[str, ...]:
    """The static class list of a task (readers use it, so it is written once)."""
    classes = config(name).get("classes")
    if not isinstance(classes, list):
        raise ValueError(f"task {name!r} declares classes {classes!r}, not a list")
    return tuple(str(c) for c in classes)


@dataclass(frozen=True)
class Task:
    """A benchmark task, as its task.toml declares it (see the module docstring)."""

    name: str
    title: str
    source: str
    folder: str
    layout: str
    classes: tuple[str, ...] | str
    metrics: tuple[str, ...]
    primary: str
    order: int = 1000
    notes: str = ""
    val_group_key: str | None = None
    split_by_seed: bool = False
    quick_limit: tuple[int, int] = (20, 10)
    extra_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sections: tuple[str, ...] = ()
    comparison: dict[str, Any] = field(default_factory=dict)
    default_cell: dict[str, Any] = field(default_factory=dict)  # the conditions headlines come from
    overview_metrics: tuple[str, ...] = ()  # shown beside the primary metric in the overview
    fetch_help: str = ""
    fetch_urls: tuple[tuple[str, str, str], ...] = ()
    fixture_note: str = ""
    protocol_text: dict[str, str] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)
    path: Path = TASKS_DIR

    # ------------------------------------------------------------------ modules
    def module(self, part: str) -> ModuleType | None:
        """reader / protocol / methods / report module of this task (None when absent)."""
        if not (self.path / f"{part}.py").is_file():
            return None
        return importlib.import_module(f"{__name__}.{self.name}.{part}")

    @property
    def conditions(self) -> dict[str, Any]:
        """Every task's conditions (test-image corruptions), then the task's own."""
        from ..corruptions import CONDITION as corruption

        mod = self.module("protocol")
        own = {c.name: c for c in getattr(mod, "CONDITIONS", ())} if mod else {}
        return {corruption.name: corruption, **own}

    def report_sections(self) -> dict[str, Any]:
        mod = self.module("report")
        return dict(getattr(mod, "SECTIONS", {})) if mod else {}

    # ------------------------------------------------------------------ data
    def data_path(self, data_dir=None) -> Path:
        return data_root(data_dir) / self.folder if self.folder else data_root(data_dir)

    def suite_path(self) -> Path:
        return suites_dir() / f"{self.name}.toml"

    def has_data(self, data_dir=None) -> bool:
        """The task's data folder is there and, as far as a glance tells, usable."""
        return self.data_state(data_dir) == "found"

    def data_state(self, data_dir=None, read: bool = False) -> str:
        """"found", "missing", or "found, unusable: <why>" (the folder is a file, cannot be
        listed, or is empty). A glance, cheap enough for `cvbench list`; with `read` the
        task's reader runs too and its error is the why."""
        if not self.folder:
            return "found"
        path = self.data_path(data_dir)
        try:
            os.lstat(path)
        except FileNotFoundError:
            return "missing"
        except OSError:
            pass  # folder_problem says why
        why = folder_problem(path)
        if why is None and read:
            try:
                self.load_splits(data_dir)
            except DataError as exc:
                why = str(exc)
        return "found" if why is None else f"found, unusable: {why}"

    def load_splits(self, data_dir=None, seed: int = 0, skip_bad: bool = False) -> tuple[Split, Split]:
        """Read (train, test), turning a missing folder into one clear sentence, and attach
        the task's extra labels and validation grouping to both splits."""
        path = self.data_path(data_dir)
        state = self.data_state(data_dir)
        if state.startswith("found, unusable: "):
            raise DataError(f"no usable data for task {self.name!r}: {state.split(': ', 1)[1]}")
        if state == "missing":
            root = data_root(data_dir)
            where = "" if os.path.isdir(root) else f" (the data root {root} does not exist either)"
            raise DataError(
                f"no data for task {self.name!r}: expected folder {path}{where} with layout "
                f"{self.layout}; set --data-dir or $CVBENCH_DATA, or run `cvbench data fetch {self.name}`"
            )
        try:
            train, test = self.module("reader").read(path, seed=seed, skip_bad=skip_bad)
        except OSError as exc:  # a folder or label file the reader cannot open
            raise DataError(unreadable(exc, f"the {self.name} data")) from None
        packed = folder_description(path, "PACKED.md") if self.folder else None
        out = []
        for s in (train, test):
            if isinstance(self.classes, tuple) and s.classes != self.classes:
                raise DataError(f"{s.name}: the reader returned classes {list(s.classes)[:5]}..., "
                                f"but task.toml declares {list(self.classes)[:5]}...")
            meta = dict(s.meta)
            if packed:  # a copy changed for transport (scripts/gpu_protocols.py pack) says so
                meta["variant"] = f"{meta.get('variant', self.name)}; {packed}"
            if self.val_group_key:
                meta["val_group_key"] = self.val_group_key
            extra = {k: v for k, v in self.extra_labels.items() if k in s.groups}
            out.append(Split(items=s.items, labels=s.labels, classes=s.classes, name=s.name,
                             groups=s.groups, root=s.root, meta=meta, fingerprint=s.fingerprint,
                             aux_classes={**s.aux_classes, **extra}))
        return out[0], out[1]

    def make_fixture(self, dest, **kwargs) -> str:
        """`cvbench data fixture TASK DEST`: write generated stand-in data to DEST/<folder>
        (or DEST itself when it already has the task's folder name); returns the sentence
        saying what was written and how to run it."""
        generate = getattr(self.module("reader"), "generate_fixture", None)
        if generate is None:
            raise UserError(f"task {self.name!r} has no generated fixture; only tasks whose data "
                            "is not downloadable here have one")
        dest = Path(dest)
        folder = dest if dest.name == self.folder else dest / self.folder
        generate(folder, **kwargs)
        return (f"wrote a GENERATED FIXTURE ({self.fixture_note or 'synthetic images'}) in the "
                f"{self.name} layout to {folder}; run it with `cvbench suite {self.name} "
                f"--data-dir {folder.parent}`")


def unreadable(exc: OSError, what: str) -> str:
    """One sentence for an OSError met while reading `what`, naming the file or folder."""
    name = exc.filename if exc.filename is not None else "a file"
    kind = "folder" if isinstance(name, str) and os.path.isdir(name) else "file"
    why = (exc.strerror or type(exc).__name__).lower()
    return f"cannot read {kind} {name} of {what} ({why}); make it readable (chmod -R u+rX) or move it away"


def folder_problem(path: Path) -> str | None:
    """Why a data folder cannot be used at a glance (cannot be read, not a folder, empty);
    None when it looks usable."""
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            return f"{path} is not a folder"
        with os.scandir(path) as entries:
            if not any(not e.name.startswith(".") for e in entries):
                return f"{path} is empty"
    except OSError as exc:
        return f"{path} cannot be read ({(exc.strerror or type(exc).__name__).lower()})"
    return None


def folder_description(folder: Path, name: str = "README.md") -> str | None:
    """What a data folder says it holds: the `Variant: "..."` line of its README.md (or of
    another note file), if any."""
    note = Path(folder) / name
    if not note.is_file():
        return None
    for line in note.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip().lower().startswith("variant:"):
            value = line.split(":", 1)[1].strip()
            quoted = re.match(r"""(["'])(.*?)\1""", value)  # `Variant: "text".`: the text
            return (quoted.group(2) if quoted else value.rstrip(".")).strip() or None
    return None


def _task_from_config(name: str) -> Task:
    c = config(name)
    proto = dict(c.get("protocol", {}))
    fetch = c.get("fetch", {})
    classes = c.get("classes", "from-folders")
    if classes != "from-folders" and not isinstance(classes, list):
        raise ValueError(f"task {name!r}: classes must be a list or \"from-folders\"")
    quick = proto.pop("quick_limit", [20, 10])
    return Task(
        name=name, title=c["title"], source=c["source"], order=int(c.get("order", 1000)),
        folder=c.get("folder", ""),
        layout=c["layout"],
        classes=tuple(str(x) for x in classes) if isinstance(classes, list) else classes,
        metrics=tuple(c.get("metrics", ())), primary=c.get("primary", "accuracy"),
        notes=c.get("notes", ""), val_group_key=proto.pop("val_group_key", None),
        split_by_seed=bool(proto.pop("split_by_seed", False)),
        quick_limit=(int(quick[0]), int(quick[1])),
        extra_labels={k: tuple(str(x) for x in v) for k, v in c.get("extra_labels", {}).items()},
        sections=tuple(c.get("report", {}).get("sections", ())),
        comparison=dict(c.get("report", {}).get("comparison", {})),
        default_cell=dict(c.get("report", {}).get("default_cell", {})),
        overview_metrics=tuple(c.get("report", {}).get("overview_metrics", ())),
        fetch_help=fetch.get("help", ""),
        fetch_urls=tuple(tuple(u) for u in fetch.get("urls", ())),
        fixture_note=c.get("fixture", {}).get("note", ""),
        protocol_text={k: str(v) for k, v in proto.items()},
        gpu=dict(c.get("gpu", {})), path=task_folder(name),
    )


def task_names() -> list[str]:
    """Every task folder (one holding a task.toml), in page order (task.toml's `order`)."""
    names = sorted({p.parent.name for d in task_dirs() for p in d.glob("*/task.toml")})
    return sorted(names, key=lambda n: (int(config(n).get("order", 1000)), n))


@functools.cache
def _task(name: str) -> Task:
    task = _task_from_config(name)
    task.module("protocol")  # its conditions and task-only metrics register now
    return task


def method_modules() -> list[str]:
    """The import names of every task's methods.py (the method registry imports them)."""
    return [f"{__name__}.{n}.methods" for n in task_names() if (task_folder(n) / "methods.py").is_file()]


def list_tasks() -> list[Task]:
    return [_task(n) for n in task_names()]


def get_task(name: str) -> Task:
    if not isinstance(name, str) or name not in task_names():
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}")
    return _task(name)
