"""cvbench.parallel: the classical per-image work on a Dask cluster gives what a local run gives."""

from __future__ import annotations

import numpy as np
import pytest

from cvbench import parallel
from cvbench.errors import UserError
from tests.test_bow import _stripes


def test_scheduler_from_environment(monkeypatch):
    monkeypatch.delenv(parallel.SCHEDULER_ENV, raising=False)
    assert parallel.scheduler_address() is None
    parallel.use_scheduler("tcp://10.1.2.3:8786")
    try:
        assert parallel.scheduler_address() == "tcp://10.1.2.3:8786"
    finally:
        parallel.use_scheduler(None)
    assert parallel.scheduler_address() is None


def test_local_map_batches_keeps_order():
    out = list(parallel.map_batches(divmod, [7, 8, 9, 10], (3,), n_jobs=2))
    assert out == [divmod(b, 3) for b in (7, 8, 9, 10)]


def test_unreachable_scheduler_is_a_user_error(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setenv(parallel.SCHEDULER_ENV, "tcp://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(parallel, "_clients", {})
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(UserError, match="cannot reach the Dask scheduler"):
        list(parallel.map_batches(divmod, [1], (1,)))


def test_the_scheduler_flag_reaches_the_classical_work(monkeypatch, capsys):
    """`--scheduler` is the CLI's way to set it: an unreachable address is one sentence, exit 2."""
    pytest.importorskip("distributed")
    from cvbench import cli

    monkeypatch.setenv(parallel.SCHEDULER_ENV, "")  # restored after the test, whatever the CLI sets
    monkeypatch.setattr(parallel, "_clients", {})
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1)
    code = cli.main(["run", "demo", "bow-sift", "--set", "vocab_size=4", "--no-save", "--no-progress",
                     "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err, err[-500:]


def _as_files(split, folder):
    """The split's images as 64 PNG files (tiny images decode files in parallel from 64 on)."""
    from PIL import Image

    from cvbench.split import Split

    folder.mkdir(parents=True)
    paths = []
    for i in range(64):
        path = folder / f"{i:02d}.png"
        Image.fromarray(split.image(i % len(split), "gray")).save(path)
        paths.append(path)
    return Split(items=paths, labels=np.arange(64) % 2, classes=("a", "b"), name="files", root=str(folder))


@pytest.mark.slow
def test_two_worker_local_cluster_gives_the_local_descriptors(tmp_path, monkeypatch):
    """Dense SIFT (descriptor store), the vocabulary sample, the bag-of-words and Fisher
    encodings and tiny images computed on a 2-worker LocalCluster through CVBENCH_SCHEDULER
    equal a local run's, and the batches did run on the cluster."""
    distributed = pytest.importorskip("distributed")
    from cvbench.baselines import fisher
    from cvbench.baselines.bow import encode_split, open_store, sample_descriptors
    from cvbench.baselines.sift import make_sift_params, transform_descriptors
    from cvbench.baselines.tiny import tiny_images
    from cvbench.baselines.vocab import kmeans

    split = _stripes(12, 21)  # 24 images: 2 batches of 16 and 8
    paths = _as_files(split, tmp_path / "files")  # tiny images decode files (64 of them)
    p = make_sift_params(step=4, bin_size=3, backend="numpy")
    enc = {"rootsift": True, "encoding": "hard", "sigma": None, "levels": 1, "hist_norm": "l1"}

    def everything(cache: str):
        monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / cache))
        sample, stored = sample_descriptors(split, p, 400, seed=1, n_jobs=1)
        store = open_store(split, p, build=False)
        desc = [store.get(i)[1] for i in range(len(split))]
        centres = kmeans(transform_descriptors(sample, True), 8, "sklearn", 0, 10)
        model = fisher.fit_fisher_model(transform_descriptors(sample, True), 8, 2, 0, 20)
        # fresh caches again for the encodings, so they extract (no store) on the cluster too
        monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / f"{cache}-enc"))
        H, _ = encode_split(split, p, centres, enc, n_jobs=1)
        FV, _ = fisher.encode_split(split, p, model, True, 1, n_jobs=1)
        tiny = tiny_images(paths, 8, cache=False)
        return stored, sample, desc, H, FV, tiny

    monkeypatch.delenv(parallel.SCHEDULER_ENV, raising=False)
    local = everything("local")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        monkeypatch.setenv(parallel.SCHEDULER_ENV, cluster.scheduler_address)
        monkeypatch.setattr(parallel, "_clients", {})
        try:
            client = parallel.dask_client(cluster.scheduler_address)
            with distributed.get_task_stream(client) as stream:
                remote = everything("dask")
            client.close()
        finally:
            monkeypatch.setattr(parallel, "_clients", {})
    assert len(stream.data) >= 3, "the batches did not run on the cluster"
    assert local[0] and remote[0]
    np.testing.assert_array_equal(local[1], remote[1])
    for a, b in zip(local[2], remote[2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(local[3], remote[3])
    np.testing.assert_array_equal(local[4], remote[4])
    np.testing.assert_array_equal(local[5], remote[5])
