"""`make bench-scale`: how cost grows with the dataset, on deterministic synthetic images.

    python scripts/bench_scale.py                      # N = 1k, 4k, 16k, 64k; every pipeline
    python scripts/bench_scale.py --sizes 1000,4000 --pipelines tiny-knn,bow-sift
    python scripts/bench_scale.py --max-n linear-probe=16000   # cap a costly pipeline's N

For each pipeline and training-set size N it fits the method on the first N images of one
generated set and predicts a fixed test set of 1000, in a fresh process with a fresh (cold)
cache, and records the wall seconds of fit and predict and the peak resident memory of the
process tree (the run and its joblib workers, sampled every 0.2 s). Pipelines:

- tiny-knn      16x16 tiny images, 1-NN (L1): decode + shrink, then chunked distances
- bow-sift      dense SIFT step 8, 200-word vocabulary on 100k descriptors, k-NN
- linear-probe  EfficientNet-Lite0 embeddings at 224 px + the probe's logistic regression
- fastnet       one epoch of FastNet (half width, batch 128) on 32x32 in-memory images

plus the large-photograph set (3000x2000 JPEGs, small N) for tiny-knn and bow-sift (the
latter at max_side=512). The generated images live in the cache ($CVBENCH_CACHE/bench-scale),
never in the repository; generating 65k 256x256 JPEGs takes a few minutes, once.

Writes OUT/results.json (one row per run, appended across invocations: a rerun of a
(pipeline, N) replaces its row), OUT/cost_vs_n.png (log-log fit time and peak RSS against N
with each pipeline's fitted slope, 1 = linear) and OUT/summary.md (the same as a table). The targets (issue 24): time per training
image flat within 1.3x from 4k to 64k, peak RSS < 4 GiB at 64k; the script prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_TEST = 1000
N_CLASSES = 15
SCENE_SIDE = 256  # scene15's images are ~256 x 300, FairFace's 224 x 224
PHOTO_SIZE = (3000, 2000)  # (width, height): a fundus or hotel photograph
PHOTO_SIZES = (16, 64)
PIPELINES = ("tiny-knn", "bow-sift", "linear-probe", "fastnet")
DEFAULT_SIZES = (1000, 4000, 16000, 64000)


# ---------------------------------------------------------------- deterministic images


def scene_image(i: int, side: int = SCENE_SIDE) -> tuple[np.ndarray, int]:
    """RGB uint8 image i and its class: gratings whose orientation and frequency depend on the
    class, a few random blobs and noise, all seeded by i (the same bytes on every machine)."""
    import cv2

    label = i % N_CLASSES
    rng = np.random.default_rng([2024, i])
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    theta = np.pi * label / N_CLASSES + rng.normal(0, 0.05)
    freq = 6 + 2 * (label % 5) + rng.normal(0, 0.5)
    phase = rng.uniform(0, 2 * np.pi)
    g = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    img = 128 + 60 * g[..., None] * rng.uniform(0.5, 1.0, 3)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, side, 2).astype(int).tolist() + [int(rng.uniform(side / 32, side / 5))]
        cv2.circle(img, (cx, cy), r, rng.uniform(0, 255, 3).tolist(), -1)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def photo_image(i: int) -> tuple[np.ndarray, int]:
    """A large photograph: a scene image upscaled to PHOTO_SIZE with fine noise on top."""
    import cv2

    small, label = scene_image(100_000 + i, 384)
    img = cv2.resize(small, PHOTO_SIZE, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    img += np.random.default_rng([7, i]).normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), label


def _write_jpegs(folder: str, kind: str, idx: list[int]) -> None:
    from PIL import Image

    make = scene_image if kind == "scene" else photo_image
    for i in idx:
        path = Path(folder) / f"{kind}-{i:06d}.jpg"
        if not path.is_file():
            img, _ = make(i)
            tmp = path.with_suffix(".tmp")
            Image.fromarray(img).save(tmp, format="JPEG", quality=90)
            os.replace(tmp, path)


def ensure_images(folder: Path, kind: str, indices: list[int], n_jobs: int = -1) -> list[Path]:
    """The JPEGs of `indices` under folder (generated once, in parallel), as paths."""
    from joblib import Parallel, delayed

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{kind}-{i:06d}.jpg" for i in indices]
    todo = [i for i, p in zip(indices, paths) if not p.is_file()]
    if todo:
        t0 = time.perf_counter()
        chunks = [todo[s : s + 500] for s in range(0, len(todo), 500)]
        Parallel(n_jobs=n_jobs)(delayed(_write_jpegs)(str(folder), kind, c) for c in chunks)
        print(f"generated {len(todo)} {kind} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def labels_of(indices) -> np.ndarray:
    return np.asarray(indices) % N_CLASSES


# ---------------------------------------------------------------- one measurement (child)


def _split(paths, labels, name):
    from cvbench.split import Split

    return Split(items=[str(p) for p in paths], labels=np.asarray(labels),
                 classes=tuple(f"c{c}" for c in range(N_CLASSES)), name=name)


def _cifar_like(n: int, offset: int):
    """In-memory 32x32 RGB images: the scene generator at 32 px (for FastNet)."""
    from cvbench.split import Split

    imgs = np.stack([scene_image(offset + i, 32)[0] for i in range(n)])
    return Split(items=imgs, labels=labels_of(range(offset, offset + n)),
                 classes=tuple(f"c{c}" for c in range(N_CLASSES)), name=f"cifar-like/{offset}+{n}")


def run_child(pipeline: str, kind: str, n: int, data: Path) -> dict:
    from cvbench.methods import create_method

    if pipeline == "fastnet":
        train, test = _cifar_like(n, 0), _cifar_like(N_TEST, 10_000_000)
        m = create_method("fastnet", epochs=1, warmup_epochs=0.2, val_fraction=0.0, device="cpu",
                          seed=0, n_jobs=1)
    else:
        folder = data / kind
        prefix = "photo" if kind == "photo" else "scene"
        train_idx = list(range(n))
        test_idx = list(range(10_000_000, 10_000_000 + (min(N_TEST, 16) if kind == "photo" else N_TEST)))
        train = _split([folder / f"{prefix}-{i:06d}.jpg" for i in train_idx], labels_of(train_idx),
                       f"{kind}-train-{n}")
        test = _split([folder / f"{prefix}-{i:06d}.jpg" for i in test_idx], labels_of(test_idx),
                      f"{kind}-test")
        params = {
            "tiny-knn": dict(size=16, k=1, metric="l1", n_jobs=2),
            "bow-sift": dict(step=8, vocab_size=200, vocab_sample=100_000, hist_norm="sqrt",
                             metric="l1", k=8, n_jobs=2, **({"max_side": 512} if kind == "photo" else {})),
            "linear-probe": dict(backbone="efficientnet_lite0", device="cpu", n_jobs=2),
        }[pipeline]
        m = create_method(pipeline, **params)
    t0 = time.perf_counter()
    m.fit(train)
    t1 = time.perf_counter()
    scores = m.predict_scores(test)
    t2 = time.perf_counter()
    info = getattr(m, "info_", {}) or {}
    return {"fit_s": round(t1 - t0, 3), "predict_s": round(t2 - t1, 3), "n_test": len(test),
            "accuracy": round(float((np.asarray(scores).argmax(1) == test.labels).mean()), 4),
            "backend": info.get("backend"), "fit_timings": info.get("timings")}


# ---------------------------------------------------------------- process-tree RSS


def _tree_rss_bytes(root: int) -> int:
    """Sum of VmRSS over `root` and its descendants (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            status = (d / "status").read_text()
        except (OSError, ValueError):
            continue
        parents[int(d.name)] = ppid
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(d.name)] = int(line.split()[1]) * 1024
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(rss.get(p, 0) for p in tree)


