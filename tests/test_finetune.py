"""finetune: modes freeze the right parameters, the body and the head get their own lrs,
a resumed run equals an uninterrupted one, the ordinal head thresholds on the validation carve.
Tiny: the test backbone (tests/tiny_backbone.py), 16 px, 1-2 epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvbench.deep import finetune as ft
from cvbench.deep.ordinal import grades_from_values
from cvbench.errors import UserError
from cvbench.methods import create_method, get_method_spec
from cvbench.params import validate_params
from cvbench.split import Split
from tests.test_engine import InterruptAt
from tests.tiny_backbone import NAME, TinyNet, one_thread, register_tiny

TINY = dict(backbone=NAME, image_size=16, epochs=1, batch_size=8, device="cpu", val_fraction=0.0,
            n_jobs=1)


@pytest.fixture(autouse=True)
def _setup(monkeypatch, tmp_path_factory):
    register_tiny(tmp_path_factory.mktemp("tiny-weights"))
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield from one_thread(monkeypatch)


def _split(n_per_class=8, classes=3, seed=0, name="toy/train", groups=None, meta=None) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 60, (len(labels), 16, 16, 3)).astype(np.uint8)
    for c in range(classes):
        x[labels == c, 3 * c: 3 * c + 3] += 150
    return Split(x, labels, tuple("abcde"[:classes]), name, groups=groups or {}, meta=meta or {})


def _trainable(net) -> set[str]:
    return {k for k, p in net.named_parameters() if p.requires_grad}


def test_registered_as_pretrained_without_the_zoo_parameters():
    spec = get_method_spec("finetune")
    params = spec.params()
    assert spec.family == "pretrained"
    assert {"backbone", "mode", "body_lr_scale", "objective", "tta", "weights"} <= set(params)
    assert not {"model", "width", "pretrained"} & set(params)
    with pytest.raises(UserError, match="has no parameter 'model'"):
        create_method("finetune", model="resnet18")
    for bad in ({"mode": "last"}, {"mode": "last:-1"}, {"mode": "partial"},
                {"backbone": "dlib_face_resnet"}, {"body_lr_scale": 0.0}):
        with pytest.raises(UserError, match="is not valid"):
            validate_params(spec.cls, bad)
    with pytest.raises(UserError, match="set val_fraction > 0"):
        validate_params(spec.cls, {"objective": "ordinal", "val_fraction": 0.0})


def test_modes_freeze_the_right_parameters():
    head = {"net.head.weight", "net.head.bias"}
    bn = {f"net.body.{i}.{w}" for i in (1, 4) for w in ("weight", "bias")}
    assert _trainable(ft.apply_mode(TinyNet(3), "full")) == {f"net.{k}" for k, _ in TinyNet(3).named_parameters()}
    assert _trainable(ft.apply_mode(TinyNet(3), "frozen_bn")) == head | bn
    assert _trainable(ft.apply_mode(TinyNet(3), "last:0")) == head
    net = ft.apply_mode(TinyNet(3), "last:1")  # blocks: [conv0 + bn1], [conv3 + bn4]
    assert _trainable(net) == head | {"net.body.3.weight", "net.body.4.weight", "net.body.4.bias"}
    net.train()  # the frozen block's BatchNorm keeps its running statistics
    assert not net.net.body[1].training and net.net.body[4].training and net.training
    with pytest.raises(UserError, match="only 2 blocks"):
        ft.apply_mode(TinyNet(3), "last:3")


def test_body_blocks_of_the_registered_architectures():
    from cvbench.deep.efficientnet_lite import efficientnet_lite
    from cvbench.deep.models import create_model

    with torch.device("meta"):
        lite = efficientnet_lite("efficientnet_lite0")
        resnet = create_model("resnet18", num_classes=10)
    blocks = ft.body_blocks(lite)
    assert len(blocks) == 18  # stem, 16 MBConv blocks, 1x1 head conv
    assert blocks[0] == [lite.conv_stem, lite.bn0] and blocks[-1] == [lite.conv_head, lite.bn1]
    blocks = ft.body_blocks(resnet)
    assert len(blocks) == 9 and blocks[0] == [resnet.conv1, resnet.bn1] and blocks[-1] == [resnet.layer4[1]]


def test_param_groups_get_the_right_lrs():
    m = create_method("finetune", **TINY, lr=0.02, body_lr_scale=0.1, schedule="constant",
                      warmup_epochs=0.0, mode="full").fit(_split())
    head, body = m.trainer_.optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in m.model_.head.parameters()}
    assert head["lr"] == pytest.approx(0.02) and body["lr"] == pytest.approx(0.002)
    assert [g["lr"] for g in m.info_["finetune"]["param_groups"]] == pytest.approx([0.02, 0.002])
    # under warm-up and a schedule the ratio holds at every step
    warm = create_method("finetune", **{**TINY, "epochs": 2}, lr=0.02, body_lr_scale=0.25,
                         warmup_epochs=1.0, mode="frozen_bn").fit(_split())
    head, body = warm.trainer_.optimizer.param_groups
    assert 0 < head["lr"] < 0.02 and body["lr"] == pytest.approx(0.25 * head["lr"])
    assert len(body["params"]) == 4  # frozen_bn: the two BatchNorms' weight and bias


def test_backbone_normalisation_and_pretrained_body():
    from cvbench.deep.backbones import get_backbone, load_backbone

    m = create_method("finetune", **TINY).fit(_split())
    spec = get_backbone(NAME)
    assert m.info_["normalize"] == {"mean": list(spec.mean), "std": list(spec.std)}
    assert m.info_["model"] == NAME and m.info_["finetune"]["body_blocks"] == 2
    # frozen_bn on one epoch: the convolutions are still the pretrained ones
    loaded = load_backbone(NAME, fuse=False).model
    assert torch.equal(m.model_.net.body[0].weight, loaded.body[0].weight)


def test_resume_equals_uninterrupted(monkeypatch, tmp_path):
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path))
    params = dict(TINY, epochs=2, mode="last:1", augment="flip", lr=0.01)
    full = create_method("finetune", **params).fit(_split())
    for ck in (tmp_path / "checkpoints").glob("*.pt"):
        ck.unlink()
    with monkeypatch.context() as patch:
        patch.setattr(ft.FineTune, "callbacks", lambda self: [InterruptAt(1)])
        with pytest.raises(KeyboardInterrupt):
            create_method("finetune", **params).fit(_split())
    resumed = create_method("finetune", **params, resume=True).fit(_split())
    assert resumed.result_.resumed_from_epoch == 1
    a, b = full.model_.state_dict(), resumed.model_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ordinal_head_thresholds_on_the_validation_carve():
    patients = {"patient": np.repeat(np.arange(20), 2)}
    train = _split(n_per_class=8, classes=5, groups=patients, meta={"val_group_key": "patient"})
    m = create_method("finetune", **{**TINY, "val_fraction": 0.25}, objective="ordinal",
                      tta="flip").fit(train)
    o = m.info_["ordinal"]
    assert o["val_group"] == "patient" and 0 < o["val_n"] < len(train) and o["val_qwk_fitted"] >= o["val_qwk_default"]
    assert m.model_.head.out_features == 1 and o["thresholds"] == sorted(o["thresholds"])
    test = _split(n_per_class=2, classes=5, seed=1, name="toy/test")
    scores = m.predict_scores(test)
    values = m._outputs(test)[:, 0].numpy()
    assert scores.shape == (10, 5)
    np.testing.assert_array_equal(scores.argmax(1), grades_from_values(values, m.thresholds_))
