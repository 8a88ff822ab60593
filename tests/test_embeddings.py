"""Embedding extraction and its per-image cache, on a tiny registered backbone."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cvbench.deep import embeddings
from cvbench.deep.embeddings import embed_split, item_keys, prepare
from cvbench.errors import UserError
from cvbench.split import Split
from tests.tiny_backbone import NAME, jpeg_split, one_thread, register_tiny


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    yield from one_thread(monkeypatch)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "cache"))
    embeddings.clear_memory()
    register_tiny(tmp_path / "weights")
    yield jpeg_split(tmp_path / "imgs")
    embeddings.clear_memory()


def _no_extraction(*args, **kwargs):
    raise AssertionError("extraction ran although every image was cached")


def test_embeddings_deterministic_and_float16_rounded(tiny):
    a, info = embed_split(tiny, NAME, cache=False, progress=False)
    b, _ = embed_split(tiny, NAME, cache=False, progress=False)
    assert a.shape == (12, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, a.astype(np.float16).astype(np.float32))
    assert info["extracted"] == 12 and info["cached"] == 0 and info["images_per_s"] > 0
    assert np.abs(a).sum(axis=1).min() > 0  # real features, not zeros


def test_cache_serves_subsets_and_compositions_without_extraction(tiny, monkeypatch):
    full, _ = embed_split(tiny, NAME, progress=False)
    monkeypatch.setattr(embeddings, "_extract", _no_extraction)
    idx = np.array([5, 2, 2, 11, 0])  # reordered, with a repeat: a FairFace-style composition
    sub, info = embed_split(tiny.subset(idx, name="syn/mix"), NAME, progress=False)
    np.testing.assert_array_equal(sub, full[idx])
    assert info["cached"] == 5 and info["extracted"] == 0
    embeddings.clear_memory()  # a new process: the shards on disk serve it
    again, _ = embed_split(tiny, NAME, progress=False)
    np.testing.assert_array_equal(again, full)


def test_only_missing_images_are_extracted(tiny, monkeypatch):
    embed_split(tiny.subset(np.arange(6)), NAME, progress=False)
    seen = []
    real = embeddings._extract

    def spy(backbone, weights, device, items, *args, **kwargs):
        seen.extend(map(str, items))
        return real(backbone, weights, device, items, *args, **kwargs)

    monkeypatch.setattr(embeddings, "_extract", spy)
    full, info = embed_split(tiny, NAME, progress=False)
    assert seen == [str(p) for p in tiny.items[6:]]
    assert info["cached"] == 6 and info["extracted"] == 6
    fresh, _ = embed_split(tiny, NAME, cache=False, progress=False)
    np.testing.assert_array_equal(full, fresh)


def test_cache_key_separates_configurations_and_changed_files(tiny, monkeypatch):
    base, _ = embed_split(tiny, NAME, progress=False)
    flip, info_f = embed_split(tiny, NAME, tta="flip", progress=False)
    big, info_b = embed_split(tiny, NAME, size=48, progress=False)
    crop, info_c = embed_split(tiny, NAME, resize="crop", progress=False)
    assert len({info_f["cache"], info_b["cache"], info_c["cache"]}) == 3
    assert info_f["extracted"] == info_b["extracted"] == info_c["extracted"] == 12
    assert not np.array_equal(base, flip) and not np.array_equal(base, big)
    # a file replaced under the same name gets a new key: only it is extracted again
    path = tiny.items[3]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, info = embed_split(tiny, NAME, progress=False)
    assert info["extracted"] == 1 and info["cached"] == 11


def test_flip_tta_averages_the_mirror_image(tiny):
    from cvbench.deep.backbones import load_backbone

    bb = load_backbone(NAME)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    manual = 0.5 * (bb.embed(x) + bb.embed(np.ascontiguousarray(x[:, :, ::-1])))
    np.testing.assert_allclose(bb.embed(x, tta="flip"), manual, rtol=1e-5, atol=1e-6)
    sym = np.concatenate([x[:, :, :16], x[:, :, :16][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(bb.embed(sym, tta="flip"), bb.embed(sym), rtol=1e-5, atol=1e-6)


def test_in_memory_images_keyed_by_pixels(tiny):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)
    arr[4] = arr[1]  # a duplicate image
    split = Split(arr, np.arange(5) % 2, ("a", "b"), "mem/train")
    keys = item_keys(split)
    assert keys.shape == (5, 16) and (keys[4] == keys[1]).all() and not (keys[0] == keys[1]).all()
    X, info = embed_split(split, NAME, progress=False)
    assert info["extracted"] == 4 and info["duplicates"] == 1
    np.testing.assert_array_equal(X[4], X[1])


def test_shards_are_float16_npz_and_no_temp_files(tiny):
    _, info = embed_split(tiny, NAME, progress=False)
    folder = embeddings.get_store(info["cache"]).folder
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 1 and files[0].startswith("shard-") and files[0].endswith(".npz")
    with np.load(folder / files[0]) as z:
        assert z["emb"].dtype == np.float16 and z["emb"].shape == (12, 16)
        assert z["keys"].shape == (12, 16)


def test_threads_restored_and_bad_parameters(tiny):
    before = torch.get_num_threads()
    embed_split(tiny, NAME, n_jobs=1, cache=False, progress=False)
    assert torch.get_num_threads() == before
    for kwargs in ({"resize": "stretch"}, {"tta": "ten-crop"}, {"size": 4}, {"batch_size": 0},
                   {"precision": "int8"}):
        with pytest.raises(UserError):
            embed_split(tiny, NAME, progress=False, **kwargs)
    with pytest.raises(UserError, match="unknown backbone"):
        embed_split(tiny, "no-such-net", progress=False)


def test_prepare_squash_and_crop():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20] = 255  # left quarter white
    squash = prepare(img, 32, "squash")
    crop = prepare(img, 32, "crop")  # central 40x40: columns 20..60, all black
    assert squash.shape == crop.shape == (32, 32, 3)
    assert squash[:, :4].min() == 255 and crop.max() == 0


def test_combined_backbones_concatenate(tiny, tmp_path):
    register_tiny(tmp_path / "weights2", name="test-tiny-b")
    X, info = embed_split(tiny, f"{NAME}+test-tiny-b", progress=False)
    a, _ = embed_split(tiny, NAME, progress=False)
    assert X.shape == (12, 32) and info["dim"] == 32
    np.testing.assert_array_equal(X[:, :16], a)
    assert info["total_seconds"] >= info["seconds"] >= 0  # what the probes record
    from cvbench.deep.probe import LinearProbe

    probe = LinearProbe(backbone=f"{NAME}+test-tiny-b", Cs=[1.0], val_fraction=0.25, n_jobs=1).fit(tiny)
    assert probe.info_["embeddings"]["train"]["dim"] == 32 and probe.predict_scores(tiny).shape == (12, 3)


# ---- torchrun: two gloo processes on the CPU ------------------------------------------------

def _rank_main(rank: int, world: int, port: int, root: str) -> None:
    from pathlib import Path

    # the store is the parent's (as torchrun's agent holds it): no rank binds a port
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True",
                      CVBENCH_CACHE=str(Path(root) / "cache-dist"))
    import torch.distributed as dist

    torch.set_num_threads(1)
    register_tiny(Path(root) / "weights")
    split = jpeg_split(Path(root) / "imgs")
    try:
        X, info = embed_split(split, NAME, progress=False, n_jobs=1)
        np.save(Path(root) / f"rank{rank}.npy", X)
        np.save(Path(root) / f"extracted{rank}.npy", np.array([embeddings.STATS["extracted"]]))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_torchrun_sharding_equals_single_process(tiny, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the two ranks
    single, _ = embed_split(tiny, NAME, cache=False, progress=False)
    # The rendezvous store listens on a port the OS picked and stays bound until the ranks are
    # done: a port found free and then released could be taken by another process (another
    # checkout's test run) before rank 0 bound it, under load seconds later.
    store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    mp.start_processes(_rank_main, args=(2, store.port, str(tmp_path)), nprocs=2,
                       start_method="spawn", join=True)
    del store
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), single)
        assert int(np.load(tmp_path / f"extracted{rank}.npy")[0]) == 6  # half each
    shards = list((tmp_path / "cache-dist" / "embeddings").glob("*/shard-*.npz"))
    assert len(shards) == 1  # written once, by LOCAL_RANK 0
