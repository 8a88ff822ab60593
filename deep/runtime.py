"""Where a pretrained backbone's forward pass runs for embedding extraction: the torch port
itself (the reference, the training path and the fallback), ONNX Runtime or OpenVINO.

    choose_runtime(runtime="auto", precision="fp32", device) -> "torch" | "onnxruntime" | "openvino"
    compile_backbone(bb, size, runtime, precision, threads) -> Engine   (engine.embed(batch, tta))

`runtime="auto"` takes the fastest installed runtime for the precision, in an order measured
at 224 px, batch 32 (README, "Inference runtimes and bf16"): fp32 OpenVINO then ONNX Runtime
on Intel CPUs (the project's shared Xeon: OpenVINO 1.4-1.7x ONNX Runtime, decode included),
ONNX Runtime then OpenVINO elsewhere (the 2-core AMD EPYC of issue 24: ONNX Runtime 145
images/s, OpenVINO 90, torch 79, network alone); bf16 OpenVINO (AVX-512 bf16 / AMX kernels;
ONNX Runtime has no bf16 CPU kernels), else torch autocast; fp16 and every CUDA device:
torch. Without the `infer` extra everything runs on torch. Both runtimes give the torch
port's fp32 embeddings to <= 1e-4 (a test on real images; measured <= 7e-6), so the choice
changes speed, not results.

The network is exported once per (weights digest, input size, opset, exporter version) to
`$CVBENCH_CACHE/onnx/<backbone>-<hash>.onnx` with the TorchScript exporter (torch.onnx, needs
the `onnx` package), from the same BatchNorm-folded module torch runs, with the input
normalisation inside the graph: its input is the uint8 (n, size, size, 3) RGB batch itself,
so nothing is converted or copied before the call. A sidecar `.json` holds the file's SHA-256
and what it was exported from; a file that does not match it (truncated, overwritten) is
deleted with a one-line warning and exported again (cvbench.cache's rule). Compiled sessions
are kept per process, so a fit and a predict in one process compile once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvbench.cache import CORRUPT, discard
from cvbench.errors import UserError

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
ONNX_RUNTIMES = ("onnxruntime", "openvino")
OPSET = 17
EXPORT_VERSION = 1
_ENGINES: dict[tuple, Engine] = {}
_LOCK = threading.Lock()


def installed(name: str) -> bool:
    """Whether `name` ("onnxruntime", "openvino", "onnx") can be imported here; tests
    simulate a missing package by patching this."""
    return importlib.util.find_spec(name) is not None


def available() -> list[str]:
    """The runtimes this machine can run ("torch" always; the others need the exporter)."""
    out = ["torch"]
    if installed("onnx"):
        out += [r for r in ONNX_RUNTIMES if installed(r)]
    return out


def _cpuinfo(field: str) -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    return _cpuinfo("vendor_id")


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX-512 bf16 or AMX): OpenVINO only runs
    bf16 there (elsewhere it falls back to f32, which would not be what was asked)."""
    flags = set(_cpuinfo("flags").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def preference(precision: str) -> list[str]:
    """Runtimes in the order `auto` tries them for `precision` on the CPU (see the doc)."""
    if precision == "bf16":
        return ["openvino", "torch"] if cpu_has_bf16() else ["torch"]
    if precision == "fp32":
        fast = ["openvino", "onnxruntime"] if cpu_vendor() == "GenuineIntel" \
            else ["onnxruntime", "openvino"]
        return [*fast, "torch"]
    return ["torch"]


def choose_runtime(runtime: str, precision: str, device: Any) -> str:
    """The runtime that will run: `runtime` itself, checked, or auto's pick."""
    if runtime not in RUNTIMES:
        raise UserError(f"runtime={runtime!r} is not one of {', '.join(map(repr, RUNTIMES))}")
    dev = str(getattr(device, "type", device) or "cpu").split(":")[0]
    if dev == "auto":
        from .device import select_device

        dev = select_device("auto").type
    if runtime == "auto":
        if dev != "cpu":
            return "torch"
        have = available()
        return next(r for r in preference(precision) if r in have)
    if runtime == "torch":
        return runtime
    if dev != "cpu":
        raise UserError(f"runtime={runtime!r} runs on the CPU; device={device!r} needs "
                        "runtime='torch' (or 'auto')")
    if runtime == "onnxruntime" and precision != "fp32":
        raise UserError(f"runtime='onnxruntime' has no {precision} CPU kernels; use "
                        "precision='fp32', or runtime='openvino' / 'torch' for bf16")
    if runtime == "openvino" and precision == "fp16":
        raise UserError("runtime='openvino' runs fp32 or bf16 here; fp16 needs runtime='torch'")
    missing = [p for p in ("onnx", runtime) if not installed(p)]
    if missing:
        raise UserError(f"runtime={runtime!r} needs {' and '.join(missing)} (the `infer` extra: "
                        "pip install -e '.[infer]'); runtime='auto' falls back to torch")
    return runtime


def versions(runtime: str) -> dict[str, str]:
    """The versions that made an engine (for the record)."""
    import torch

    out = {"torch": torch.__version__.split("+")[0]}
    for name in ("onnx", runtime) if runtime in ONNX_RUNTIMES else ():
        mod = importlib.import_module(name)
        out[name] = str(getattr(mod, "__version__", "?")).split("-")[0]
    return out


# ---- export ----------------------------------------------------------------------------------

@dataclass
class Source:
    """What an export is made from: the registry entry, the verified digests of its weights
    and how to load the torch backbone (`build`, called only when the file must be made)."""

    spec: Any
    digests: list[str]
    build: Callable[[], Any]

    @classmethod
    def of(cls, bb) -> Source:
        """The source of an already loaded torch Backbone."""
        return bb if isinstance(bb, Source) else cls(bb.spec, list(bb.digests), lambda: bb)


def _export_desc(src: Source, size: int) -> dict[str, Any]:
    import onnx
    import torch

    return {"backbone": src.spec.identity(), "digests": list(src.digests), "size": int(size),
            "mean": list(src.spec.mean), "std": list(src.spec.std), "opset": OPSET,
            "exporter": f"torch.onnx-torchscript {torch.__version__}", "onnx": onnx.__version__,
            "fused": True, "input": "uint8 NHWC RGB", "v": EXPORT_VERSION}


def _export_key(src: Source, size: int) -> str:
    blob = json.dumps(_export_desc(src, size), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def onnx_path(bb, size: int) -> Path:
    """Where the export of `bb` (a Backbone or a Source) at `size` is cached."""
    from cvbench.paths import cache_dir

    src = Source.of(bb)
    return cache_dir("onnx") / f"{src.spec.name}-{_export_key(src, size)}.onnx"


def _graph(bb):
    """What is exported: uint8 NHWC RGB in, `bb`'s normalisation, then its forward_features
    (the same ops, in the same order, as `Backbone.embed`)."""
    import torch
    from torch import nn

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = bb.model
            self.register_buffer("mean", bb._mean.detach().cpu().clone())
            self.register_buffer("scale", bb._scale.detach().cpu().clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.permute(0, 3, 1, 2).float().sub(self.mean).div(self.scale)
            return self.model.forward_features(x)

    return Graph().eval()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_onnx(bb, size: int) -> Path:
    """The ONNX file of `bb` (a Backbone or a Source) at `size`: exported once, checked
    against its recorded SHA-256 on every use."""
    import torch

    from cvbench.atomic import atomic_write_bytes, atomic_write_text

    src = Source.of(bb)
    path = onnx_path(src, size)
    meta = path.with_suffix(".json")
    if path.is_file():
        try:
            want = json.loads(meta.read_text())["sha256"]
            if _sha256(path.read_bytes()) != want:
                raise ValueError("its SHA-256 does not match the one written with it")
            return path
        except (*CORRUPT, json.JSONDecodeError, TypeError) as exc:
            discard(path, exc)
            meta.unlink(missing_ok=True)
    graph = _graph(src.build())
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings: SAME padding is constant per size
        torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "n"}, "features": {0: "n"}},
                          do_constant_folding=True)
    data = buf.getvalue()
    try:
        atomic_write_bytes(path, data)
    except OSError:  # a read-only cache is not an error: a private temporary copy
        path = Path(tempfile.gettempdir()) / f"cvbench-onnx-{os.getuid()}" / path.name
        atomic_write_bytes(path, data)
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {"sha256": _sha256(data), **_export_desc(src, size)}, indent=1, sort_keys=True))
    return path


