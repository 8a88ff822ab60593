"""Write requirements.lock: every package of the tested environment pinned, with hashes.

    make lock        (= python scripts/lock.py, run in the project's .venv)

It freezes the environment `make` built (so the lock pins the versions the tests passed
with), asks pip for each pinned file's SHA-256 (a dry-run resolve with --report: nothing is
installed), and writes one `name==version --hash=sha256:...` requirement per package.
`make` then installs with `pip install --require-hashes -r requirements.lock`. The project
itself (editable) and cyvlfeat (built from source against Debian's libvlfeat) stay out of it.
Refresh after changing a dependency in pyproject.toml or constraints.txt: `rm -rf .venv &&
make venv-unlocked && make lock`, then run `make test` and commit the lock with the change.

Where each file comes from: PyPI, except a pin with a local version (`torch==2.13.0+cpu`),
which PyPI does not serve. Such a pin gets an `# index: URL` line above it, from
LOCAL_VERSION_INDEXES (a local version with no index known here stops the lock), and the
Makefile's LOCK_INDEXES passes that index to pip when the first install finds no file for a
pin (a machine that keeps the wheel on disk needs neither the index nor the network).
tests/test_lock.py checks both. One hash per pin: the lock installs on Linux x86_64 with
CPython 3.11, as it was made; elsewhere, `make venv-unlocked`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"cvbench", "cyvlfeat", "cython", "pip", "setuptools", "wheel"}
LOCAL_VERSION_INDEXES = {"cpu": "https://download.pytorch.org/whl/cpu"}  # PyTorch's CPU wheels
HEADER = ["# Every package of the tested environment, pinned with its hash (scripts/lock.py;",
          "# refresh: see that file). `make` installs from it with --require-hashes. The files come",
          "# from PyPI, except where an `# index:` line names the index that serves the pin below it",
          "# (the Makefile's LOCK_INDEXES passes it to pip). Linux x86_64, CPython 3.11.", ""]


def render(items: list[dict]) -> str:
    """The lock's text from pip's --report entries; ValueError for a pin without a sha256 or
    with a local version no index is known for."""
    lines = list(HEADER)
    for item in sorted(items, key=lambda i: i["metadata"]["name"].lower()):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        hashes = (item.get("download_info", {}).get("archive_info") or {}).get("hashes", {})
        if "sha256" not in hashes:
            raise ValueError(f"no sha256 for {name}=={version}")
        if "+" in version:
            local = version.split("+", 1)[1]
            if local not in LOCAL_VERSION_INDEXES:
                raise ValueError(f"{name}=={version}: PyPI serves no +{local} build and no index is "
                                 f"known for it; add one to LOCAL_VERSION_INDEXES")
            lines.append(f"# {name} +{local} is not on PyPI; this index serves it:")
            lines.append(f"# index: {LOCAL_VERSION_INDEXES[local]}")
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{hashes['sha256']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--all"],
                            check=True, capture_output=True, text=True).stdout.split()
    pins = [p for p in freeze if "==" in p and p.split("==")[0].lower() not in SKIP]
    with tempfile.TemporaryDirectory() as tmp:
        req, report = Path(tmp) / "pins.txt", Path(tmp) / "report.json"
        req.write_text("\n".join(pins) + "\n")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                        "--no-deps", "--report", str(report), "-r", str(req)], check=True)
        items = json.loads(report.read_text())["install"]
    try:
        text = render(items)
    except ValueError as exc:
        print(f"lock: {exc}", file=sys.stderr)
        return 1
    (ROOT / "requirements.lock").write_text(text)
    print(f"requirements.lock: {len(items)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
