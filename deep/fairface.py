"""FairFace methods: a base method trained on a composition of the training split.

`register_composed(name, base)` registers `base` (a registered method name or class) with
three extra parameters, composition / composition_total / composition_key (see
cvbench.data.fairface.with_composition), so the same biased / balanced / natural / custom
mixes apply to any method, deep or classical. Registered here:

- `fairface-resnet`: the engine's DeepClassifier with the joint head of the study (race plus
  auxiliary gender and age heads: 7 + 2 + 9 = 18 outputs). Defaults = the study's protocol
  (ResNet-34, 224 px, Adam 1e-3, batch 32, 10 epochs) with a 10% validation split carved
  from the composed training set; CPU suites override model / image_size / epochs.
- `fairface-tiny-knn`, `fairface-bow-sift`: the classical baselines on the same compositions.

Mitigation without changing the data uses the engine's own parameters on the biased mix:
class_weight="balanced" (class-balanced loss) and sampling="balanced" (race-balanced
batches) or sampling="balanced:race_gender" (race x gender balanced batches).
"""

from __future__ import annotations

import importlib
from typing import Any

from cvbench import methods
from cvbench.data.fairface import with_composition
from cvbench.errors import UserError
from cvbench.methods import register_method

JOINT_AUX = "gender:2,age:9"  # the study's 18-output head: 7 race + 2 gender + 9 age
# The study's protocol as defaults (Keras: Adam 1e-3, no schedule, no weight decay, no
# augmentation); suites override model / image_size / epochs for CPU budgets.
STUDY_DEFAULTS: dict[str, Any] = {
    "model": "resnet34", "image_size": 224, "optimizer": "adam", "lr": 1e-3, "batch_size": 32,
    "epochs": 10, "schedule": "constant", "weight_decay": 0.0, "augment": "none",
    "val_fraction": 0.1, "aux_targets": JOINT_AUX,
}


def register_composed(name: str, base: str | type, family: str | None = None,
                      description: str = "", **defaults: Any) -> type:
    """Register `base` trained on a composition as method `name`; returns the new class."""
    if isinstance(base, str):
        spec = _registered(base)
        if spec is None:
            raise UserError(f"cannot compose unknown method {base!r}")
        base_cls, family = spec.cls, family or spec.family
    else:
        base_cls, family = base, family or getattr(base, "family", "classical")
    cls = with_composition(base_cls, defaults)
    cls.__module__ = __name__
    globals()[cls.__name__] = cls  # picklable by its qualified name
    return register_method(name, family=family, description=description or cls.__doc__)(cls)


def _registered(name: str):
    """The registry entry of `name` if already registered, without loading plugins (this
    module runs while the plugin packages are being imported)."""
    return methods._METHODS.get(name)


def _register_builtins() -> None:
    """Register the composed versions of the bases that exist (each is optional)."""
    try:
        importlib.import_module("cvbench.baselines")
    except ImportError:  # pragma: no cover - baselines broken in a partial checkout
        pass
    for name, base in (("fairface-tiny-knn", "tiny-knn"), ("fairface-bow-sift", "bow-sift")):
        try:
            register_composed(name, base)
        except UserError:  # base not available in this checkout
            continue
    try:
        from .classifier import DeepClassifier
    except ImportError:
        return
    params = with_composition(DeepClassifier).__init__.__signature__.parameters
    defaults = {k: v for k, v in STUDY_DEFAULTS.items() if k in params}
    register_composed(
        "fairface-resnet", DeepClassifier, family="deep",
        description="Deep classifier with the study's joint race/gender/age head, trained on a "
                    "FairFace composition (natural / biased / balanced / custom mix)",
        **defaults,
    )


_register_builtins()
