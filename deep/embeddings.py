"""Embeddings of a split's images by a pretrained backbone, cached per image.

    embed_split(split, backbone="efficientnet_lite0", size=None, resize="squash", tta="none",
                weights=None, device="cpu", batch_size=32, n_jobs=None, precision="fp32",
                progress=True, cache=True, runtime="auto") -> (float32 (n, d), info)

`backbone` may join several names with "+" ("dlib_face_resnet+efficientnet_lite0"): their
embeddings are concatenated, each cached on its own.

Preprocessing (`load_batch`): images are decoded (JPEGs by the decoder's DCT scaling to at
least twice the input size on each side, `cvbench.images.fixed_size_draft`; grayscale files
stay one channel until the end), then `resize="squash"` resizes the whole image to size x
size in one step (aspect not kept: nothing is cut off) or `resize="crop"` takes the central
square first; shrinking uses cv2's INTER_AREA, enlarging (CIFAR's 32 px) INTER_LINEAR. The
backbone's normalisation follows (EfficientNet-Lite: (x - 127) / 128, as its TensorFlow
release; torchvision networks: ImageNet mean / std). `tta="flip"` averages each image's
embedding with its mirror image's. dlib's face backbone aligns its own 150 x 150 chip, so
size / resize do not apply to it.

Runtime (`deep/runtime.py`): `runtime="auto"` runs the network on the fastest installed of
OpenVINO / ONNX Runtime for the precision (an ONNX export of the same torch module, cached),
else on torch; "torch", "onnxruntime", "openvino" ask for one. The record says which
(info["runtime"], info["runtime_versions"]) and in which precision.

Cache: one folder per configuration under cache_dir("embeddings"), named by a hash of the
backbone and its exact weights (pinned SHA-256), input size, resize mode, normalisation,
TTA, precision and CACHE_VERSION, and, for other precisions than fp32, the runtime (bf16
differs between runtimes; torch's keys are the ones they always were). fp32 embeddings of
torch, ONNX Runtime and OpenVINO share one folder: on real images they differ by at most one
float16 step (of max(|x|, 2**-10)) at every element, and on average by under a tenth of what
float16 storage itself changes (tests/test_runtime.py), so a cache filled by one serves the
others. CACHE_VERSION 2: one resize from the decoded image (1 resized images whose longer
side exceeds twice the input size with PIL's bilinear filter first; others get the same
pixels in both). Inside, shards (`shard-*.npz`: 16-byte item keys + float16
embeddings) written atomically. An item's key is its file's identity (resolved path, size
and modification time, as `Split.cache_key` does for a split) or, for in-memory images, a
hash of the pixels. Lookups are per image, so subsets and compositions of the same images
(carves, FairFace mixes, quick runs) reuse what any earlier run embedded, and only the missing
images are extracted. Returned embeddings are always float16-rounded, so a cached and a fresh
result are identical.

Extraction (`_extract_batches`): batch by batch, the batch is decoded and resized in n_jobs
threads into one reused uint8 buffer, then the network runs on it with n_jobs threads
(torch: under `torch.inference_mode`, channels_last where it helps, BatchNorm folded, torch
threads restored afterwards; ONNX Runtime / OpenVINO: the uint8 batch is the graph's input).
Decoding and the network take turns instead of overlapping, so neither steals the other's
cores; a tqdm progress bar; info["images_per_s"] is the extraction rate, decode included.

Under torchrun (WORLD_SIZE > 1) the images to extract are sharded over the ranks
(`distributed.shard_indices`), each rank embeds its share, and the rows are all-gathered, so
every rank returns the full matrix (equal to a single process's); the LOCAL_RANK 0 process
of each node writes the shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from typing import Any

import numpy as np

from cvbench.cache import CORRUPT, discard, note
from cvbench.errors import UserError
from cvbench.images import decode_item, fixed_size_draft
from cvbench.split import Split

from .backbones import get_backbone, load_backbone, verified_digests
from .runtime import RUNTIMES, Source, choose_runtime, compile_backbone, versions
from .weights import resolve_weights

CACHE_VERSION = 2  # 2: one resize from the decoded image (1: PIL bilinear to 2x the size first)
RESIZE_MODES = ("squash", "crop")
TTA_MODES = ("none", "flip")
PRECISIONS = ("fp32", "bf16", "fp16")
KEY_BYTES = 16
#: Runtimes whose fp32 embeddings share one cache: their float16-stored embeddings agree
#: with the torch port's (tests/test_runtime.py: test_fp32_runtimes_agree_to_float16_storage)
SHARED_FP32_RUNTIMES = ("torch", "onnxruntime", "openvino")
STATS = {"extracted": 0, "cached": 0}  # images extracted / served from the cache, this process


# ---- decoding -------------------------------------------------------------------------------

def prepare(img: np.ndarray, size: int, resize: str = "squash",
            dst: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB (or gray (H, W)) -> uint8 (size, size[, 3]): squash the whole image, or crop
    its central square first; INTER_AREA when shrinking, INTER_LINEAR when enlarging. With
    `dst` (a C-contiguous array of the result's shape), the result is written into it."""
    import cv2

    if resize == "crop":
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top : top + s, left : left + s]
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        if dst is None:
            return np.ascontiguousarray(img)
        dst[...] = img
        return dst
    interp = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(img), (size, size), dst=dst, interpolation=interp)
    if dst is not None and out is not dst:  # cv2 made a new array: dst did not fit
        dst[...] = out
        return dst
    return out


