"""requirements.lock says where each pinned file comes from, and `make` uses it: a pin that
PyPI does not serve (a local version such as torch's +cpu) carries the index that does, and the
Makefile's install passes that index to pip."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^(\S+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)


def _lock_module():
    spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _indexes_of_local_pins(text: str) -> dict[str, str]:
    """{name==version: the index its `# index:` line names (None when it has none)}, for every
    pin with a local version."""
    out = {}
    for m in PIN.finditer(text):
        if "+" in m.group(2):
            above = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            index = re.fullmatch(r"# index: (\S+)", above)
            out[f"{m.group(1)}=={m.group(2)}"] = index.group(1) if index else None
    return out


def test_every_local_version_pin_names_its_index_and_make_passes_it(tmp_path):
    text = (ROOT / "requirements.lock").read_text()
    local = _indexes_of_local_pins(text)
    assert "torch==2.13.0+cpu" in local  # the pin PyPI does not serve
    assert all(local.values()), f"pins without an `# index:` line: {[k for k, v in local.items() if not v]}"
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"  # what `make` would run to build a venv there, printed (-n), not run
    recipe = subprocess.run(["make", "-n", "-B", f"VENV={venv}", f"{venv}/.installed"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    installs = [c for c in recipe.replace("\\\n", " ").splitlines() if "-r requirements.lock" in c]
    assert installs and all("--require-hashes" in c for c in installs)
    for pin, index in local.items():
        assert f"--extra-index-url {index} " in " ".join(installs), f"make does not pass {index} for {pin}"


def test_the_lock_is_what_scripts_lock_writes():
    lock = _lock_module()
    text = (ROOT / "requirements.lock").read_text()
    items = [{"metadata": {"name": n, "version": v}, "download_info": {"archive_info": {"hashes": {"sha256": h}}}}
             for n, v, h in PIN.findall(text)]
    assert len(items) > 20 and lock.render(items) == text
    rocm = {"metadata": {"name": "torch", "version": "2.13.0+rocm6"},
            "download_info": {"archive_info": {"hashes": {"sha256": "0" * 64}}}}
    with pytest.raises(ValueError, match=r"torch==2.13.0\+rocm6: PyPI serves no \+rocm6 build"):
        lock.render([rocm])
