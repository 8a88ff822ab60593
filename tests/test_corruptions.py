"""Robustness as a test-side condition every task has (issue 25): the corruptions follow the
published definitions, are deterministic per image, keep dtype and shape, grow with severity;
a corrupted split is derived once and cached (a second extraction reads the cache); any
registered method runs under them on every task; the defences; the robustness tables."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cvbench.corruptions import NAMES, PARAMS, SEVERITIES, corrupt, corrupted_split, parse, psnr
from cvbench.errors import UserError
from cvbench.plan import RunOptions, RunSpec
from cvbench.run import run_one
from cvbench.split import Split
from cvbench.tasks import get_task, task_names


def _photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A photograph-like image: smooth gradients, an object with edges and fine texture (no
    noise: averaging noise away would flatter the resampling corruptions)."""
    rng = np.random.default_rng(seed)
    fx, fy, phase = rng.uniform(20, 40), rng.uniform(20, 40), rng.uniform(0, 6)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([120 + 80 * np.sin(6 * x + phase), 100 + 90 * y, 140 - 60 * x * y], axis=-1)
    base += (25 * np.sin(fx * x * 6.28) * np.cos(fy * y * 6.28))[..., None]  # fine detail
    top, left = int(rng.integers(2, h // 3)), int(rng.integers(2, w // 3))
    base[top: top + h // 4, left: left + w // 4] = (230, 40, 40)  # an object with edges
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(32, 32), (96, 128)])  # CIFAR-10-C's and ImageNet-C's parameters
def test_every_corruption_is_deterministic_keeps_shape_and_grows_with_severity(name, shape):
    psnrs = np.zeros((8, len(SEVERITIES)))
    for s in range(8):
        img = _photo(*shape, seed=s)
        for j, severity in enumerate(SEVERITIES):
            a = corrupt(img, name, severity, np.random.default_rng([s, severity]))
            b = corrupt(img, name, severity, np.random.default_rng([s, severity]))
            assert a.dtype == np.uint8 and a.shape == img.shape
            assert np.array_equal(a, b)  # the same generator gives the same image
            psnrs[s, j] = psnr(img, a)
    mean = psnrs.mean(axis=0)  # over eight images: the strength grows with the severity (0.5 dB
    # of slack between neighbours: CIFAR-10-C's motion blur keeps sigma 2 from severity 3 to 4)
    assert mean[0] > mean[-1] + 1.0 and all(x > y - 0.5 for x, y in zip(mean, mean[1:])), mean.round(2)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_at_a_severity_is_pils_encoder_at_the_published_quality(severity):
    for shape, params in (((32, 32), PARAMS["jpeg"][0]), ((96, 128), PARAMS["jpeg"][1])):
        img = _photo(*shape)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=params[severity - 1])
        expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert np.array_equal(corrupt(img, "jpeg", severity, np.random.default_rng(0)), expected)
    assert PARAMS["jpeg"] == ((80, 65, 58, 50, 40), (25, 18, 15, 10, 7))  # CIFAR-10-C, ImageNet-C


def test_values_are_checked_with_one_sentence():
    assert parse("none") is None and parse("jpeg:3") == ("jpeg", 3)
    assert parse("jpeg_compression:2") == ("jpeg", 2)
    for bad in ("jpeg", "jpeg:0", "jpeg:6", "fog:3"):
        with pytest.raises(UserError):
            parse(bad)
    with pytest.raises(UserError, match="severity must be 1 to 5"):
        get_task("demo").conditions["corruption"].validate("jpeg:9", "demo")


