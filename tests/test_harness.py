"""Harness: results store, suite expansion, runner, leaderboard rendering, CLI errors."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from cvbench import cli
from cvbench.errors import UserError
from cvbench.leaderboard import render_all
from cvbench.methods import Method, create_method, get_method_spec, register_method
from cvbench.plan import RunOptions, RunSpec, expand_sweep, plan_runs
from cvbench.results import SCHEMA, RunRecord, append_record, load_records, results_path, run_key
from cvbench.run import run_one, run_suite
from cvbench.split import Split, carve_validation, per_class_limit
from cvbench.suite import load_suite
from cvbench.tasks import get_task


@register_method("test-nearest-mean", family="classical")
class NearestMean(Method):
    """Nearest class mean on raw pixels (test helper)."""

    def __init__(self, shrink: float = 0.0, seed: int = 0):
        self.shrink = shrink
        self.seed = seed

    def fit(self, split):
        x = split.items.reshape(len(split), -1).astype(np.float64)
        self.means_ = np.stack([x[split.labels == c].mean(0) for c in range(split.n_classes)])
        self.info_ = {"timings": {"means_s": 0.001}, "budget": {"protocol": "closed form"}}
        return self

    def predict_scores(self, split):
        x = split.items.reshape(len(split), -1).astype(np.float64)
        d = ((x[:, None, :] - self.means_[None]) ** 2).sum(-1)
        return -d


def _record(key, task="demo", acc=0.5, **kw) -> RunRecord:
    """A minimal valid record."""
    fields = dict(key=key, task=task, method="m", params={}, seed=0, label="m",
                  data={"variant": "v", "test": {"n": 2}}, metrics={"accuracy": acc}, timings={})
    return RunRecord(**{**fields, **kw})


def _toy_split(n=40, name="toy/train", seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    items = (rng.integers(0, 60, (n, 4, 4, 3)) + labels[:, None, None, None] * 150).astype(np.uint8)
    return Split(items, labels, ("a", "b"), name)


def test_split_fingerprint_changes_with_labels_and_subset():
    s = _toy_split()
    flipped = Split(s.items, 1 - s.labels, s.classes, s.name)
    assert s.fingerprint != flipped.fingerprint
    assert s.subset(range(10)).fingerprint != s.fingerprint
    assert Split(s.items.copy(), s.labels.copy(), s.classes, "other").fingerprint == s.fingerprint


def test_split_rejects_bad_labels_and_lengths():
    from cvbench.errors import DataError

    with pytest.raises(DataError, match="label 3 is outside 0..1"):
        Split(np.zeros((2, 2, 2), np.uint8), [0, 3], ("a", "b"), "x")
    with pytest.raises(ValueError, match="2 items but 3 labels"):
        Split(np.zeros((2, 2, 2), np.uint8), [0, 1, 1], ("a", "b"), "x")


def test_carve_validation_is_stratified_and_grouped():
    s = _toy_split(100)
    tr, va = carve_validation(s, 0.2, seed=1)
    assert len(tr) + len(va) == 100 and len(va) == 20
    assert np.bincount(va.labels).tolist() == [10, 10]
    groups = {"patient": np.repeat(np.arange(50), 2)}
    g = Split(s.items, np.repeat([0, 1], 50), s.classes, "g/train", groups=groups)
    tr, va = carve_validation(g, 0.2, seed=0, group_key="patient")
    assert not set(tr.groups["patient"]) & set(va.groups["patient"])
    assert per_class_limit(s, 5).class_counts().tolist() == [5, 5]
    # more classes than validation items (14 hotels, 64 images, 20%): a seeded random carve
    many = Split(np.zeros((64, 2, 2), np.uint8), np.arange(64) % 14, tuple("abcdefghijklmn"), "h/train")
    tr, va = carve_validation(many, 0.2, seed=0)
    assert len(tr) + len(va) == 64 and len(va) == 13


def test_expand_sweep_cartesian():
    points = expand_sweep({"k": [1, 2, 3], "metric": ["l1", "l2"], "size": 16})
    assert len(points) == 6
    assert all(p["size"] == 16 for p, _ in points)
    assert points[0][1] == ("k", "metric")
    assert {(p["k"], p["metric"]) for p, _ in points} == {(k, m) for k in (1, 2, 3) for m in ("l1", "l2")}


def test_suite_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('task = "demo"\n[[run]]\nmethod = "x"\nparams = { k = [1, 2 }\n')
    with pytest.raises(UserError, match=r"bad.toml.*line 4"):
        load_suite(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('task = "demo"\n[[run]]\nmethod = "x"\nparamz = {}\n')
    with pytest.raises(UserError, match="unknown key 'paramz'"):
        load_suite(unknown)


def test_create_method_rejects_unknown_names_and_params():
    with pytest.raises(UserError, match="valid methods:.*test-nearest-mean"):
        create_method("no-such-method")
    with pytest.raises(UserError, match="valid parameters: seed, shrink"):
        create_method("test-nearest-mean", k=3)


def test_results_store_atomic_replace_and_corrupt_lines(tmp_path, capsys):
    append_record(_record("abc"), tmp_path)
    append_record(_record("def"), tmp_path)
    append_record(_record("abc", acc=0.9), tmp_path)  # same key replaces
    path = results_path("demo", tmp_path)
    assert len(path.read_text().splitlines()) == 2
    with open(path, "a") as f:
        f.write('{"key": "half-writ\n')
        f.write(json.dumps({**json.loads(_record("ghi").to_json()), "label": 5}) + "\n")
    warnings = []
    recs = load_records("demo", tmp_path, warn=warnings.append)
    assert [r.key for r in recs] == ["def", "abc"]
    assert recs[1].metrics["accuracy"] == 0.9 and recs[1].schema == SCHEMA
    assert len(warnings) == 2 and "demo.jsonl:3" in warnings[0]
    assert "demo.jsonl:4" in warnings[1] and "field 'label'" in warnings[1]
    assert not list(tmp_path.glob("results/.*.tmp"))


def test_run_key_stable_and_sensitive():
    a = run_key("t", ["f1", "f2"], "m", {"k": 1, "metric": "l1"}, 0)
    assert a == run_key("t", ["f1", "f2"], "m", {"metric": "l1", "k": 1}, 0)
    assert a != run_key("t", ["f1", "f2"], "m", {"k": 2, "metric": "l1"}, 0)
    assert a != run_key("t", ["f1", "f2"], "m", {"k": 1, "metric": "l1"}, 1)
    assert a != run_key("t", ["f1", "f3"], "m", {"k": 1, "metric": "l1"}, 0)


def test_run_one_on_demo_records_everything():
    spec = RunSpec("test-nearest-mean", {"shrink": 0.0}, seed=3)
    assert not plan_runs("demo", [spec], RunOptions(), log=lambda m: None).runs[0].recorded
    rec = run_one("demo", spec)
    assert rec.metrics["accuracy"] > 0.8  # nearest mean on digits is well above 0.1 chance
    assert rec.seed == 3 and rec.params["seed"] == 3
    assert rec.test_n == 599 and len(rec.y_pred()) == 599 and len(rec.item_ids()) == 599
    assert np.asarray(rec.predictions["scores"]).shape == (599, 10)  # 10 classes: every score kept
    assert rec.timings["means_s"] == 0.001 and rec.budget["protocol"] == "closed form"
    assert {"python", "numpy"} <= set(rec.versions) and rec.git
    assert rec.method_facts["family"] == "classical" and rec.method_facts["defaults"] == {"shrink": 0.0, "seed": 0}
    lo, hi = rec.metrics["accuracy_ci"]
    assert lo <= rec.metrics["accuracy"] <= hi
    # the same key is now recorded: a suite resumes past it
    assert plan_runs("demo", [spec], RunOptions(), log=lambda m: None).runs[0].recorded
    assert not plan_runs("demo", [spec], RunOptions(force=True), log=lambda m: None).runs[0].recorded
    run_one("demo", spec)
    assert len(load_records("demo")) == 1


_SHRINK_SWEEP = """
    [[run]]
    method = "test-nearest-mean"
    label = "nearest mean"
    params = { shrink = [0.0, 0.5] }
    seeds = [0, 1]
