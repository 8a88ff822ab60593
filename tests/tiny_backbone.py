"""A tiny random-weights backbone registered like a real one (weights file + pinned SHA-256),
so the embedding pipeline, its cache and the probes are tested in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cvbench.deep.models import ModelSpec, Weights, register_spec
from cvbench.deep.models_base import ClassifierNet
from cvbench.deep.weights import WeightsFile, read_state_dict, sha256_file
from cvbench.split import Split

NAME = "test-tiny"


class TinyNet(ClassifierNet):
    """conv-BN-ReLU x 2 (stride 2), global average pool: 16-d embedding."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.num_features = 16
        self.num_classes = num_classes
        self.head = nn.Linear(16, num_classes)

    def forward_features(self, x):
        return self.body(x).mean(dim=(2, 3))


def _load(model, path: Path) -> None:
    model.load_state_dict(read_state_dict(path), strict=True)


def tiny_weights(folder: Path) -> Path:
    """Write (once) the tiny net's seeded weights to folder/tiny.pth."""
    path = Path(folder) / "tiny.pth"
    if not path.is_file():
        torch.manual_seed(0)
        net = TinyNet()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)
    return path


def register_tiny(folder: Path, name: str = NAME) -> ModelSpec:
    """The tiny net as a registry entry whose weights file is pinned by its SHA-256."""
    path = tiny_weights(folder)
    spec = ModelSpec(
        name=name, builder=TinyNet, num_classes=10, input_size=(3, 32, 32),
        description="test-only tiny net", num_features=16,
        weights=Weights("file", (WeightsFile("tiny.pth", path=str(path), sha256=sha256_file(path)),),
                        num_classes=10, load=_load))
    return register_spec(spec, replace=True)


def jpeg_split(folder: Path, n: int = 12, n_classes: int = 3, name: str = "syn/train",
               seed: int = 0) -> Split:
    """n JPEGs of varied size and mode (RGB and grayscale), labels i % n_classes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arr[..., i % n_classes] = 255  # a colour per class
        img = Image.fromarray(arr)
        if i % 4 == 3:
            img = img.convert("L")
        path = folder / f"img_{seed}_{i:03d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return Split(items=paths, labels=np.arange(n) % n_classes,
                 classes=tuple(f"c{k}" for k in range(n_classes)), name=name, root=str(folder))


def one_thread(monkeypatch):
    """One torch thread (and one for extraction): on a shared 2-core machine, OpenMP threads
    spinning against other jobs make small forwards ~30x slower (measured)."""
    from cvbench.deep import embeddings

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(embeddings, "_cores", lambda: 1)
    yield
    torch.set_num_threads(old)