def test_a_corrupted_split_is_deterministic_per_item_and_keeps_item_ids(tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(_photo(40, 48, seed=i)).save(p)
        paths.append(p)
    split = Split(items=paths, labels=np.arange(6) % 2, classes=("a", "b"), name="t/test", root=str(tmp_path))
    a = corrupted_split(split, "gaussian_noise:3", seed=0)
    b = corrupted_split(split.subset([4, 5, 0]), "gaussian_noise:3", seed=0)  # another subset
    assert a.item_ids() == split.item_ids()
    assert np.array_equal(a.image(0, "rgb"), b.image(2, "rgb"))  # item 0 the same in both
    assert not np.array_equal(a.image(0, "rgb"), corrupted_split(split, "gaussian_noise:3", seed=1).image(0, "rgb"))
    assert a.meta["corruption"] == {"name": "gaussian_noise", "severity": 3, "parameter": 0.08,
                                    "definitions": "CIFAR-10-C"}
    assert corrupted_split(split, "none", 0) is split


def test_a_cache_hit_on_a_corrupted_split_extracts_nothing(tmp_path, monkeypatch):
    from cvbench.deep import embeddings
    from tests.tiny_backbone import NAME, jpeg_split, one_thread, register_tiny

    yield_ = one_thread(monkeypatch)
    next(yield_)
    register_tiny(tmp_path / "w")
    split = jpeg_split(tmp_path / "imgs", n=8)
    corrupted = corrupted_split(split, "defocus_blur:3", seed=0)
    embeddings.clear_memory()
    before = dict(embeddings.STATS)
    first, _ = embeddings.embed_split(corrupted, backbone=NAME, device="cpu")
    assert embeddings.STATS["extracted"] - before["extracted"] == 8
    embeddings.clear_memory()
    again_split = corrupted_split(split, "defocus_blur:3", seed=0)  # derived again: from the cache
    mid = dict(embeddings.STATS)
    second, _ = embeddings.embed_split(again_split, backbone=NAME, device="cpu")
    assert embeddings.STATS["extracted"] == mid["extracted"]  # nothing extracted again
    np.testing.assert_array_equal(first, second)
    clean, _ = embeddings.embed_split(split, backbone=NAME, device="cpu")
    assert not np.array_equal(clean, first)  # the cache never mixes clean and corrupted


@pytest.mark.realdata
@pytest.mark.parametrize("task", [t for t in task_names() if t != "demo"])
def test_a_plain_method_runs_under_corruption_on_every_task(real_data, task):
    conditions = {"corruption": "contrast:3"}
    if task == "hotelid":  # it composes with the task's own test condition
        conditions["test_occlusion"] = "masks"
    rec = run_one(task, RunSpec("tiny-knn", params={"size": 8}, conditions=conditions),
                  RunOptions(data_dir=str(real_data), quick=True, save=False, progress=False))
    assert rec.conditions == conditions and rec.data["test_used"]["corruption"]["name"] == "contrast"
    assert rec.item_ids() == run_one(task, RunSpec("tiny-knn", params={"size": 8}),
                                     RunOptions(data_dir=str(real_data), quick=True, save=False,
                                                progress=False)).item_ids()


def test_none_is_the_clean_run_itself():
    opts = RunOptions(save=False, progress=False)
    clean = run_one("demo", RunSpec("tiny-knn", params={"size": 8}), opts)
    none = run_one("demo", RunSpec("tiny-knn", params={"size": 8}, conditions={"corruption": "none"}), opts)
    assert none.key == clean.key and none.conditions == {}


# ---------------------------------------------------------------- defences


def test_the_deep_defence_corrupts_training_batches_and_only_when_asked():
    import torch

    from cvbench.methods import create_method
    from cvbench.split import Split as S

    x = np.stack([_photo(16, 16, seed=i) for i in range(8)])
    split = S(items=x, labels=np.arange(8) % 2, classes=("a", "b"), name="toy/train")
    m = create_method("cnn", model="resnet-small", width=0.125, image_size=16, epochs=1, batch_size=4,
                      augment="none", corruption_augment="gaussian_noise:5", corruption_p=1.0, device="cpu")
    from cvbench.deep.augment import parse_augment

    m.augment_spec_ = parse_augment("none", 16)
    batch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    out = m.augment_batch(batch, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == batch.shape and not torch.equal(out, batch)
    m.set_params(corruption_augment=None)
    assert torch.equal(m.augment_batch(batch, torch.Generator().manual_seed(0)), batch)
    m.fit(split)  # trains end to end with the defence on
    from cvbench.methods import key_params

    plain = create_method("cnn", model="resnet-small")
    assert "corruption_augment" not in plain.run_key_params(key_params(plain))  # old keys stay


def test_the_probe_defence_fits_on_corrupted_copies_too(tmp_path, monkeypatch):
    from cvbench.deep.probe import LinearProbe
    from tests.tiny_backbone import NAME, jpeg_split, one_thread, register_tiny

    gen = one_thread(monkeypatch)
    next(gen)
    register_tiny(tmp_path / "w")
    split = jpeg_split(tmp_path / "imgs", n=24, n_classes=2)
    probe = LinearProbe(backbone=NAME, train_corruptions="jpeg:3,contrast:3", Cs=(1.0,), device="cpu").fit(split)
    assert [c["corruption"] for c in probe.info_["train_corruptions"]] == ["jpeg:3", "contrast:3"]
    assert probe.clf_.n_features_in_ == 16 and len(probe.copies_) == 2
    assert probe.predict_scores(split).shape == (24, 2)


# ---------------------------------------------------------------- pages


def test_the_robustness_table_gives_the_drop_and_its_paired_interval(tmp_path):
    from cvbench.leaderboard import render_index, render_task
    from tests.test_aggregate import _record

    task = get_task("demo")
    y = np.arange(200) % 10
    clean = _record("c", "demo", y, y, task.classes, label="A")
    worse = np.where(np.arange(200) < 120, y, (y + 1) % 10)
    noisy = _record("n", "demo", y, worse, task.classes, label="A", conditions={"corruption": "gaussian_noise:3"})
    same = _record("j", "demo", y, y, task.classes, label="A", conditions={"corruption": "jpeg:3"})
    text = render_task(task, [clean, noisy, same], tmp_path)
    section = text[text.index("## Robustness"):]
    row = next(line for line in section.splitlines() if line.startswith("| A "))
    assert "0.600 (**-0.400 [" in row  # the drop, bold: its paired interval excludes 0
    assert "1.000 (+0.000 [0.000, 0.000])" in row and "0.800 [" in row  # mean under corruption
    every = text[text.index("## Every method"):text.index("## Robustness")]
    assert every.count("| A") == 1  # corrupted runs are not rows of the main table
    index = render_index([task], {"demo": [clean, noisy, same]})
    assert "0.800 [" in next(line for line in index.splitlines() if line.startswith("| [demo]"))
