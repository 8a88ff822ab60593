"""`cvbench data check TASK`: per-class counts, empty classes, unreadable files and
byte-identical duplicates (within a split, across splits, and with conflicting labels).

Every file item is read once for its SHA-256 and decoded once with `load_image` (JPEGs at
reduced scale: the whole entropy-coded stream is still decoded, so truncation is caught).
In-memory splits (uint8 arrays) are checked for identical pixel rows instead.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from ..errors import BadImageError
from ..images import load_image
from ..split import Split

#: Decode size for the readability check (JPEG draft mode keeps it fast on large photos).
CHECK_MAX_SIDE = 256


@dataclass(frozen=True)
class Member:
    """One item of a duplicate set."""

    split: str
    index: int
    label: str
    path: str | None = None  # None for in-memory items

    def where(self) -> str:
        return self.path if self.path is not None else f"{self.split}[{self.index}]"


@dataclass(frozen=True)
class DuplicateSet:
    """Items with identical bytes (files) or identical pixels (in-memory rows)."""

    digest: str
    members: tuple[Member, ...]

    @property
    def cross_split(self) -> bool:
        return len({m.split for m in self.members}) > 1

    @property
    def conflicting_labels(self) -> bool:
        return len({m.label for m in self.members}) > 1


@dataclass
class SplitCheck:
    """What the check found in one split."""

    name: str
    n: int
    class_counts: dict[str, int]
    empty_classes: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    in_memory: bool = False


@dataclass
class FolderScan:
    """What a walk of the data folder found that no reader lists: folders that cannot be
    read, and links that lead nowhere (symlink loops, missing targets)."""

    unreadable_dirs: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    broken_links: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        return not self.unreadable_dirs and not self.broken_links


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "link to a missing target"
    return (exc.strerror or type(exc).__name__).lower()


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """Walk `root` (following links to folders, each folder once) for folders that cannot
    be listed and links that cannot be followed."""
    scan = FolderScan()
    seen: set[tuple[int, int]] = set()
    todo = [str(root)]
    while todo:
        folder = todo.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            scan.unreadable_dirs.append((folder, _reason(exc)))
            continue
        for e in entries:
            try:
                if e.is_symlink():
                    os.stat(e.path)  # follows the link: ELOOP or ENOENT when it leads nowhere
                if e.is_dir():
                    todo.append(e.path)
            except OSError as exc:
                scan.broken_links.append((e.path, _reason(exc)))
    scan.unreadable_dirs.sort()
    scan.broken_links.sort()
    return scan


@dataclass
class CheckReport:
    """Result of `check_splits`: one SplitCheck per split plus the duplicate sets found, and
    what the walk of the data folder found (`scan_folder`), when one was made."""

    splits: list[SplitCheck]
    duplicates: list[DuplicateSet]
    folder: FolderScan = field(default_factory=FolderScan)

    @property
    def total(self) -> int:
        return sum(s.n for s in self.splits)

    @property
    def n_unreadable(self) -> int:
        return sum(len(s.unreadable) for s in self.splits)

    @property
    def cross_split_duplicates(self) -> list[DuplicateSet]:
        return [d for d in self.duplicates if d.cross_split]

    @property
    def conflicting_duplicates(self) -> list[DuplicateSet]:
        return [d for d in self.duplicates if d.conflicting_labels]

    @property
    def ok(self) -> bool:
        """No unreadable files or folders, no broken links and no empty classes (duplicates
        are reported, not fatal)."""
        return (self.n_unreadable == 0 and not any(s.empty_classes for s in self.splits)
                and self.folder.ok)


def _check_file(path: str) -> tuple[str | None, str | None]:
    """(sha256 hex of the bytes or None, failure reason or None) for one image file."""
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        return None, exc.strerror or type(exc).__name__
    try:
        load_image(path, mode="rgb", max_side=CHECK_MAX_SIDE)
    except BadImageError as exc:
        return digest, exc.reason or "cannot decode"
    return digest, None


def _row_digests(items: np.ndarray) -> list[str]:
    rows = np.ascontiguousarray(items).reshape(len(items), -1)
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in rows]


def check_splits(splits: Sequence[Split], progress: bool = True, n_jobs: int = 4,
                 folder: FolderScan | None = None) -> CheckReport:
    """Check every split: counts, empty classes, unreadable files and duplicates (`folder`:
    the walk of the data folder, reported with them).

    Files are hashed and decoded on `n_jobs` threads (I/O and decoding release the GIL).
    """
    checks: list[SplitCheck] = []
    by_digest: dict[str, list[Member]] = defaultdict(list)
    for split in splits:
        counts = split.class_counts()
        check = SplitCheck(
            name=split.name,
            n=len(split),
            class_counts={c: int(n) for c, n in zip(split.classes, counts)},
            empty_classes=[c for c, n in zip(split.classes, counts) if n == 0],
            in_memory=split.in_memory,
        )
        if split.in_memory:
            results = [(d, None) for d in _row_digests(split.items)]
        else:
            paths = [str(p) for p in split.items]
            jobs = (delayed(_check_file)(p) for p in paths)
            results = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(jobs)
            results = list(
                tqdm(results, total=len(paths), desc=f"checking {split.name}", disable=not progress)
            )
        for i, (digest, reason) in enumerate(results):
            path = None if split.in_memory else str(split.items[i])
            if reason is not None:
                check.unreadable.append((path or f"{split.name}[{i}]", reason))
            if digest is not None:
                label = split.classes[split.labels[i]]
                by_digest[digest].append(Member(split.name, i, label, path))
        checks.append(check)
    duplicates = [
        DuplicateSet(digest, tuple(members))
        for digest, members in by_digest.items()
        if len(members) > 1
    ]
    duplicates.sort(key=lambda d: (not d.conflicting_labels, not d.cross_split, d.members[0].where()))
    return CheckReport(splits=checks, duplicates=duplicates, folder=folder or FolderScan())


def format_report(report: CheckReport, max_listed: int = 50) -> str:
    """Human-readable summary of a CheckReport (lists are cut at `max_listed` entries)."""
    lines: list[str] = []
    for s in report.splits:
        kind = "in-memory array" if s.in_memory else "files"
        lines.append(f"{s.name}: {s.n} items ({kind}), {len(s.class_counts)} classes")
        width = max((len(c) for c in s.class_counts), default=0)
        for c, n in s.class_counts.items():
            lines.append(f"  {c:<{width}}  {n}")
        if s.empty_classes:
            lines.append(f"  EMPTY classes: {', '.join(s.empty_classes)}")
        if s.unreadable:
            lines.append(f"  UNREADABLE files: {len(s.unreadable)}")
            for path, reason in s.unreadable[:max_listed]:
                lines.append(f"    {path}: {reason}")
            if len(s.unreadable) > max_listed:
                lines.append(f"    ... and {len(s.unreadable) - max_listed} more")
    lines += format_scan(report.folder, max_listed)
    dup = report.duplicates
    n_extra = sum(len(d.members) - 1 for d in dup)
    lines.append(
        f"duplicates: {len(dup)} sets of identical items ({n_extra} redundant copies); "
        f"{len(report.cross_split_duplicates)} span splits, "
        f"{len(report.conflicting_duplicates)} carry different labels"
    )
    for d in dup[:max_listed]:
        flags = [f for f, on in (("DIFFERENT LABELS", d.conflicting_labels),
                                 ("across splits", d.cross_split)) if on]
        head = f"  [{', '.join(flags)}]" if flags else "  [within split]"
        lines.append(head + " " + " = ".join(f"{m.where()} ({m.label})" for m in d.members))
    if len(dup) > max_listed:
        lines.append(f"  ... and {len(dup) - max_listed} more sets")
    status = "OK" if report.ok else "PROBLEMS FOUND"
    lines.append(
        f"total: {report.total} items, {report.n_unreadable} unreadable, "
        f"{sum(len(s.empty_classes) for s in report.splits)} empty classes, "
        f"{len(report.folder.unreadable_dirs)} unreadable folders, "
        f"{len(report.folder.broken_links)} broken links: {status}"
    )
    return "\n".join(lines)


def format_scan(scan: FolderScan, max_listed: int = 50) -> list[str]:
    """The lines of a FolderScan's problems (none when it found none)."""
    lines = []
    for title, found in (("UNREADABLE folders", scan.unreadable_dirs),
                         ("BROKEN links (symlink loops or missing targets)", scan.broken_links)):
        if found:
            lines.append(f"{title}: {len(found)}")
            lines += [f"    {path}: {reason}" for path, reason in found[:max_listed]]
            if len(found) > max_listed:
                lines.append(f"    ... and {len(found) - max_listed} more")
    return lines
