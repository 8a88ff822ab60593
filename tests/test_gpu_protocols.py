"""The prepared GPU command (scripts/gpu_protocols.py): it finds every gpu_only block, packs
data that keeps its fingerprint and says what was changed, and skips, with its reason, a block
whose weights are not on the machine."""

from __future__ import annotations

import importlib.util
import json

from cvbench.paths import repo_root
from cvbench.tasks import get_task


def _script():
    spec = importlib.util.spec_from_file_location("gpu_protocols", repo_root() / "scripts" / "gpu_protocols.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_gpu_only_block_is_found():
    gp = _script()
    found = {}
    assert gp.gpu_tasks() == ["cifar10", "fairface", "retinopathy", "hotelid"]  # from the suites
    for name in gp.gpu_tasks():
        _, blocks = gp._gpu_specs(name, quick=True)
        found[name] = [b.label for b, specs in blocks if specs]
    assert all(found.values()), found
    assert any("DenseNet-201" in label for label in found["retinopathy"])


def test_pack_keeps_the_fingerprint_and_names_the_change(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-hub"))  # no ImageNet weights here
    monkeypatch.delenv("CVBENCH_WEIGHTS", raising=False)
    gp = _script()
    task = get_task("fairface")
    task.make_fixture(tmp_path / "src", size=24)
    get_task("retinopathy").make_fixture(tmp_path / "src", n_patients=4, size=24)
    manifest = gp.pack(tmp_path / "src", tmp_path / "packed", jpeg_quality=30, tasks=("fairface", "retinopathy"))
    assert "re-encoded as JPEG quality 30" in manifest["fairface"]["note"]
    assert "densenet201" in manifest["retinopathy"]["skipped"]  # its block needs ImageNet weights
    (tr0, te0), (tr1, te1) = task.load_splits(tmp_path / "src"), task.load_splits(tmp_path / "packed")
    assert (tr0.fingerprint, te0.fingerprint) == (tr1.fingerprint, te1.fingerprint)
    assert "re-encoded as JPEG quality 30" in te1.meta["variant"]
    assert json.loads((tmp_path / "packed" / "manifest.json").read_text())["fairface"]["bytes"] > 0