def measure(pipeline: str, kind: str, n: int, data: Path, cache: Path) -> dict:
    """Run one measurement in a fresh process with a cold cache; its result + peak tree RSS."""
    env = {**os.environ, "CVBENCH_CACHE": str(cache)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", pipeline, kind, str(n),
           "--data", str(data)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_bytes(proc.pid))
        time.sleep(0.2)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{pipeline} at N={n} failed (exit {proc.returncode})")
    row = json.loads(out.strip().splitlines()[-1])
    row.update(pipeline=pipeline, data=kind, n_train=n, wall_s=round(time.perf_counter() - t0, 2),
               peak_tree_rss_mib=round(peak / 2**20, 1), load_avg=round(os.getloadavg()[0], 2),
               fit_ms_per_image=round(1000 * row["fit_s"] / n, 3))
    return row


# ---------------------------------------------------------------- figure and summary


def slope(ns, ts) -> float:
    """Least-squares slope of log(t) against log(N): 1 is linear, 2 quadratic."""
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0]) if len(ns) >= 2 else float("nan")


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for (pipe, kind) in sorted({(r["pipeline"], r["data"]) for r in rows}):
        rs = sorted((r for r in rows if r["pipeline"] == pipe and r["data"] == kind),
                    key=lambda r: r["n_train"])
        ns = [r["n_train"] for r in rs]
        per = {r["n_train"]: r["fit_ms_per_image"] for r in rs}
        flat = per[max(ns)] / per[4000] if 4000 in per and max(ns) > 4000 else None
        out.append({"pipeline": pipe, "data": kind, "sizes": ns,
                    "fit_slope": round(slope(ns, [r["fit_s"] for r in rs]), 3),
                    "fit_ms_per_image": [per[n] for n in ns],
                    "per_image_ratio_max_vs_4k": None if flat is None else round(flat, 2),
                    "peak_rss_mib": [r["peak_tree_rss_mib"] for r in rs]})
    return out


