"""`cvbench data fetch TASK`: download a task's archives, verify their SHA-256, extract them
safely into the data root; for Kaggle-only datasets, say exactly how to get them.

Downloads stream to a temp file and are renamed into place only once their checksum
matches; archives are extracted into a temp folder (tar with the "data" filter, zip with a
path-traversal check) and then moved into the task folder, so a crash leaves no half data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DataError
from ..paths import cache_dir

CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(
    url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True
) -> Path:
    """Stream `url` to `dest` (temp file + atomic rename), verifying `sha256` when given.

    An existing `dest` with the right checksum is kept as is. A checksum mismatch removes
    the download and raises DataError naming the file, expected and actual hash; a network
    failure raises DataError in one sentence.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and expected and sha256_of(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    total = resp.headers.get("Content-Length")
                    with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                              desc=dest.name, disable=not progress) as bar:
                        while chunk := resp.read(CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DataError(
                    f"could not download {url}: {reason}; check your connection or "
                    f"download it manually to {dest}"
                ) from None
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if expected and actual != expected:
            raise DataError(
                f"checksum mismatch for {dest.name} from {url}: expected sha256 {expected}, "
                f"got {actual}; the download was removed"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _safe_zip_members(zf: zipfile.ZipFile, dest: Path, archive: Path) -> None:
    root = dest.resolve()
    for name in zf.namelist():
        target = (root / name).resolve()
        if os.path.isabs(name) or not target.is_relative_to(root):
            raise DataError(f"refusing to extract {archive}: member {name!r} would land outside {dest}")


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar (any compression) or zip archive into `dest`, refusing members that
    would land outside it (absolute paths, "..", links out); returns `dest`."""
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)  # dest itself appears only on success
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(staging, filter="data")
                except tarfile.FilterError as exc:
                    raise DataError(f"refusing to extract {archive}: {exc}") from None
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _safe_zip_members(zf, staging, archive)
                zf.extractall(staging)
        else:
            raise DataError(f"{archive} is neither a tar nor a zip archive")
        # move the extracted tree into place file by file (same filesystem: renames); copytree
        # copies the root's mode onto dest, so give the staging folder an ordinary one first
        # (mkdtemp makes it 0700, which would lock others out of an existing data folder)
        from cvbench.atomic import _UMASK

        os.chmod(staging, 0o777 & ~_UMASK)
        shutil.copytree(staging, dest, dirs_exist_ok=True, copy_function=os.replace)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def fetch_task(task, data_dir: str | os.PathLike | None = None, progress: bool = True) -> str:
    """Download, verify and extract each of `task.fetch_urls` into `task.data_path(data_dir)`
    and return a summary to print. Archives are kept in the cache ('downloads') so a re-run
    does not download again. A task without URLs (Kaggle-only data) whose folder is missing or
    empty raises DataError whose message is the task's `fetch_help` steps and the folder.
    """
    target = task.data_path(data_dir)
    if not task.fetch_urls:
        if target.is_dir() and any(target.iterdir()):
            return f"task {task.name!r}: data already present in {target}; nothing to fetch"
        steps = task.fetch_help.strip() or "no download instructions are recorded for this task"
        raise DataError(
            f"task {task.name!r} cannot be downloaded automatically; get it as follows, then "
            f"place it under {target} with layout {task.layout}:\n{steps}"
        )
    lines = []
    for url, sha256, filename in task.fetch_urls:
        archive = download(url, cache_dir("downloads") / filename, sha256, progress=progress)
        extract(archive, target)
        lines.append(f"{filename}: downloaded from {url}, sha256 verified, extracted")
    lines.append(f"task {task.name!r}: data is in {target}")
    return "\n".join(lines)
