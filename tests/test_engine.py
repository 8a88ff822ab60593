"""The training engine, the generic deep method and its hooks, on tiny models and data."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cvbench.deep import augment as aug
from cvbench.deep import device as dev
from cvbench.deep.classifier import DeepClassifier
from cvbench.deep.distributed import shard_indices
from cvbench.deep.engine import (
    Callback,
    ImageStore,
    TrainConfig,
    TrainData,
    Trainer,
    TrainHooks,
    TrainingDivergedError,
    lr_factor,
)
from cvbench.errors import UserError
from cvbench.methods import create_method, get_method_spec
from cvbench.split import Split

torch.set_num_threads(1)


class TinyNet(nn.Module):
    """Conv-BN-ReLU-dropout net with forward_features/head, like the zoo's models."""

    def __init__(self, n_outputs: int = 4, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(32, n_outputs)

    def forward_features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class TinyClassifier(DeepClassifier):
    def build_model(self, n_outputs):
        torch.manual_seed(int(self.seed))
        return TinyNet(n_outputs)


def _data(n=32, size=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = np.arange(n) % k
    return x, y


def _split(n=48, size=8, k=4, groups=None):
    x, y = _data(n, size, k)
    return Split(items=x, labels=y, classes=tuple("abcdefgh"[:k]), name="t/train", groups=groups or {})


def _fit(config: TrainConfig, model=None, hooks=None, n=32, weights=None, val=False, **kw):
    torch.manual_seed(0)
    model = model or TinyNet(4, dropout=0.2)
    x, y = _data(n)
    t = Trainer(model, config, hooks=hooks, **kw)
    vd = None
    if val:
        xv, yv = _data(16, seed=1)
        vd = TrainData(xv, torch.as_tensor(yv), yv)
    result = t.fit(TrainData(x, torch.as_tensor(y), y, weights), vd)
    return t, result


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


class FlipCropHooks(TrainHooks):
    def augment_batch(self, x, generator):
        return aug.apply_augment(x, aug.AugmentSpec(flip=True, pad=2), generator)


class InterruptAt(Callback):
    """Ctrl-C at the start of epoch `epoch` (0-based): the checkpoint of the one before is on disk."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, trainer, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


# ------------------------------------------------------------------- training loop


def test_two_batch_overfit_loss_falls():
    cfg = TrainConfig(epochs=25, batch_size=16, optimizer="adam", lr=0.02, weight_decay=0.0,
                      schedule="constant", device="cpu", progress=False)
    _, result = _fit(cfg, model=TinyNet(4))
    losses = result.curves["train_loss"]
    assert result.steps == 50  # 2 batches x 25 epochs
    assert losses[-1] < 0.5 * losses[0]
    assert result.curves["train_acc"][-1] > 0.8


def test_resume_equals_uninterrupted(tmp_path):
    def cfg(**kw):
        return TrainConfig(epochs=3, batch_size=8, lr=0.05, device="cpu", progress=False,
                           checkpoint_path=str(tmp_path / "ck.pt"), **kw)

    weights = np.linspace(1, 2, 32)
    full, res_full = _fit(cfg(), hooks=FlipCropHooks(), weights=weights, val=True)
    (tmp_path / "ck.pt").unlink()

    with pytest.raises(KeyboardInterrupt):
        _fit(cfg(), hooks=FlipCropHooks(), weights=weights, val=True, callbacks=[InterruptAt(1)])
    assert (tmp_path / "ck.pt").is_file()
    resumed, res = _fit(cfg(resume=True), hooks=FlipCropHooks(), weights=weights, val=True)
    assert res.resumed_from_epoch == 1
    assert res.curves["epoch"] == [1, 2, 3]
    assert res.curves["train_loss"] == pytest.approx(res_full.curves["train_loss"])
    assert _same(_weights(full.model), _weights(resumed.model))
    # a finished run resumes to the same weights without training again
    again, res2 = _fit(cfg(resume=True), hooks=FlipCropHooks(), weights=weights, val=True)
    assert res2.resumed_from_epoch == 3 and _same(_weights(full.model), _weights(again.model))


def test_same_seed_same_weights_other_seed_differs():
    cfg = dict(epochs=2, batch_size=8, lr=0.05, device="cpu", progress=False)
    a, _ = _fit(TrainConfig(seed=3, **cfg), hooks=FlipCropHooks())
    b, _ = _fit(TrainConfig(seed=3, **cfg), hooks=FlipCropHooks())
    c, _ = _fit(TrainConfig(seed=4, **cfg), hooks=FlipCropHooks())
    assert _same(_weights(a.model), _weights(b.model))
    assert not _same(_weights(a.model), _weights(c.model))


class NaNAtStep(TrainHooks):
    def __init__(self, bad_step):
        self.bad_step, self.calls = bad_step, 0

    def compute_loss(self, outputs, targets):
        self.calls += 1
        loss = super().compute_loss(outputs, targets)
        return loss * float("nan") if self.calls == self.bad_step else loss


def test_nan_loss_stops_with_clear_error():
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, device="cpu", progress=False)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 2 .*lower the learning rate"):
        _fit(cfg, hooks=NaNAtStep(bad_step=6))  # 4 steps per epoch: call 6 = epoch 2, step 2
    assert issubclass(TrainingDivergedError, UserError)


def test_time_budget_stops_and_is_recorded():
    cfg = TrainConfig(epochs=50, batch_size=8, lr=0.05, device="cpu", progress=False, time_budget_s=1e-4)
    _, result = _fit(cfg)
    assert result.stop_reason == "time_budget"
    assert result.epochs_run == 1 and result.steps == 1


def test_process_clock_budget_and_method_callback():
    class Seen(Callback):
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, trainer, state):
            self.seen.append((state.epoch, type(trainer).__name__))

    class Hooks(TrainHooks):
        def __init__(self):
            self.seen = Seen()

        def callbacks(self):
            return [self.seen]

    hooks = Hooks()
    cfg = TrainConfig(epochs=50, batch_size=8, lr=0.05, device="cpu", progress=False, time_budget_s=1e-4,
                      budget_clock="process")
    _, result = _fit(cfg, hooks=hooks)
    assert result.stop_reason == "time_budget" and result.budget_clock == "process"
    assert hooks.seen.seen == [(0, "Trainer")]
    with pytest.raises(UserError, match="budget_clock"):
        TrainConfig(budget_clock="gpu").validate()


def test_early_stopping_restores_best_epoch():
    cfg = TrainConfig(epochs=10, batch_size=8, lr=1e-12, device="cpu", progress=False, early_stopping=2)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))  # no BN: val accuracy cannot move
    _, result = _fit(cfg, model=linear, val=True)
    assert result.stop_reason == "early_stopping"
    assert result.best_epoch == 1 and result.epochs_run == 3


def test_bf16_autocast_and_channels_last_on_cpu():
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, device="cpu", progress=False, amp="bf16",
                      channels_last=True, grad_clip=1.0)
    t, result = _fit(cfg, val=True)
    assert result.amp == "bfloat16" and result.channels_last
    assert np.isfinite(result.curves["val_loss"][0])
    assert t.model.body[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "step"), ("adamw", "onecycle"), ("adam", "linear")])
def test_optimizers_and_schedules_run(optimizer, schedule):
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer=optimizer, lr=0.01, schedule=schedule,
                      warmup_epochs=1, grad_clip=0.1, grad_clip_mode="value", device="cpu", progress=False)
    t, result = _fit(cfg)
    assert type(t.optimizer).__name__.lower() == optimizer
    assert len(result.curves["lr"]) == 2 and all(np.isfinite(result.curves["train_loss"]))


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="optimizer"):
        TrainConfig(optimizer="lion").validate()
    with pytest.raises(UserError, match="schedule"):
        TrainConfig(schedule="poly").validate()


def test_lr_factor_shapes():
    assert lr_factor("cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor("cosine", 0.05, warmup_fraction=0.1) == pytest.approx(0.5)
    assert lr_factor("step", 0.6) == pytest.approx(0.1) and lr_factor("step", 0.8) == pytest.approx(0.01)
    assert lr_factor("onecycle", 0.0) == pytest.approx(1 / 25)
    assert lr_factor("onecycle", 0.3) == pytest.approx(1.0)
    assert lr_factor("onecycle", 1.0) < 1e-4
    assert lr_factor("constant", 0.7) == 1.0


# ------------------------------------------------------------------- augmentation & data


def test_reflect_crop_matches_numpy_padding():
    x = torch.from_numpy(_data(6, size=8)[0]).permute(0, 3, 1, 2)
    gen = torch.Generator().manual_seed(0)
    out = aug.random_crop(x, 3, gen)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="reflect")
    for i in range(len(x)):
        crops = [padded[i, :, a:a + 8, b:b + 8] for a in range(7) for b in range(7)]
        assert any(np.array_equal(out[i].numpy(), c) for c in crops)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_flip_and_cutout():
    x = torch.from_numpy(_data(16, size=8)[0]).permute(0, 3, 1, 2)
    flipped = aug.random_flip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(flipped[i], x[i]) for i in range(16)]
    mirrored = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(16)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and not all(mirrored)
    cut = aug.cutout(x + 1, 4, torch.Generator().manual_seed(0))  # no zeros before cutout
    zeros = (cut == 0).all(dim=1).sum(dim=(1, 2))
    assert (zeros > 0).all() and (zeros <= 16).all()


def test_parse_augment_and_normalize():
    assert aug.parse_augment("flip-crop", 32) == aug.AugmentSpec(flip=True, pad=4)
    assert aug.parse_augment("crop:2+cutout:8", 32) == aug.AugmentSpec(pad=2, cutout=8)
    assert not aug.parse_augment("none").active
    with pytest.raises(UserError, match="rotate"):
        aug.parse_augment("flip-rotate")
    assert aug.parse_normalize("auto") is None
    assert aug.parse_normalize("0.5,0.5,0.5/0.25,0.25,0.25") == ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(UserError):
        aug.parse_normalize("bogus")


def test_image_store_batches_nchw():
    x, _ = _data(10, size=8)
    store = ImageStore(x, torch.device("cpu"))
    b = store.batch(torch.tensor([3, 1]))
    assert b.shape == (2, 3, 8, 8) and b.dtype == torch.uint8
    assert torch.equal(b[0], torch.from_numpy(x[3]).permute(2, 0, 1))
    gray = ImageStore(x[..., 0], torch.device("cpu"))
    assert gray.batch(torch.tensor([0])).shape == (1, 1, 8, 8)


def test_shard_indices_pads_like_distributed_sampler():
    idx = torch.arange(5)
    a, b = shard_indices(idx, 0, 2), shard_indices(idx, 1, 2)
    assert a.tolist() == [0, 2, 4] and b.tolist() == [1, 3, 0]
    assert shard_indices(idx, 0, 1) is idx


# ------------------------------------------------------------------- device policy


def test_device_selection_with_and_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.select_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        dev.select_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        dev.select_device("tpu")
    assert dev.amp_dtype(torch.device("cpu"), "auto") is None
    assert dev.amp_dtype(torch.device("cpu"), True) == torch.bfloat16
    assert dev.amp_dtype(torch.device("cpu"), False) is None
    with pytest.raises(UserError, match="fp16"):
        dev.amp_dtype(torch.device("cpu"), "fp16")
    assert not dev.use_channels_last(torch.device("cpu"))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dev.select_device("auto") == torch.device("cuda", 1)
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.amp_dtype(cuda, "auto") == torch.float16 and dev.needs_grad_scaler(cuda, torch.float16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.amp_dtype(cuda, "auto") == torch.bfloat16 and not dev.needs_grad_scaler(cuda, torch.bfloat16)
    assert dev.use_channels_last(cuda)


# ------------------------------------------------------------------- the deep method & hooks


def test_deep_classifier_hooks_shapes_and_weights():
    k = 4
    groups = {"g": np.array(["u", "v", "v"] * 16), "h": np.array(["p", "q", "r", "p"] * 12)}
    labels = np.array([0] * 24 + [1] * 12 + [2] * 8 + [3] * 4)
    x, _ = _data(48)
    split = Split(items=x, labels=labels, classes=tuple("abcd"), name="t/train", groups=groups,
                  aux_classes={"g": ("u", "v"), "h": ("p", "q", "r")})
    m = TinyClassifier(epochs=1, batch_size=16, lr=0.01, class_weight="balanced", sampling="balanced:g",
                       aux_targets="g:2,h", augment="flip-crop-cutout:2", normalize="auto", device="cpu")
    m.fit(split)
    cw = np.array(m.info_["class_weight"])
    assert cw == pytest.approx(48 / (k * np.array([24, 12, 8, 4])), rel=1e-3)
    sw = m._sample_weights(split)
    assert sw[groups["g"] == "u"] == pytest.approx(1 / 16) and sw[groups["g"] == "v"] == pytest.approx(1 / 32)
    m2 = TinyClassifier(sampling="balanced")
    assert m2._sample_weights(split)[labels == 3] == pytest.approx(1 / 4)
    assert m.model_.head.out_features == k + 2 + 3
    out = m.predict_scores(split)
    scores = out.main
    assert scores.shape == (48, k) and np.allclose(scores.sum(1), 1, atol=1e-5)
    assert out.aux["g"].shape == (48, 2) and out.aux["h"].shape == (48, 3)
    assert m.info_["aux_classes"] == {"g": ["u", "v"], "h": ["p", "q", "r"]}
    t = m.targets(split)
    assert t.shape == (48, 3) and t[:, 1].tolist() == [0 if g == "u" else 1 for g in groups["g"]]
    assert m.embed(split).shape == (48, 32)
    info = m.info_
    assert info["budget"]["epochs"] == 1 and info["budget"]["protocol"].startswith("cpu budget")
    assert set(info["curves"]) >= {"epoch", "train_loss", "train_acc"} and "val_acc" not in info["curves"]


def test_aux_targets_use_the_tasks_extra_label_order_and_check_sizes():
    groups = {"age": np.array(["10-19", "3-9", "0-2", "3-9"] * 6)}
    x, y = _data(24)
    split = Split(items=x, labels=y, classes=tuple("abcd"), name="t/train", groups=groups,
                  aux_classes={"age": ("0-2", "3-9", "10-19")})
    m = TinyClassifier(aux_targets="age:3")
    assert m._aux_heads(split) == [("age", ("0-2", "3-9", "10-19"))]
    with pytest.raises(UserError, match="age:4"):
        TinyClassifier(aux_targets="age:4")._aux_heads(split)
    with pytest.raises(UserError, match="race"):
        TinyClassifier(aux_targets="race:7")._aux_heads(split)


def test_deep_classifier_validation_curves_and_bad_params():
    split = _split(48)
    m = TinyClassifier(epochs=2, batch_size=16, lr=0.01, val_fraction=0.25, early_stopping=5, device="cpu",
                       time_budget_s=600, protocol="test protocol").fit(split)
    assert m.info_["n_val"] == 12 and len(m.info_["curves"]["val_acc"]) == 2
    assert m.info_["budget"]["protocol"] == "test protocol"
    assert m.info_["budget"]["time_budget_s"] == 600
    for bad in (dict(class_weight="inverse"), dict(sampling="oversample"), dict(early_stopping=3),
                dict(normalize="weird")):
        with pytest.raises(UserError):
            TinyClassifier(**bad).validate({"n_train": len(split)})  # the planner checks, before fit


def test_path_split_is_decoded_once_at_image_size(tmp_path):
    import cv2

    from cvbench.paths import cache_dir
    from cvbench.pixels import PIXELS_VERSION

    x, y = _data(6, size=20)
    paths = []
    for i, img in enumerate(x):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), img[..., ::-1])
    split = Split(items=paths, labels=y, classes=tuple("abcd"), name="t/train", root=str(tmp_path))
    m = TinyClassifier(image_size=10, n_jobs=1)
    pixels = m.pixels(split)
    assert pixels.shape == (6, 10, 10, 3) and pixels.dtype == np.uint8
    cached = cache_dir("pixels") / f"{split.cache_key}-10-rgb-v{PIXELS_VERSION}.npy"
    assert cached.is_file()
    assert np.array_equal(np.load(cached), pixels)
    full = TinyClassifier(image_size=20).pixels(split)
    assert np.array_equal(full, x)  # PNG round trip at native size is exact


def test_subclass_with_kwargs_and_registered_presets():
    class V(TinyClassifier):
        def __init__(self, extra_knob: int = 3, **kwargs):
            super().__init__(**{"epochs": 2, **kwargs})
            self.extra_knob = extra_knob

    v = V(lr=0.5)
    assert v.epochs == 2 and v.lr == 0.5 and v.get_params()["extra_knob"] == 3
    from sklearn.base import clone

    assert "budget_clock" not in v.run_key_params(v.get_params()) and "resume" not in v.run_key_params(v.get_params())
    assert "budget_clock" in v.run_key_params({**v.get_params(), "time_budget_s": 5})

    assert clone(v).get_params() == v.get_params()
    for name in ("cnn", "resnet-se", "resnet18-cifar", "mynet", "fastnet", "resnet-small"):
        assert get_method_spec(name).family == "deep"
    se = create_method("resnet-se")
    assert (se.model, se.epochs, se.lr, se.grad_clip, se.normalize) == ("resnet-se", 200, 0.1, 0.1, "cifar10")


def test_zoo_model_trains_through_registry():
    split = _split(32, size=16, k=4)
    m = create_method("resnet-small", width=0.125, epochs=1, batch_size=16, device="cpu")
    m.fit(split)
    assert m.predict_scores(split).shape == (32, 4)
    assert m.info_["n_params"] > 0 and m.info_["image_size"] == 16


# ------------------------------------------------------------------- torchrun (DDP, gloo)

HANG_S = 1800  # a process that has not finished by then hangs; a busy machine is slow, not wrong
DDP_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    from torch import nn
    from cvbench.deep import distributed as d
    from cvbench.deep.engine import Trainer, TrainConfig, TrainData
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))  # no batch norm: exact equality
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 4, 4, 3), dtype=np.uint8); y = np.arange(24) % 3
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, device="cpu", progress=False, weight_decay=0.0)
    t = Trainer(model, cfg)
    res = t.fit(TrainData(x, torch.as_tensor(y), y))
    if d.is_main_process():
        torch.save({k: v for k, v in t.model.state_dict().items()}, sys.argv[1])
    print("world", t.dist.world_size, "steps", res.steps)
    d.cleanup()
""")


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt")], env=env,
                         capture_output=True, text=True, timeout=HANG_S)
    assert one.returncode == 0, one.stderr
    # --standalone: the rendezvous store binds a port the OS picks (localhost:0). A fixed
    # --master_port collided (EADDRINUSE) when another checkout on the machine ran this test at
    # the same time. The timeouts only catch a hang: three copies of this test side by side on
    # two busy cores took 95 s each.
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script), str(tmp_path / "two.pt")], env=env,
                         capture_output=True, text=True, timeout=HANG_S)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "world 2" in two.stdout
    a = torch.load(tmp_path / "one.pt", weights_only=True)
    b = torch.load(tmp_path / "two.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