def load_batch(items, size: int, resize: str = "squash",
               out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (len(items), size, size, 3): each item decoded (JPEGs at the decoder's reduced
    size, `fixed_size_draft`) and resized by `prepare` straight into `out`. A grayscale file
    is decoded and resized as one channel, then replicated into the three (the same pixels
    as resizing its RGB conversion, at half the cost: measured on scene15, 0.8 -> 0.5 ms)."""
    import cv2

    out = np.empty((len(items), size, size, 3), np.uint8) if out is None else out
    draft = fixed_size_draft(size)
    for j, item in enumerate(items):
        img = decode_item(item, draft=draft, mode="native")
        if img.ndim == 2:
            cv2.cvtColor(prepare(img, size, resize), cv2.COLOR_GRAY2RGB, dst=out[j])
        else:
            prepare(img, size, resize, dst=out[j])
    return out


# ---- keys -----------------------------------------------------------------------------------

def item_keys(split: Split) -> np.ndarray:
    """uint8 (n, 16): a key naming each item's content, its file identity or pixel hash."""
    out = np.empty((len(split), KEY_BYTES), dtype=np.uint8)
    for i, item in enumerate(split.items):
        h = hashlib.blake2b(digest_size=KEY_BYTES)
        if split.in_memory:
            a = np.ascontiguousarray(item)
            h.update(f"px{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        else:
            path = os.path.realpath(str(item))
            try:
                st = os.stat(path)
            except OSError as exc:
                from cvbench.errors import BadImageError

                raise BadImageError(item, exc.strerror or "cannot stat the file") from None
            h.update(f"file:{path}:{st.st_size}:{st.st_mtime_ns}".encode())
        out[i] = np.frombuffer(h.digest(), np.uint8)
    return out


def _as_bytes(keys: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(keys, np.uint8)]


def config_key(backbone: str, size: int, resize: str, tta: str, precision: str,
               runtime: str = "torch") -> str:
    """The cache folder name of one embedding configuration (see the module doc). fp32
    embeddings of every runtime share one (SHARED_FP32_RUNTIMES); any other precision is
    keyed by the runtime too, torch's keeping the name it always had."""
    spec = get_backbone(backbone)
    desc = {"backbone": spec.identity(), "size": size, "resize": resize, "tta": tta,
            "precision": precision, "v": CACHE_VERSION}
    if spec.kind == "torch" and runtime != "torch" and not (
            precision == "fp32" and runtime in SHARED_FP32_RUNTIMES):
        desc["runtime"] = runtime
    if spec.kind == "torch":
        desc.update(mean=spec.mean, std=spec.std, interp="area-down/linear-up")
    else:
        desc.update(size=spec.native_size, resize="dlib-chip", margin=spec.extra.get("margin"))
    blob = json.dumps(desc, sort_keys=True)
    return f"{spec.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


# ---- the store ------------------------------------------------------------------------------

class EmbeddingStore:
    """The cached embeddings of one configuration: shards on disk, an index in memory."""

    def __init__(self, key: str):
        self.key = key
        self._index: dict[bytes, int] = {}
        self._parts: list[np.ndarray] = []
        self._data: np.ndarray | None = None
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    @property
    def folder(self):
        from cvbench.paths import cache_dir

        return cache_dir("embeddings") / self.key

    def _append(self, keys: np.ndarray, emb: np.ndarray) -> None:
        base = sum(len(p) for p in self._parts)
        fresh, seen = [], set()
        for j, k in enumerate(_as_bytes(keys)):
            if k not in self._index and k not in seen:
                seen.add(k)
                fresh.append(j)
        for n, j in enumerate(fresh):
            self._index[keys[j].tobytes()] = base + n
        if fresh:
            self._parts.append(np.asarray(emb[fresh], np.float16))
            self._data = None

    def refresh(self) -> None:
        """Read shards written since the last look (by this or another process)."""
        folder = self.folder
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("shard-*.npz")):
            if path.name in self._loaded:
                continue
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys, emb = z["keys"], z["emb"]
            except CORRUPT as exc:  # truncated or foreign shard: recomputed
                discard(path, exc)
                continue
            self._loaded.add(path.name)
            self._append(keys, emb)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key in the store, -1 where absent."""
        with self._lock:
            self.refresh()
            return np.array([self._index.get(k, -1) for k in _as_bytes(keys)], dtype=np.int64)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._data is None:
                self._data = np.concatenate(self._parts) if self._parts else None
            return self._data[rows]

    def add(self, keys: np.ndarray, emb: np.ndarray, write: bool = True) -> None:
        """Add float16 embeddings for `keys`; with write, as a new shard (atomic)."""
        from cvbench.atomic import atomic_open

        emb = np.asarray(emb, np.float16)
        with self._lock:
            self._append(keys, emb)
            if not write or not len(keys):
                return
            name = f"shard-{hashlib.blake2b(keys.tobytes(), digest_size=8).hexdigest()}.npz"
            try:
                with atomic_open(self.folder / name, "wb") as f:
                    np.savez(f, keys=keys, emb=emb)
                self._loaded.add(name)
            except OSError:  # a read-only cache is not an error
                pass


_STORES: dict[str, EmbeddingStore] = {}
_STORES_LOCK = threading.Lock()


def get_store(key: str) -> EmbeddingStore:
    with _STORES_LOCK:
        if key not in _STORES:
            _STORES[key] = EmbeddingStore(key)
        return _STORES[key]


def clear_memory() -> None:
    """Forget the in-memory indexes (the disk cache stays)."""
    with _STORES_LOCK:
        _STORES.clear()


# ---- extraction -----------------------------------------------------------------------------

def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _progress(total: int, desc: str, enabled: bool):
    from cvbench import progress

    return progress.bar(total, desc, unit="img", show=enabled)


def _extract_batches(embed, items: np.ndarray, size: int, resize: str, batch_size: int,
                     n_jobs: int, d: int, bar) -> np.ndarray:
    """float32 (len(items), d): batch by batch, decode + resize the batch in n_jobs threads
    (PIL's decoder and OpenCV release the GIL), then run the network on it with its n_jobs
    threads. The two never overlap, so decode threads and the runtime's pool never fight for
    the cores (see the README for what was measured); OpenCV runs one thread per decode thread."""
    import cv2

    out = np.empty((len(items), d), np.float32)
    buf = np.empty((min(batch_size, len(items)), size, size, 3), np.uint8)
    old_cv = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for a in range(0, len(items), batch_size):
                chunk = items[a : a + batch_size]
                batch = buf[: len(chunk)]
                cuts = np.linspace(0, len(chunk), min(n_jobs, len(chunk)) + 1).astype(int)
                list(pool.map(load_batch, [chunk[i:j] for i, j in zip(cuts, cuts[1:])],
                              repeat(size), repeat(resize),
                              [batch[i:j] for i, j in zip(cuts, cuts[1:])]))
                out[a : a + len(chunk)] = embed(batch)
                bar.update(len(chunk))
    finally:
        cv2.setNumThreads(old_cv)
    return out


def _extract(backbone: str, weights, device, items: np.ndarray, size: int, resize: str,
             tta: str, batch_size: int, n_jobs: int, precision: str, bar,
             runtime: str = "torch") -> tuple[np.ndarray, dict]:
    """Load the backbone (weights verified) and embed `items` on `runtime` (already chosen
    by choose_runtime); tests spy on this. A runtime whose export of the backbone is cached
    does not build the torch network at all."""
    spec = get_backbone(backbone)
    if runtime not in ("torch", "dlib"):
        digests = verified_digests(backbone, weights)
        src = Source(spec, digests, lambda: load_backbone(backbone, weights=weights, device="cpu"))
        engine = compile_backbone(src, size, runtime, precision, n_jobs)
        emb = _extract_batches(lambda b: engine.embed(b, tta=tta), items, size, resize,
                               batch_size, n_jobs, spec.num_features, bar)
        return emb, {"weights_sha256": [d[:16] for d in digests], "device": "cpu",
                     "runtime_versions": versions(runtime)}
    bb = load_backbone(backbone, weights=weights, device=device)
    info: dict[str, Any] = {"weights_sha256": [d[:16] for d in bb.digests]}
    if bb.kind == "dlib":
        emb = bb.extract(items, tta=tta, n_jobs=n_jobs, progress=bar.update)
        return emb, info
    import torch

    from .device import amp_dtype

    dtype = None if precision == "fp32" else amp_dtype(bb.device, precision)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, n_jobs))
    try:
        emb = _extract_batches(lambda b: bb.embed(b, tta=tta, amp_dtype=dtype), items, size,
                               resize, batch_size, n_jobs, bb.num_features, bar)
    finally:
        torch.set_num_threads(old_threads)
    info.update(device=str(bb.device), channels_last=bb.channels_last,
                runtime_versions=versions(runtime))
    return emb, info


def _dist_state():
    from .distributed import env_info

    info = env_info()
    if not info.enabled:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        from .device import select_device
        from .distributed import init_distributed

        init_distributed(select_device("auto"))
    return dist


def _all_gather_rows(dist, idx: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's (indices, rows) concatenated (all ranks hold equally many rows)."""
    import torch

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    world = dist.get_world_size()
    t_idx = torch.as_tensor(idx, dtype=torch.int64, device=dev)
    t_emb = torch.as_tensor(emb, dtype=torch.float32, device=dev)
    all_idx = [torch.empty_like(t_idx) for _ in range(world)]
    all_emb = [torch.empty_like(t_emb) for _ in range(world)]
    dist.all_gather(all_idx, t_idx)
    dist.all_gather(all_emb, t_emb)
    return (torch.cat(all_idx).cpu().numpy(), torch.cat(all_emb).cpu().numpy())


def _check(name: str, value, valid) -> None:
    if value not in valid:
        raise UserError(f"{name}={value!r} is not one of {', '.join(map(repr, valid))}")


def embed_split(split: Split, backbone: str = "efficientnet_lite0", size: int | None = None,
                resize: str = "squash", tta: str = "none", weights: str | None = None,
                device: Any = "cpu", batch_size: int = 32, n_jobs: int | None = None,
                precision: str = "fp32", progress: bool = True, cache: bool = True,
                runtime: str = "auto") -> tuple[np.ndarray, dict[str, Any]]:
    """float32 (len(split), d) embeddings and what was done (see the module doc)."""
    names = [b.strip() for b in str(backbone).split("+") if b.strip()]
    if len(names) > 1:
        if weights:
            raise UserError("weights= names one file; it cannot go with a combined backbone "
                            f"{backbone!r}")
        parts = [embed_split(split, b, size, resize, tta, None, device, batch_size, n_jobs,
                             precision, progress, cache, runtime) for b in names]
        info = {"backbone": backbone, "parts": [p[1] for p in parts],
                "dim": int(sum(p[0].shape[1] for p in parts))}
        for k in ("n", "cached", "extracted", "seconds", "total_seconds"):
            info[k] = parts[0][1][k] if k == "n" else round(sum(p[1][k] for p in parts), 3)
        return np.hstack([p[0] for p in parts]), info
    _check("resize", resize, RESIZE_MODES)
    _check("tta", tta, TTA_MODES)
    _check("precision", precision, PRECISIONS)
    spec = get_backbone(names[0] if names else str(backbone))
    size = int(size or spec.native_size)
    if size < 16:
        raise UserError(f"embedding size must be an integer >= 16, got {size!r}")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    resolve_weights(spec, weights)  # a missing package or file fails here, cache or not
    jobs = int(n_jobs) if n_jobs and n_jobs > 0 else _cores()
    if spec.kind == "torch":
        chosen = choose_runtime(runtime, precision, device)
    else:
        _check("runtime", runtime, RUNTIMES)
        chosen = spec.kind  # dlib runs its own network
    key = config_key(spec.name, size, resize, tta, precision, chosen)
    t0 = time.perf_counter()
    keys = item_keys(split)
    store = get_store(key)
    rows = store.lookup(keys) if cache else np.full(len(keys), -1, np.int64)
    missing = np.flatnonzero(rows < 0)
    # one extraction per distinct missing key (duplicate images are embedded once)
    first: dict[bytes, int] = {}
    for i, k in zip(missing.tolist(), _as_bytes(keys[missing])):
        first.setdefault(k, i)
    todo = np.asarray(sorted(first.values()), dtype=np.int64)

    dist = _dist_state()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    if dist:
        from .distributed import broadcast_object

        todo = np.asarray(broadcast_object(todo.tolist()), dtype=np.int64)
    extra: dict[str, Any] = {}
    seconds = 0.0
    new = np.zeros((0, spec.num_features), np.float16)
    if len(todo):
        import torch

        from .distributed import shard_indices

        mine = shard_indices(torch.as_tensor(todo), rank, world).numpy() if dist else todo
        desc = f"embed {spec.name} {split.name}" + (f" [rank {rank}/{world}]" if dist else "")
        with _progress(len(mine), desc, progress) as bar:
            t1 = time.perf_counter()
            emb, extra = _extract(spec.name, weights, device, split.items[mine], size, resize,
                                  tta, int(batch_size), jobs, precision, bar, runtime=chosen)
            seconds = time.perf_counter() - t1
        STATS["extracted"] += len(mine)
        if dist:
            idx, emb = _all_gather_rows(dist, mine, emb)
            order = {int(i): j for j, i in enumerate(idx)}
            emb = emb[[order[int(i)] for i in todo]]
        new = emb.astype(np.float16)
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if cache:
            store.add(keys[todo], new, write=local_rank == 0)
    out = np.empty((len(split), spec.num_features), np.float16)
    have = rows >= 0
    if have.any():
        out[have] = store.rows(rows[have])
    if len(missing):
        pos = {k: j for j, k in enumerate(_as_bytes(keys[todo]))}
        out[missing] = new[[pos[k] for k in _as_bytes(keys[missing])]]
    STATS["cached"] += int(have.sum())
    if have.any():
        note("embeddings", hit=True, n=int(have.sum()))
    if n_todo := len(todo):
        note("embeddings", hit=False, n=n_todo)
    if dist:
        from .distributed import barrier

        barrier()
    n_new = len(todo)
    info = {
        "backbone": spec.name, "size": size if spec.kind == "torch" else spec.native_size,
        "resize": resize if spec.kind == "torch" else "dlib 5-point aligned chip",
        "tta": tta, "precision": precision, "runtime": chosen, "n": len(split),
        "dim": spec.num_features,
        "cached": int(have.sum()), "extracted": int(n_new),
        "duplicates": int(len(missing) - n_new), "seconds": round(seconds, 3),
        "total_seconds": round(time.perf_counter() - t0, 3), "cache": key if cache else None,
        "world_size": world, "threads": jobs, **extra,
    }
    if n_new and seconds > 0:
        info["images_per_s"] = round(n_new / seconds, 2)
    return out.astype(np.float32), info
