"""Study recipes as named presets of the generic `cnn` method (registered the timm way: a
small function that returns the configured method). Each preset is the `cnn` method with the
recipe as defaults; a suite may override any parameter."""

from __future__ import annotations

from cvbench.methods import register_method

from .classifier import DeepClassifier

# Study A (mini project): SE-ResNet [4,4,3], SGD 0.1 / cosine / 200 epochs / clip 0.1 / wd 5e-4
RESNET_SE = dict(model="resnet-se", epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                 nesterov=False, weight_decay=5e-4, schedule="cosine", grad_clip=0.1,
                 grad_clip_mode="value", normalize="cifar10", augment="flip-crop")
# Study B (course homework): CIFAR ResNet-18 and myNet (Inception); hyper-parameters not stated
# in the study, so the common CIFAR recipe (SGD 0.1, momentum 0.9, wd 5e-4, cosine, 200 epochs).
CIFAR_RECIPE = dict(epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
                    weight_decay=5e-4, schedule="cosine", normalize="cifar10", augment="flip-crop")
# CPU-sized networks (our additions, not from the studies)
FASTNET = dict(model="fastnet", width=0.5, epochs=16, batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9,
               nesterov=True, weight_decay=5e-4, schedule="onecycle", warmup_epochs=3, label_smoothing=0.1,
               normalize="cifar10", augment="flip-crop")
RESNET_SMALL = dict(model="resnet-small", width=0.5, epochs=10, batch_size=128, optimizer="sgd", lr=0.1,
                    momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle", warmup_epochs=2,
                    label_smoothing=0.1, normalize="cifar10", augment="flip-crop")


@register_method("resnet-se", family="deep")
def resnet_se(**params) -> DeepClassifier:
    """SE-ResNet [4,4,3] under 5M params (study A), shared trainer"""
    return DeepClassifier(**{**RESNET_SE, **params})


@register_method("resnet18-cifar", family="deep")
def resnet18_cifar(**params) -> DeepClassifier:
    """CIFAR ResNet-18 (3x3 stem, no max-pool; study B), shared trainer"""
    return DeepClassifier(**{"model": "resnet18-cifar", **CIFAR_RECIPE, **params})


@register_method("mynet", family="deep")
def mynet(**params) -> DeepClassifier:
    """myNet: GoogLeNet/Inception variant for 32x32 (study B), shared trainer"""
    return DeepClassifier(**{"model": "mynet", **CIFAR_RECIPE, **params})


@register_method("fastnet", family="deep")
def fastnet(**params) -> DeepClassifier:
    """Fast airbench-style CIFAR net (~2M params at width 1; 0.5 by default for CPU budgets)"""
    return DeepClassifier(**{**FASTNET, **params})


@register_method("resnet-small", family="deep")
def resnet_small(**params) -> DeepClassifier:
    """Narrow CIFAR ResNet (param width) for CPU budgets"""
    return DeepClassifier(**{**RESNET_SMALL, **params})