# ---- engines ---------------------------------------------------------------------------------

class Engine:
    """A compiled backbone: `embed(batch, tta)` maps uint8 (n, size, size, 3) RGB to float32
    (n, d), as `Backbone.embed` does."""

    runtime = ""
    precision = "fp32"
    _lock = threading.Lock()  # one call at a time per process (sessions are shared)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, batch: np.ndarray, tta: str = "none") -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        with self._lock:
            if tta == "flip":
                f = self._run(np.concatenate([batch, batch[:, :, ::-1]]))
                return 0.5 * (f[: len(batch)] + f[len(batch):])
            return self._run(batch)


class OrtEngine(Engine):
    runtime = "onnxruntime"

    def __init__(self, model, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle pool threads sleep instead of spinning: between calls the decode threads
        # need the cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {"images": batch})[0], dtype=np.float32)


class OpenVinoEngine(Engine):
    runtime = "openvino"

    def __init__(self, model, threads: int, precision: str):
        import openvino as ov

        core = ov.Core()
        net = core.read_model(str(model))
        hint = {"fp32": "f32", "bf16": "bf16"}[precision]
        # f32 said explicitly: on CPUs with AMX, OpenVINO's default precision is bf16
        self.compiled = core.compile_model(net, "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": max(1, threads),
            "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False})
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != {"f32": ov.Type.f32, "bf16": ov.Type.bf16}[hint]:
            raise UserError(f"OpenVINO runs {got} where {hint} was asked for on this CPU; use "
                            "runtime='torch' for this precision")
        self.precision = precision
        self.request = self.compiled.create_infer_request()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: batch})
        return np.array(next(iter(out.values())), dtype=np.float32)


def compile_backbone(bb, size: int, runtime: str, precision: str, threads: int) -> Engine:
    """`bb` (a loaded torch Backbone, or a Source that loads it only if the export is not
    cached yet) compiled for `runtime` at `size`; compiled once per process (keyed by what
    the export is made from, not where it is cached)."""
    src = Source.of(bb)
    key = (_export_key(src, size), runtime, precision, int(threads))
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            model = export_onnx(src, size)
            engine = OrtEngine(model, threads) if runtime == "onnxruntime" \
                else OpenVinoEngine(model, threads, precision)
            _ENGINES[key] = engine
    return engine


def clear_engines() -> None:
    """Forget the compiled sessions of this process (the exported files stay)."""
    with _LOCK:
        _ENGINES.clear()