def markdown_table(rows: list[dict]) -> str:
    """The summary as a Markdown table (written to OUT/summary.md for the README)."""
    lines = ["| pipeline | N | fit ms per training image | fitted slope | peak RSS MiB | load avg |",
             "|---|---|---|---|---|---|"]
    for s in summarise(rows):
        rs = sorted((r for r in rows if r["pipeline"] == s["pipeline"] and r["data"] == s["data"]),
                    key=lambda r: r["n_train"])
        label = s["pipeline"] + (" (3000x2000 photos)" if s["data"] == "photo" else "")
        lines.append(f"| {label} | {' / '.join(f'{n:,}' for n in s['sizes'])} | "
                     f"{' / '.join(f'{v:.2f}' for v in s['fit_ms_per_image'])} | {s['fit_slope']:.2f} | "
                     f"{' / '.join(f'{v:.0f}' for v in s['peak_rss_mib'])} | "
                     f"{' / '.join(format(r['load_avg'], '.1f') for r in rs)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for s in summarise(rows):
        label = s["pipeline"] + (" (3000x2000 photos)" if s["data"] == "photo" else "")
        rs = sorted((r for r in rows if r["pipeline"] == s["pipeline"] and r["data"] == s["data"]),
                    key=lambda r: r["n_train"])
        ns = [r["n_train"] for r in rs]
        style = "--o" if s["data"] == "photo" else "-o"
        ax1.loglog(ns, [r["fit_s"] for r in rs], style, label=f"{label}: slope {s['fit_slope']:.2f}")
        ax2.loglog(ns, [r["peak_tree_rss_mib"] for r in rs], style, label=label)
    xs = np.array([1000, 64000])
    ax1.loglog(xs, 0.01 * xs, ":", color="grey", label="slope 1 (linear)")
    ax1.set(xlabel="training images N", ylabel="fit seconds (cold cache)", title="time against N")
    ax2.axhline(4096, color="red", ls=":", label="4 GiB target")
    ax2.set(xlabel="training images N", ylabel="peak RSS of the process tree, MiB",
            title="memory against N")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("cvbench cost against dataset size (synthetic images; scripts/bench_scale.py)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    ap.add_argument("--pipelines", default=",".join(PIPELINES))
    ap.add_argument("--max-n", default="", help="per-pipeline caps, e.g. linear-probe=16000")
    ap.add_argument("--photos", default=",".join(map(str, PHOTO_SIZES)),
                    help="N of the large-photograph runs ('' for none)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "scale"))
    ap.add_argument("--data", default=None, help="where the generated images go (default: the cache)")
    ap.add_argument("--child", nargs=3, metavar=("PIPELINE", "DATA", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from cvbench.paths import cache_root

    data = Path(args.data) if args.data else cache_root() / "bench-scale" / "images"
    if args.child:
        pipeline, kind, n = args.child
        print(json.dumps(run_child(pipeline, kind, int(n), data)), flush=True)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    pipelines = [p for p in args.pipelines.split(",") if p]
    caps = {k: int(v) for k, v in (kv.split("=") for kv in args.max_n.split(",") if kv)}
    photos = [int(s) for s in args.photos.split(",") if s]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    rows = json.loads(results.read_text()) if results.is_file() else []
    plan = [(p, "scene", n) for p in pipelines for n in sizes if n <= caps.get(p, max(sizes))]
    plan += [(p, "photo", n) for p in ("tiny-knn", "bow-sift") if p in pipelines for n in photos]
    need = max([n for p, k, n in plan if k == "scene" and p != "fastnet"], default=0)
    if need:
        ensure_images(data / "scene", "scene", list(range(need)) + list(range(10_000_000, 10_000_000 + N_TEST)))
    if any(k == "photo" for _, k, _ in plan):
        ensure_images(data / "photo", "photo", list(range(max(photos))) + list(range(10_000_000, 10_000_016)))
    runs = cache_root() / "bench-scale" / "runs"
    for pipeline, kind, n in plan:
        import shutil

        cache = runs / f"{pipeline}-{kind}-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        row = measure(pipeline, kind, n, data, cache)
        shutil.rmtree(cache, ignore_errors=True)
        rows = [r for r in rows if (r["pipeline"], r["data"], r["n_train"]) != (pipeline, kind, n)]
        rows.append(row)
        results.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"{pipeline:13s} {kind:5s} N={n:6d}: fit {row['fit_s']:8.1f} s "
              f"({row['fit_ms_per_image']:.2f} ms/image), predict {row['predict_s']:6.1f} s, "
              f"peak RSS {row['peak_tree_rss_mib']:7.0f} MiB, load {row['load_avg']}", flush=True)
    plot(rows, out / "cost_vs_n.png")
    (out / "summary.md").write_text(markdown_table(rows))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
