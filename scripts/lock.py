"""Write requirements.lock: every package of the tested environment pinned, with hashes.

    make lock        (= python scripts/lock.py, run in the project's .venv)

It freezes the environment `make` built (so the lock pins the versions the tests passed
with), asks pip for each pinned file's SHA-256 (a dry-run resolve with --report: nothing is
installed), and writes one `name==version --hash=sha256:...` requirement per package.
`make` then installs with `pip install --require-hashes -r requirements.lock`. The project
itself (editable) and cyvlfeat (built from source against Debian's libvlfeat) stay out of it.
Refresh after changing a dependency in pyproject.toml or constraints.txt: `rm -rf .venv &&
make venv-unlocked && make lock`, then run `make test` and commit the lock with the change.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"cvbench", "cyvlfeat", "cython", "pip", "setuptools", "wheel"}


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
    lines = ["# Every package of the tested environment, pinned with its hash (scripts/lock.py;",
             "# refresh: see that file). `make` installs from it with --require-hashes.", ""]
    for item in sorted(items, key=lambda i: i["metadata"]["name"].lower()):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        hashes = (item.get("download_info", {}).get("archive_info") or {}).get("hashes", {})
        if "sha256" not in hashes:
            print(f"lock: no sha256 for {name}=={version}", file=sys.stderr)
            return 1
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{hashes['sha256']}")
    (ROOT / "requirements.lock").write_text("\n".join(lines) + "\n")
    print(f"requirements.lock: {len(items)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
