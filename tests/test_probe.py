"""linear-probe and embedding-knn: validation on train only, cache reuse, ordinal variant."""

from __future__ import annotations

import numpy as np
import pytest

from cvbench.deep import embeddings, probe
from cvbench.deep.ordinal import grades_from_values
from cvbench.deep.probe import EmbeddingKNN, LinearProbe, carve_rows
from cvbench.deep.retrieval import retrieval_scores
from cvbench.errors import UserError
from cvbench.methods import create_method, get_method_spec
from cvbench.split import Split
from tests.tiny_backbone import NAME, jpeg_split, one_thread, register_tiny


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    yield from one_thread(monkeypatch)


def _feature_split(n: int, n_classes: int, dim: int = 24, seed: int = 0, name: str = "syn/train",
                   offset: int = 0, **groups) -> tuple[Split, dict[str, np.ndarray]]:
    """A split whose items name rows of a synthetic, linearly separable feature table."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centres = np.random.default_rng(99).normal(size=(n_classes, dim)) * 3
    X = (centres[y] + rng.normal(size=(n, dim))).astype(np.float32)
    items = [f"{name}/{offset + i}" for i in range(n)]
    split = Split(items=items, labels=y, classes=tuple(f"c{k}" for k in range(n_classes)),
                  name=name, groups=groups)
    return split, dict(zip(items, X))


@pytest.fixture
def fake_embed(monkeypatch):
    """embed_split replaced by a table lookup; records every item it was asked for."""
    table: dict[str, np.ndarray] = {}
    seen: list[str] = []

    def fake(split, **kwargs):
        seen.extend(split.items)
        return np.stack([table[i] for i in split.items]), {"total_seconds": 0.0, "n": len(split)}

    monkeypatch.setattr(probe, "embed_split", fake)
    return table, seen


def test_methods_registered_as_pretrained():
    for name in ("linear-probe", "embedding-knn"):
        spec = get_method_spec(name)
        assert spec.family == "pretrained" and "backbone" in spec.params()
    assert create_method("linear-probe", objective="ordinal").objective == "ordinal"


def test_linear_probe_validation_never_sees_the_test_split(fake_embed):
    table, seen = fake_embed
    train, t1 = _feature_split(300, 3)
    test, t2 = _feature_split(90, 3, seed=1, name="syn/test", offset=10_000)
    table.update(t1)
    table.update(t2)
    m = LinearProbe().fit(train)
    assert set(seen) == set(train.items)  # fit embedded train only
    v = m.info_["validation"]
    assert v["n_train"] + v["n_val"] == len(train)
    assert [p["C"] for p in v["curve"]] == sorted(probe.DEFAULT_CS)
    assert v["chosen_C"] in probe.DEFAULT_CS and v["val_accuracy"] > 0.9
    seen.clear()
    scores = m.predict_scores(test)
    assert set(seen) == set(test.items)
    assert scores.shape == (90, 3) and (scores.argmax(1) == test.labels).mean() > 0.9


def test_carve_is_grouped_by_the_tasks_key():
    split, _ = _feature_split(120, 2, patient=np.repeat(np.arange(60), 2))
    split = Split(split.items, split.labels, split.classes, split.name, groups=split.groups,
                  meta={"val_group_key": "patient"})
    tr, va = carve_rows(split, 0.2, seed=0)
    assert len(tr) + len(va) == 120 and not set(tr) & set(va)
    patients = split.groups["patient"]
    assert not set(patients[tr]) & set(patients[va])


def test_absent_class_in_train_still_gets_a_column(fake_embed):
    table, _ = fake_embed
    train, t1 = _feature_split(60, 2)
    train = Split(train.items, train.labels, ("a", "b", "never-seen"), train.name)
    table.update(t1)
    m = LinearProbe(Cs=(0.1,)).fit(train)
    s = m.predict_scores(train)
    assert s.shape == (60, 3) and (s[:, 2] == 0).all()


def test_ordinal_probe_fits_thresholds_out_of_fold(fake_embed):
    table, seen = fake_embed
    rng = np.random.default_rng(0)
    n = 250
    grade = np.repeat(np.arange(5), n // 5)
    direction = rng.normal(size=16)
    X = (np.outer(grade + 0.3 * rng.normal(size=n), direction) + rng.normal(size=(n, 16))).astype(np.float32)
    items = [f"eye/{i}" for i in range(n)]
    table.update(zip(items, X))
    split = Split(items, grade, tuple("01234"), "retina/train",
                  groups={"patient": np.arange(n) // 2}, meta={"val_group_key": "patient"})
    m = LinearProbe(objective="ordinal").fit(split)
    v = m.info_["validation"]
    assert "grouped by patient" in v["protocol"] and len(v["thresholds"]) == 4
    assert v["oof_qwk"] > 0.8 and v["chosen_alpha"] in probe.DEFAULT_ALPHAS
    scores = m.predict_scores(split)
    values = m.ridge_.predict(m.scaler_.transform(X))
    np.testing.assert_array_equal(scores.argmax(1), grades_from_values(values, m.thresholds_))


def test_embedding_knn_chooses_k_on_validation_and_max_scoring_is_retrieval(fake_embed):
    table, _ = fake_embed
    train, t1 = _feature_split(150, 5)
    test, t2 = _feature_split(40, 5, seed=3, name="syn/test", offset=5000)
    table.update(t1)
    table.update(t2)
    knn = EmbeddingKNN().fit(train)
    v = knn.info_["validation"]
    assert [c["k"] for c in v["curve"]] == list(probe.K_GRID) and v["chosen_k"] in probe.K_GRID
    assert (knn.predict_scores(test).argmax(1) == test.labels).mean() > 0.9
    ret = EmbeddingKNN(scoring="max").fit(train)
    Xtr = np.stack([table[i] for i in train.items])
    Xte = np.stack([table[i] for i in test.items])
    np.testing.assert_array_equal(ret.predict_scores(test),
                                  retrieval_scores(Xte, Xtr, train.labels, 5))
    with pytest.raises(UserError):  # the planner checks every run before its fit
        EmbeddingKNN(scoring="mean").validate({"n_train": len(train)})
    with pytest.raises(UserError):
        EmbeddingKNN(k=0).validate({"n_train": len(train)})


def test_second_method_reuses_the_embeddings(tmp_path, monkeypatch):
    """End to end on the tiny backbone: the second method on the same images extracts
    nothing (a spy on the extraction), and both score the test split."""
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "cache"))
    embeddings.clear_memory()
    register_tiny(tmp_path / "w")
    train = jpeg_split(tmp_path / "tr", n=30)
    test = jpeg_split(tmp_path / "te", n=9, name="syn/test", seed=1)
    first = LinearProbe(backbone=NAME, Cs=(0.1, 1.0), n_jobs=1).fit(train)
    assert first.info_["embeddings"]["train"]["extracted"] == 30
    assert first.info_["images_per_s_train"] > 0
    first.predict_scores(test)
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("extraction ran for cached images")

    monkeypatch.setattr(embeddings, "_extract", spy)
    second = EmbeddingKNN(backbone=NAME, n_jobs=1).fit(train)
    scores = second.predict_scores(test)
    assert calls == [] and scores.shape == (9, 3)
    assert second.info_["embeddings"]["train"]["cached"] == 30
    assert scores.info["embeddings"]["test"]["cached"] == 9


def test_bad_parameters_are_user_errors(fake_embed):
    table, _ = fake_embed
    train, t1 = _feature_split(40, 2)
    table.update(t1)
    for kwargs in ({"objective": "ranking"}, {"Cs": (0.0,)}, {"Cs": "many"},
                   {"val_fraction": 1.5}, {"class_weight": "auto"}):
        with pytest.raises(UserError):  # the planner checks every run before its fit
            LinearProbe(**kwargs).validate({"n_train": len(train)})
