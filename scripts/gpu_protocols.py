"""Run every suite's `gpu_only` block (the studies' GPU protocols) in one process, on a GPU.

    python scripts/gpu_protocols.py pack --data-dir ../shared/data --dest .gpu-pack
    python scripts/gpu_protocols.py run --data-dir .gpu-pack --out OUT [--tasks cifar10,hotelid]
    python scripts/gpu_protocols.py run --device cpu --quick --data-dir ../shared/data --out /tmp/r
                                                        (the CPU rehearsal: --quick overrides)

`pack` copies what the protocols need into a folder small enough to travel with the working
tree to the GPU machine (64 MiB in all), as each task's `[gpu]` table in task.toml says:
`pack = "copy"` (the default: the files as they are) or `pack = "jpeg"` (every image
re-encoded as JPEG at its own size with a lower quality, e.g. FairFace), and `needs_weights`
(registry entries whose pretrained weights the task's GPU blocks need: without them on this
machine the task is skipped and said so). A PACKED.md in each task folder says what was
changed; the readers put it into every record's data variant. File names and labels stay, so
every record names the same data (fingerprint) as the original. The tasks are those whose
suite has a gpu_only block: adding one needs no change here.

`run` uses the machine's own torch (the GPU machine has its own Python and torch; it cannot
download): it puts the repository on the path without installing anything, runs each
gpu_only block with AMP (bf16) and channels_last on, the data held on the device as the engine
does, under a per-block time limit (every run of a block shares it, through the method's
time_budget_s; the record says so), writes the records and pages into OUT/leaderboard, packs
them into OUT/gpu-protocols.tar.gz, and times one model with and without torch.compile
(OUT/compile.json). OUT/summary.json has the device seconds of every block.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKED = "PACKED.md"


def _importable() -> None:
    """Make `import cvbench` work from the checkout without installing it (the package-dir
    mapping cvbench.baselines -> baselines/, cvbench.deep -> deep/ done by a shim)."""
    try:
        import cvbench.deep  # noqa: F401

        return
    except ImportError:
        pass
    shim = Path(os.environ.get("TMPDIR", "/tmp")) / "cvbench-shim"
    extra = shim / "cvbench_extra"
    extra.mkdir(parents=True, exist_ok=True)
    for name in ("baselines", "deep"):
        link = extra / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    sys.path.insert(0, str(ROOT))
    import cvbench

    cvbench.__path__.append(str(extra))


# ---------------------------------------------------------------- pack
def _copy(src: Path, dst: Path) -> int:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())


def _reencode_jpeg(src: Path, dst: Path, quality: int) -> int:
    """Every image under src re-encoded as JPEG (same name, same size); other files copied."""
    from PIL import Image

    from cvbench.images import is_image_file

    total = 0
    for path in sorted(src.rglob("*")):
        if not path.is_file():
            continue
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if is_image_file(path):
            with Image.open(path) as im:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="JPEG", quality=quality)
            out.write_bytes(buf.getvalue())
        else:  # label files and notes, as they are
            shutil.copy2(path, out)
        total += out.stat().st_size
    return total


def gpu_tasks() -> list[str]:
    """The tasks whose suite has a gpu_only block, in page order."""
    _importable()
    from cvbench.suite import load_suite
    from cvbench.tasks import list_tasks

    return [t.name for t in list_tasks()
            if t.suite_path().is_file() and load_suite(t.suite_path(), t.name).gpu_blocks]


def _missing_weights(task) -> str | None:
    """Why the task's GPU blocks cannot run on this machine's weights, or None."""
    from cvbench.deep.models import weights_available

    for name in task.gpu.get("needs_weights", ()):
        ok, why = weights_available(name)
        if not ok:
            return f"its GPU blocks need {name}'s pretrained weights, which are not on this machine: {why}"
    return None


def pack(data_dir: Path, dest: Path, jpeg_quality: int = 40, tasks=None) -> dict:
    _importable()
    from cvbench.tasks import get_task

    dest.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict] = {}
    for name in tasks or gpu_tasks():
        task = get_task(name)
        src, dst = data_dir / task.folder, dest / task.folder
        if not src.is_dir():
            manifest[name] = {"skipped": f"no data at {src}"}
            continue
        missing = _missing_weights(task)
        if missing:
            manifest[name] = {"skipped": missing}
            continue
        shutil.rmtree(dst, ignore_errors=True)
        how = task.gpu.get("pack", "copy")
        if how == "jpeg":
            size = _reencode_jpeg(src, dst, jpeg_quality)
            note = (f"images re-encoded as JPEG quality {jpeg_quality} at their own size for "
                    "transport to the GPU machine; file names and labels unchanged")
            (dst / PACKED).write_text(f"# Packed by scripts/gpu_protocols.py\n\nVariant: \"{note}\"\n")
        elif how == "copy":
            size, note = _copy(src, dst), "copied as is"
        else:
            raise ValueError(f"task {name}: [gpu] pack = {how!r}; expected 'copy' or 'jpeg'")
        manifest[name] = {"bytes": size, "note": note}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    total = sum(v.get("bytes", 0) for v in manifest.values())
    print(f"packed {total / 2**20:.1f} MiB into {dest}: " + json.dumps(manifest))
    return manifest


# ---------------------------------------------------------------- run
def _gpu_specs(task_name: str, quick: bool):
    from cvbench.suite import load_suite
    from cvbench.tasks import get_task

    task = get_task(task_name)
    suite = load_suite(task.suite_path(), task.name)
    blocks = [b for b in suite.blocks if b.gpu_only]
    by_block = {}
    for spec in suite.specs(quick=quick):
        if any(b.index == spec.block for b in blocks):
            by_block.setdefault(spec.block, []).append(spec)
    return task, [(b, by_block.get(b.index, [])) for b in blocks]


def run(data_dir: Path, out: Path, device: str, quick: bool, tasks, block_limit_s: float) -> dict:
    _importable()
    from cvbench.errors import UserError
    from cvbench.leaderboard import render_all
    from cvbench.methods import get_method_spec
    from cvbench.plan import RunOptions, plan_runs
    from cvbench.run import SuiteReport, execute
    from cvbench.tasks import get_task

    out.mkdir(parents=True, exist_ok=True)
    board = out / "leaderboard"
    options = RunOptions(data_dir=str(data_dir), device=device, quick=quick, progress=False,
                         leaderboard=str(board))
    summary: dict[str, list] = {}
    t_all = time.perf_counter()
    for name in tasks:
        task, blocks = _gpu_specs(name, quick)
        for block, specs in blocks:
            entry = {"task": name, "block": block.label, "runs": len(specs)}
            summary.setdefault(name, []).append(entry)
            if not task.has_data(data_dir):
                entry["skipped"] = f"no data for {name} in {data_dir}"
                continue
            params = get_method_spec(block.method).params()
            share = block_limit_s / max(1, len(specs))
            for spec in specs:
                if "time_budget_s" in params:  # the block's limit, shared by its runs
                    spec.params.setdefault("time_budget_s", round(share, 1))
                if "amp" in params and device != "cpu":
                    spec.params.setdefault("amp", "bf16")
                if "channels_last" in params and device != "cpu":
                    spec.params.setdefault("channels_last", True)
            t0 = time.perf_counter()
            try:
                plan = plan_runs(task, specs, options, log=print)
                report = execute(plan, options, SuiteReport(task=name), log=print)
                entry.update(done=report.done, failed=report.failed)
            except UserError as exc:  # e.g. weights that are not on this machine
                entry["skipped"] = str(exc)
                print(f"{name}: {block.label}: skipped: {exc}")
            entry["seconds"] = round(time.perf_counter() - t0, 1)
    render_all(board, [get_task(t) for t in tasks])
    summary["total_seconds"] = round(time.perf_counter() - t_all, 1)
    summary["device"] = _device_name(device)
    summary["compile"] = compile_check(device, quick)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with tarfile.open(out / "gpu-protocols.tar.gz", "w:gz") as tar:
        tar.add(board, arcname="leaderboard")
        tar.add(out / "summary.json", arcname="summary.json")
    print(json.dumps(summary, indent=1))
    return summary


def _device_name(device: str) -> str:
    from cvbench import env

    return str(env.device_info(env.resolve_device(device)).get("name"))


def compile_check(device: str, quick: bool) -> dict:
    """Seconds per training step of one model with and without torch.compile (after warm-up)."""
    import torch

    from cvbench.deep.engine import TrainConfig, TrainData, Trainer
    from cvbench.deep.models import create_model

    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    n, steps = (256, 4) if quick else (8192, 64)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8).numpy()
    y = torch.randint(0, 10, (n,))
    out = {"model": "resnet-se", "device": str(dev), "images": n}
    for compiled in (False, True):
        if compiled and dev.type == "cpu":
            out["compiled_s_per_epoch"] = None
            out["note"] = "torch.compile is timed on the GPU only"
            break
        net = create_model("resnet-se", num_classes=10, width=0.25 if quick else 1.0)
        cfg = TrainConfig(epochs=2, batch_size=n // steps, device=str(dev), compile=compiled,
                          amp="bf16" if dev.type == "cuda" else False, progress=False)
        trainer = Trainer(net, cfg)
        t0 = time.perf_counter()
        result = trainer.fit(TrainData(x, y, y.numpy()))
        total = time.perf_counter() - t0
        per_epoch = result.curves["time_s"]
        out["compiled_s_per_epoch" if compiled else "eager_s_per_epoch"] = [round(float(v), 3) for v in per_epoch]
        out["compiled_total_s" if compiled else "eager_total_s"] = round(total, 2)
    if out.get("compiled_total_s"):
        second = lambda k: out[k][1] - out[k][0] if len(out[k]) > 1 else out[k][0]  # noqa: E731
        out["paid"] = second("compiled_s_per_epoch") < second("eager_s_per_epoch")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    pk.add_argument("--dest", default=str(ROOT / ".gpu-pack"))
    pk.add_argument("--jpeg-quality", type=int, default=40,
                    help="quality of the re-encoded images of tasks whose [gpu] pack is 'jpeg'")
    r = sub.add_parser("run")
    r.add_argument("--data-dir", default=str(ROOT / ".gpu-pack"))
    r.add_argument("--out", required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--quick", action="store_true", help="the suites' quick overrides (CPU rehearsal)")
    r.add_argument("--tasks", default=None, help="comma-separated (default: every task with a gpu_only block)")
    r.add_argument("--block-limit-s", type=float, default=100.0,
                   help="device seconds a gpu_only block may train (shared by its runs)")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(Path(args.data_dir), Path(args.dest), args.jpeg_quality)
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else gpu_tasks()
    run(Path(args.data_dir), Path(args.out), args.device, args.quick, tasks, args.block_limit_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
