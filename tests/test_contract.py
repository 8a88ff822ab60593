"""The method contract, checked on every registered method (like scikit-learn's
check_estimator): __init__ only stores, every parameter is declared, bad values are one-sentence
user errors (exit 2), fit returns self, predict_scores has the right shape and leaves the
fitted method unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cvbench import cli
from cvbench.errors import UserError
from cvbench.methods import Scores, create_method, get_method_spec, list_methods
from cvbench.params import Anything, declared, validate_params
from cvbench.split import Split

TINY_DEEP = dict(model="resnet-small", width=0.125, image_size=16, epochs=1, batch_size=8, device="cpu",
                 val_fraction=0.0)
TINY_FUNDUS = dict(model="fundus-net", width=4, image_size=32, epochs=1, batch_size=8, device="cpu",
                   val_fraction=0.0)
# Small settings per method so that one fit takes a second or two on 2 cores.
SMALL = {
    "bow-sift": dict(step=8, vocab_size=4, vocab_sample=500, vocab_step=8, k=1, n_jobs=1),
    "fisher-sift": dict(step=8, vocab_sample=500, vocab_step=8, pca_dim=8, n_components=2, n_jobs=1),
    "tiny-knn": dict(size=8, k=1, n_jobs=1),
    "tiny-svm": dict(size=8, n_jobs=1),
    "retina-lesion-stats": dict(image_size=32, folds=2, scales="1,2"),
    # presets share their method's class: a tiny zoo model checks the contract, not the recipe
    **{name: dict(TINY_DEEP) for name in ("cnn", "cnn-retrieval", "fastnet", "resnet-small",
                                          "resnet-se", "resnet18-cifar", "mynet")},
    "retina-cnn": dict(TINY_FUNDUS),
    "retina-ordinal": dict(TINY_FUNDUS),
    "retina-densenet201": dict(TINY_FUNDUS, pretrained=None),
}
TINY_BACKBONE = dict(backbone="test-tiny", size=16, n_jobs=1)
SMALL.update({"linear-probe": dict(TINY_BACKBONE, Cs=[0.1, 1.0]), "embedding-knn": dict(TINY_BACKBONE),
              "finetune": dict(backbone="test-tiny", image_size=16, epochs=1, batch_size=8, device="cpu",
                               val_fraction=0.0, n_jobs=1)})
GRADERS = {"retina-cnn", "retina-ordinal", "retina-densenet201", "retina-lesion-stats"}  # 5 grades
NAMES = [m.name for m in list_methods() if not m.name.startswith("test-")]
# presets of a class already fitted below (their recipes are tested with the engine)
SAME_CLASS_PRESETS = {"fastnet", "resnet-small", "resnet-se", "resnet18-cifar", "mynet", "retina-densenet201"}


def _split(n_per_class=8, classes=3, seed=0, name="toy/train") -> Split:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 60, (len(labels), 32, 32, 3)).astype(np.uint8)
    for c in range(classes):  # a bright band per class: learnable by any family
        x[labels == c, 6 * c: 6 * c + 6] += 150
    return Split(x, labels, tuple("abcde"[:classes]), name)


@pytest.fixture(autouse=True, scope="module")
def tiny_backbone(tmp_path_factory):
    """The pretrained methods embed with a tiny registered backbone (random weights)."""
    from tests.tiny_backbone import register_tiny

    register_tiny(tmp_path_factory.mktemp("tiny-weights"))


def test_every_method_has_small_settings_here():
    assert set(NAMES) <= set(SMALL) | {"majority-class"}, "add the new method to SMALL"


@pytest.mark.parametrize("name", NAMES)
def test_init_stores_only_and_declares_every_parameter(name):
    spec = get_method_spec(name)
    params = spec.params()
    method = create_method(name, **SMALL.get(name, {}))
    assert method.get_params(deep=False) == {**params, **SMALL.get(name, {})}
    fitted = [k for k in vars(method) if k.endswith("_")]
    assert fitted == [], f"__init__ of {name} computed {fitted}"
    missing = sorted(set(params) - set(declared(spec.cls)))
    assert not missing, f"{name}: parameters without a declaration: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_bad_values_are_user_errors_naming_the_parameter(name):
    spec = get_method_spec(name)
    for key, decl in declared(spec.cls).items():
        if isinstance(decl, Anything) or key not in spec.params():
            continue
        with pytest.raises(UserError, match=rf"parameter {key} = \[\[1, 2\]\] is not valid; expected"):
            validate_params(spec.cls, {key: [[1, 2]]})


@pytest.mark.parametrize("name", [n for n in NAMES if n not in SAME_CLASS_PRESETS])
def test_fit_predict_shapes_and_predict_leaves_the_method_unchanged(name):
    k = 5 if name in GRADERS else 3
    train, test = _split(classes=k), _split(n_per_class=3, classes=k, seed=1, name="toy/test")
    method = create_method(name, **SMALL.get(name, {}))
    assert method.fit(train) is method
    before = set(vars(method)), copy.deepcopy(getattr(method, "info_", None))
    out = Scores.of(method.predict_scores(test))
    assert out.main.shape == (len(test), test.n_classes) and np.isfinite(out.main).all()
    assert method.predict(test).shape == (len(test),)
    assert (set(vars(method)), getattr(method, "info_", None)) == before, \
        f"{name}.predict_scores changed the fitted method"


def test_limits_against_the_data_name_both_numbers():
    from cvbench.plan import RunOptions, RunSpec, plan_runs

    with pytest.raises(UserError, match=r"parameter k = 5000 .*training set's size \(n_train = 1198\)"):
        plan_runs("demo", [RunSpec("tiny-knn", {"k": 5000})], RunOptions(), log=lambda m: None)
    with pytest.raises(UserError, match=r"parameter size = 100000 is not valid; expected an integer from 4 to 256"):
        plan_runs("demo", [RunSpec("tiny-knn", {"size": 100000})], RunOptions(), log=lambda m: None)


def test_a_bad_sweep_point_fails_before_any_run(capsys):
    # the second point is bad: nothing runs, the message names it, exit 2
    assert cli.main(["run", "demo", "tiny-knn", "--set", "k=[1, true]", "--no-save"]) == 2
    captured = capsys.readouterr()
    assert "parameter k = True is not valid" in captured.err and "demo tiny-knn" not in captured.out
    assert cli.main(["run", "demo", "tiny-knn", "--jobs", "0", "--no-save"]) == 2
    assert "--jobs must be -1 (every core) or a number of processes from 1 to 256, got 0" in capsys.readouterr().err


def test_param_specs_reject_bools_as_numbers_and_name_the_limit():
    from cvbench.params import Bool, Choice, Float, Int, Text

    assert Int(1).check(True, {}) is not None and Int(1).check(3, {}) is None
    assert Int(1, at_most="n_train").check(5, {"n_train": 4}).endswith("(n_train = 4)")
    assert Int(1, at_most="n_train").check(5, {}) is None  # limit unknown before the data is read
    assert Float(0.0, lo_open=True).check(0.0, {}) is not None and Float(0.0, lo_open=True).check(2, {}) is None
    assert Float().check(float("nan"), {}) is not None
    assert Bool().check(1, {}) is not None and Bool(none=True).check(None, {}) is None
    assert Choice("a", 1).check(True, {}) is not None and Choice("a", 1).check(1, {}) is None
    assert Text(lambda s: int(s), "a number").check("x", {}).startswith("a number (")
    assert Text(lambda s: int(s), "a number").check("7", {}) is None