"""  # 2 parameter points x 2 seeds = 4 runs


def _demo_suite(tmp_path, body):
    path = tmp_path / "demo.toml"
    path.write_text('task = "demo"\n' + textwrap.dedent(body))
    return path


def test_suite_resumes_and_renders_deterministically(tmp_path):
    path = _demo_suite(tmp_path, _SHRINK_SWEEP + """
        [[run]]
        method = "test-nearest-mean"
        label = "gpu protocol"
        gpu_only = true
    """)
    opts = RunOptions(device="cpu", progress=False)
    logs = []
    report = run_suite("demo", opts, path=path, log=logs.append)
    assert (report.done, report.resumed, report.skipped_gpu) == (4, 0, 1)
    assert any("skipping 1 GPU-protocol run" in m for m in logs)
    again = run_suite("demo", opts, path=path, log=logs.append)
    assert (again.done, again.resumed) == (0, 4)
    listed = []
    dry = run_suite("demo", opts, path=path, log=listed.append, dry_run=True)
    assert dry.resumed == 4 and sum(m.strip().startswith("recorded") for m in listed) == 4
    index = render_all(tasks=[get_task("demo"), get_task("scene15")] if _has("scene15") else [get_task("demo")])
    page = (index.parent / "demo.md").read_text()
    figures = sorted((index.parent / "figures" / "demo").glob("nearest-mean-*-confusion.png"))
    assert len(figures) == 1  # slug + run key
    first = index.read_text(), page, figures[0].read_bytes()
    render_all(tasks=[get_task("demo")])
    assert "nearest mean: accuracy over shrink" in page
    assert "![confusion nearest mean]" in page
    assert (index.parent / "demo.md").read_text() == first[1]
    assert figures[0].read_bytes() == first[2]


def _has(task):
    try:
        get_task(task)
        return True
    except UserError:
        return False


def test_index_says_no_runs_yet(tmp_path):
    index = render_all(tasks=[get_task("demo")])
    text = index.read_text()
    assert "no runs yet" in text and "`cvbench suite demo`" in text


def test_cli_user_errors_exit_2(capsys, tmp_path):
    assert cli.main(["run", "no-such-task", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'no-such-task'; valid tasks:" in err and "demo" in err
    assert "Traceback" not in err
    assert cli.main(["run", "demo", "no-such-method"]) == 2
    assert "valid methods" in capsys.readouterr().err
    assert cli.main(["run", "demo", "test-nearest-mean", "--set", "bogus=1"]) == 2
    assert "no parameter 'bogus'" in capsys.readouterr().err
    assert cli.main(["suite", "demo", "--suite", str(tmp_path / "missing.toml")]) == 2
    assert "no suite file" in capsys.readouterr().err


def test_cli_missing_data_root_is_one_sentence(capsys, tmp_path):
    if not _has("scene15"):
        pytest.skip("scene15 task not registered")
    code = cli.main(["run", "scene15", "test-nearest-mean", "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "no data for task 'scene15'" in err and "cvbench data" in err


def test_cli_run_set_values_and_records(capsys):
    assert cli.main(["run", "demo", "test-nearest-mean", "--set", "shrink=[0.0, 0.25]", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert len([ln for ln in out.splitlines() if ln.startswith("demo test-nearest-mean")]) == 2
    recs = load_records("demo")
    assert sorted(r.params["shrink"] for r in recs) == [0.0, 0.25]
    assert all(r.sweep == ["shrink"] for r in recs)
    assert cli.parse_value("3") == 3 and cli.parse_value("l1") == "l1" and cli.parse_value("true") is True


def test_records_are_json_lines(tmp_path):
    run_one("demo", RunSpec("test-nearest-mean"))
    lines = results_path("demo").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["task"] == "demo"


def test_skip_bad_drops_and_counts_unreadable(tmp_path):
    from PIL import Image

    from cvbench.errors import BadImageError
    from cvbench.split import drop_unreadable

    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(p)
        paths.append(p)
    (tmp_path / "1.png").write_bytes(b"not an image at all")
    s = Split(paths, [0, 1, 0, 1], ("a", "b"), "x/train")
    with pytest.raises(BadImageError, match="1.png"):
        s.image(1)
    kept = drop_unreadable(s)
    assert len(kept) == 3 and kept.meta["bad_images"] == 1
    assert kept.meta["bad_paths"][0].endswith("1.png")


def test_demo_suite_quick_end_to_end(capsys):
    """The committed demo suite runs every block (classical + deep) and renders the pages."""
    assert cli.main(["suite", "demo", "--quick", "--no-progress", "--device", "cpu"]) == 0
    recs = load_records("demo")
    families = {r.family for r in recs}
    assert {"classical", "deep", "baseline"} <= families
    assert all(r.quick and r.test_n == 150 for r in recs)
    best = max(r.metrics["accuracy"] for r in recs)
    assert best > 0.5  # ten balanced classes: chance is 0.1
    page = (load_records.__globals__["leaderboard_dir"]() / "demo.md").read_text()
    assert "Quick runs (smoke tests" in page


def test_cli_list_and_data_where(capsys, tmp_path):
    assert cli.main(["list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "data found" in out  # demo needs no folder
    assert "tiny-knn" in out and "test-nearest-mean" in out
    if _has("scene15"):
        assert f"no data (expected {tmp_path / 'scene15'})" in out
        assert cli.main(["data", "where", "scene15", "--data-dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "missing" in out and "expected layout" in out


def test_plugin_module_error_is_user_error(monkeypatch):
    import cvbench.methods as methods

    monkeypatch.setattr(methods, "_PLUGINS_LOADED", False)
    monkeypatch.setenv("CVBENCH_PLUGINS", "no_such_plugin_module_xyz")
    with pytest.raises(UserError, match="no_such_plugin_module_xyz"):
        methods.load_plugins()


def test_only_rank_zero_writes(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    rec = run_one("demo", RunSpec("test-nearest-mean"))
    assert rec is not None and load_records("demo") == []
    monkeypatch.setenv("RANK", "0")
    run_one("demo", RunSpec("test-nearest-mean"))
    assert len(load_records("demo")) == 1
    from cvbench.atomic import _UMASK

    assert (results_path("demo").stat().st_mode & 0o777) == 0o666 & ~_UMASK  # not mkstemp's 0600


def test_parallel_appends_lose_no_record(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_append_one, [(tmp_path, i) for i in range(24)]))
    assert sorted(int(r.key) for r in load_records("demo", tmp_path)) == list(range(24))


def _append_one(args):
    root, i = args
    append_record(_record(str(i), acc=i / 24), root)


def test_cache_key_sees_replaced_files_fingerprint_does_not(tmp_path):
    from PIL import Image

    def make(folder, value):
        folder.mkdir()
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(folder / "a.png")
        return Split([folder / "a.png"], [0], ("c",), "x/train", root=str(folder))

    one, two = make(tmp_path / "one", 10), make(tmp_path / "two", 200)
    assert one.fingerprint == two.fingerprint  # same relative names and labels: same data id
    Image.fromarray(np.full((9, 9), 200, np.uint8)).save(tmp_path / "two" / "a.png")
    two = Split([tmp_path / "two" / "a.png"], [0], ("c",), "x/train", root=str(tmp_path / "two"))
    assert one.cache_key != two.cache_key  # but caches of pixels must not be shared


@pytest.mark.parametrize("task_name", ["demo", "scene15", "cifar10", "fairface", "retinopathy", "hotelid"])
def test_committed_suites_build_every_method(task_name):
    """Every run of every committed suite names a registered method with valid parameters."""
    task = get_task(task_name)
    suite = load_suite(task.suite_path(), task.name)
    for quick in (False, True):
        specs = suite.specs(quick=quick)
        assert specs or quick
        for spec in specs:
            method = create_method(spec.method, **spec.params)
            method.validate()  # every value of every sweep point is valid
            for name, value in spec.conditions.items():
                task.conditions[name].validate(value, task.name)
    families = {get_method_spec(b.method).family for b in suite.blocks}
    assert "classical" in families and "deep" in families  # both families on every task


def test_fixture_only_for_tasks_that_have_one(capsys, tmp_path):
    assert cli.main(["data", "fixture", "demo", str(tmp_path)]) == 2
    assert "has no generated fixture" in capsys.readouterr().err


@pytest.mark.parametrize("body, message", [
    ('[[run]]\nmethod = "tiny-knn"\nlabel = 5\n', r"'label' must be a one-line string, got 5"),
    ('[[run]]\nmethod = "tiny-knn"\nlabel = "two\\nlines"\n', "'label' must be a one-line string"),
    ('[[run]]\nmethod = 3\n', "'method' must be a method name"),
    ('[[run]]\nmethod = "tiny-knn"\ngpu_only = "no"\n', "'gpu_only' must be true or false, got 'no'"),
    ('[[run]]\nmethod = "tiny-knn"\nseeds = []\n', "'seeds' must be a non-empty list"),
    ('[[run]]\nmethod = "tiny-knn"\nparams = { k = [] }\n', r"k = \[\] is an empty sweep"),
    ('run = [1, 2]\n', r"expected one or more \[\[run\]\] tables"),
    ('[defaults]\nk = 3\n[[run]]\nmethod = "tiny-knn"\n', r"\[defaults\] must hold one table per method"),
])
def test_suite_schema_errors_before_anything_runs(tmp_path, body, message):
    path = tmp_path / "demo.toml"
    path.write_text('task = "demo"\n' + body)
    with pytest.raises(UserError, match=message):
        load_suite(path, "demo")


def test_suite_non_utf8_and_defaults_per_method(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_bytes(b'task = "demo"\n# caf\xe9\n[[run]]\nmethod = "tiny-knn"\n')
    with pytest.raises(UserError, match="not UTF-8"):
        load_suite(path, "demo")
    path.write_text('task = "demo"\n[defaults.tiny-knn]\nk = 3\n[defaults.cnn]\nepochs = 2\n'
                    '[[run]]\nmethod = "tiny-knn"\nparams = { size = 8 }\n'
                    '[[run]]\nmethod = "majority-class"\n')
    specs = load_suite(path, "demo").specs()
    assert specs[0].params == {"k": 3, "size": 8} and specs[1].params == {}  # no leak across methods


def test_unknown_condition_and_bad_condition_value_fail_the_plan():
    with pytest.raises(UserError, match="task 'demo' has no condition 'composition'"):
        plan_runs("demo", [RunSpec("tiny-knn", conditions={"composition": "biased"})], RunOptions(),
                  log=lambda m: None)
    with pytest.raises(UserError, match="condition test_occlusion = 'some' is not valid"):
        get_task("hotelid").conditions["test_occlusion"].validate("some", "hotelid")


def test_schema_1_records_migrate_with_conditions_and_new_keys(tmp_path):
    """A schema-1 record of a task-by-method product loads as the plain method plus the task's
    condition, with the key the planner computes for that run."""
    v1 = json.loads(_record("old", task="fairface").to_json())
    v1.pop("method_facts"), v1.pop("conditions")
    v1.update(schema=1, method="fairface-tiny-knn", params={
        "size": 16, "crop": False, "zero_mean": True, "norm": "l1", "k": 1, "metric": "l1",
        "weighted": False, "n_jobs": None, "joblib_backend": "loky", "seed": 0,
        "composition": "biased", "composition_total": 0, "composition_key": "race"},
        data={"variant": "v", "train": {"n": 2, "fingerprint": "aa"}, "test": {"n": 2, "fingerprint": "bb"}})
    path = results_path("fairface", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(v1) + "\n")
    (rec,) = load_records("fairface", tmp_path)
    assert rec.schema == SCHEMA and rec.method == "tiny-knn" and rec.conditions == {"composition": "biased"}
    assert "composition" not in rec.params and "seed" not in rec.params
    assert rec.feature_cache_params == ("k", "metric", "weighted") and rec.defaults["k"] == 1
    kp = {k: v for k, v in rec.params.items() if k not in ("n_jobs", "joblib_backend")}
    assert rec.key == run_key("fairface", ["aa", "bb"], "tiny-knn", kp, 0, False, {"composition": "biased"})
    # the whole training split (all 7000) is no composition at all
    v1["params"].update(composition="natural", composition_total=7000)
    path.write_text(json.dumps(v1) + "\n")
    assert load_records("fairface", tmp_path)[0].conditions == {}


def test_demo_target_writes_nothing_into_the_committed_leaderboard(tmp_path, capsys):
    from cvbench.paths import leaderboard_dir, repo_root

    recipe = (repo_root() / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "--leaderboard $(DEMO_LEADERBOARD)" in recipe and "--show" in recipe
    scratch = tmp_path / "demo-leaderboard"
    assert cli.main(["suite", "demo", "--quick", "--leaderboard", str(scratch), "--show",
                     "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Tiny image k-NN" in out and "accuracy [95% CI]" in out
    assert load_records("demo", scratch) and (scratch / "demo.md").is_file()
    assert not results_path("demo", leaderboard_dir()).exists()


