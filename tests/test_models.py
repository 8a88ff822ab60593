"""Model registry: exact study parameter counts, shapes, errors, freezing and weight loading."""

from __future__ import annotations

import re

import pytest
import torch

from cvbench.deep import models
from cvbench.deep.models import (
    count_parameters,
    create_model,
    freeze_body,
    list_models,
    model_info,
    unfreeze,
)
from cvbench.errors import UserError

# The source studies' own counts (docs/studies.md), typed here so a registry typo fails too.
STUDY_COUNTS = {
    "resnet-se": 4_697_742,
    "resnet18-cifar": 11_173_962,
    "mynet": 6_158_538,
    "resnet34": 21_293_906,
    "densenet201": 20_070_789,
    "vgg16": 147_026_796,
}
CIFAR_MODELS = ["resnet-se", "resnet18-cifar", "mynet", "fastnet", "resnet-small"]


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    """Build on the meta device: no memory, no init cost, same parameter shapes."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize("name", sorted(STUDY_COUNTS))
def test_study_parameter_counts_are_exact(name):
    model = meta_model(name)
    assert count_parameters(model) == STUDY_COUNTS[name]
    assert model_info(name)["study_params"] == STUDY_COUNTS[name]


def test_study_default_class_counts():
    expected = {"resnet-se": 10, "resnet18-cifar": 10, "mynet": 10, "resnet34": 18,
                "densenet201": 5, "vgg16": 3116}
    for name, n in expected.items():
        assert model_info(name)["num_classes"] == n
        assert meta_model(name).num_classes == n


def test_mynet_with_inception_biases_is_the_plain_cifar_googlenet():
    # 7,712 = the summed output channels of the Inception convs (one bias each).
    assert count_parameters(meta_model("mynet", conv_bias=True)) == 6_166_250


def test_resnet_se_head_is_2570_params():
    assert count_parameters(meta_model("resnet-se").head) == 2_570


def test_width_one_is_the_study_model_and_width_scales_it():
    assert count_parameters(meta_model("resnet-se", width=1)) == 4_697_742
    assert count_parameters(meta_model("resnet-se", width=0.5)) < 4_697_742 / 3


def test_fastnet_is_about_two_million_params():
    assert 1_500_000 < count_parameters(meta_model("fastnet")) < 2_500_000
    assert count_parameters(meta_model("fastnet", width=0.5)) < 600_000


def test_meta_count_matches_real_count():
    real = create_model("resnet-small", num_classes=7, width=0.25)
    assert count_parameters(real) == count_parameters(meta_model("resnet-small", num_classes=7,
                                                                 width=0.25))


def test_densenet201_freeze_body_keeps_head_and_batchnorm_trainable():
    model = meta_model("densenet201")
    freeze_body(model)
    assert count_parameters(model, trainable_only=True) == 2_206_917
    assert model_info("densenet201")["study_trainable"] == 2_206_917
    freeze_body(model, train_bn=False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model.head)
    unfreeze(model)
    assert count_parameters(model, trainable_only=True) == 20_070_789


def test_num_classes_changes_only_the_head():
    a, b = meta_model("resnet34"), meta_model("resnet34", num_classes=1000)
    assert count_parameters(b) - count_parameters(a) == 512 * (1000 - 18) + (1000 - 18)
    assert b.num_classes == 1000


# Natural (or smallest sensible) input size per model, and kwargs keeping CPU cost small.
FORWARD_CASES = [
    ("resnet-se", 32, {}),
    ("resnet18-cifar", 32, {}),
    ("mynet", 32, {}),
    ("fastnet", 32, {}),
    ("resnet-small", 32, {}),
    ("resnet-small", 96, {"stem_stride": 2, "width": 0.25}),
    ("resnet18", 64, {}),
    ("resnet34", 64, {}),
    ("densenet121", 64, {}),
    ("densenet121", 64, {"head": "linear"}),
    ("vgg16", 32, {"width": 0.25, "hidden": 64}),
]


@pytest.mark.parametrize(("name", "size", "kwargs"), FORWARD_CASES)
def test_forward_shapes(name, size, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, **kwargs).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, model.num_features)
    assert logits.shape == (2, 7)
    assert torch.allclose(model.head(feats), logits, atol=1e-5)
    assert torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet201", "vgg16"])
def test_forward_shapes_full_size_study_models(name):
    model = create_model(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, model_info(name)["num_classes"])


def test_cifar_models_accept_larger_inputs():
    model = create_model("resnet-se").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 48, 40)).shape == (2, 10)


def test_backward_reaches_every_parameter():
    model = create_model("fastnet", width=0.25)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registry_lists_every_model_with_info():
    names = list_models()
    assert set(STUDY_COUNTS) | set(CIFAR_MODELS) <= set(names)
    for name in names:
        info = model_info(name)
        assert info["input_size"][0] == 3 and info["description"]
        assert models.MODELS[name] is not None


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError, match="unknown model 'resnet-9000'.*resnet-se"):
        create_model("resnet-9000")
    with pytest.raises(UserError, match="valid models"):
        model_info("nope")


def test_unknown_kwarg_lists_valid_ones():
    with pytest.raises(UserError, match=r"unknown parameter\(s\) depth .*'fastnet'.*width"):
        create_model("fastnet", depth=3)


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="num_classes"):
        create_model("fastnet", num_classes=0)
    with pytest.raises(UserError, match="head"):
        create_model("densenet121", head="mlp")
    with pytest.raises(UserError, match="width of model 'fastnet' must be a number"):
        create_model("fastnet", width="wide")
    with pytest.raises(UserError, match="must be a positive number"):
        create_model("resnet-small", width=0)
    with pytest.raises(UserError, match="stem_stride .* must be an integer"):
        create_model("resnet-small", stem_stride=1.5)
    with pytest.raises(UserError, match="dropout .* probability"):
        create_model("vgg16", dropout=1.5)
    with pytest.raises(UserError, match="conv_bias .* true or false"):
        create_model("mynet", conv_bias="yes")


def test_missing_imagenet_weights_are_one_sentence_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache
    monkeypatch.delenv("CVBENCH_WEIGHTS", raising=False)

    def no_network(url, dst, *args, **kwargs):
        raise AssertionError("cvbench must not download weights at run time")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(UserError, match="'resnet18' needs the weights file resnet18-f37072fd.pth, "
                                         "not found .*nothing is downloaded"):
        create_model("resnet18", num_classes=3, pretrained="imagenet")
    with pytest.raises(UserError, match="has no pretrained weights"):
        create_model("fastnet", pretrained="imagenet")
    with pytest.raises(UserError, match="needs the weights file vgg16_bn-6c64b313.pth.*nothing is downloaded"):
        create_model("vgg16", num_classes=3, width=0.125, hidden=8, batch_norm=True,
                     pretrained="imagenet")


def test_imagenet_weights_come_from_the_hub_cache_verified(tmp_path, monkeypatch):
    """An entry's torchvision-style checkpoint is found in torch.hub's folder, checked against
    the digest prefix in its name, loaded whole, and a new head of other classes is fresh."""
    from cvbench.deep import models
    from cvbench.deep.weights import WeightsError, WeightsFile, sha256_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("CVBENCH_WEIGHTS", raising=False)
    src = create_model("resnet18", num_classes=1000, width=0.125)
    tv_style = {("fc." + k[5:] if k.startswith("head.") else k): v
                for k, v in src.state_dict().items()}
    tmp = tmp_path / "tmp.pth"
    torch.save(tv_style, tmp)
    name = f"tinyres-{sha256_file(tmp)[:8]}.pth"
    cached = tmp_path / "hub" / "checkpoints" / name
    cached.parent.mkdir(parents=True)
    tmp.rename(cached)
    tv = models.get_spec("resnet18")
    models.register_spec(models.ModelSpec(
        name="test-tinyres", builder=lambda n: tv.builder(n, width=0.125), num_classes=1000,
        input_size=(3, 224, 224), description="test", key_map=tv.key_map, num_features=64,
        weights=models.Weights("file", (WeightsFile(name),))), replace=True)

    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = create_model("test-tinyres", num_classes=1000, pretrained="imagenet")
    assert torch.equal(model.head.weight, src.head.weight)
    assert torch.equal(model.conv1.weight, src.conv1.weight)
    other = create_model("test-tinyres", num_classes=3, pretrained="imagenet")
    assert other.head.weight.shape == (3, 64) and torch.equal(other.conv1.weight, src.conv1.weight)
    cached.write_bytes(cached.read_bytes()[:-8] + b"tampered")  # same name, other content
    with pytest.raises(WeightsError, match="SHA-256"):
        create_model("test-tinyres", pretrained="imagenet")


def test_local_weights_load_and_head_is_fresh_for_other_class_counts(tmp_path):
    torch.manual_seed(1)
    src = create_model("resnet-small", num_classes=10, width=0.25)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    same = create_model("resnet-small", num_classes=10, width=0.25, pretrained=str(path))
    for (k, a), b in zip(src.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), k
    other = create_model("resnet-small", num_classes=3, width=0.25, pretrained=str(path))
    assert other.head.weight.shape == (3, 32)
    assert torch.equal(other.stem[0][0].weight, src.stem[0][0].weight)


def test_densenet_old_torchvision_key_names_load(tmp_path):
    src = create_model("densenet121", num_classes=5)
    state = {}
    for k, v in src.state_dict().items():  # torchvision's old names: "norm.1" for "norm1"
        state[re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k)] = v
    assert any(".norm.1." in k for k in state)
    path = tmp_path / "old.pth"
    torch.save({"state_dict": state}, path)
    model = create_model("densenet121", num_classes=5, pretrained=str(path))
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(model.state_dict()[key], src.state_dict()[key])


def test_bad_weight_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        create_model("fastnet", pretrained=str(tmp_path / "missing.pth"))
    path = tmp_path / "small.pth"
    torch.save(create_model("resnet-small", width=0.25).state_dict(), path)
    with pytest.raises(UserError, match="do not fit model 'resnet-small'.*wrong shape"):
        create_model("resnet-small", width=0.5, pretrained=str(path))
    with pytest.raises(UserError, match="do not fit model 'fastnet'"):
        create_model("fastnet", pretrained=str(path))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file"):
        create_model("fastnet", pretrained=str(junk))
