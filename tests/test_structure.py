"""The structure holds: no import cycles, no module outside cvbench/tasks/ imports a task
folder, one planning path (run, eval and suite expand blocks the same way; a method is built
and validated once per run), `cvbench tune` never reads the test split, and a task added as a
folder (plus its suite) runs end to end with no other change."""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap

import numpy as np
import pytest

from cvbench import cli, methods, plan
from cvbench.paths import repo_root
from cvbench.results import load_records
from cvbench.tasks import get_task


def _graph_script():
    spec = importlib.util.spec_from_file_location("import_graph", repo_root() / "scripts" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- imports


def test_no_import_cycles():
    g = _graph_script()
    graph = g.graph()
    assert "cvbench.plan" in graph and "cvbench.deep.ordinal" in graph  # the walk sees every module
    assert g.cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    g = _graph_script()
    assert g.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_outside_the_task_folders_imports_a_task():
    g = _graph_script()
    task_module = re.compile(r"^cvbench\.tasks\.[^.]+(\.|$)")
    offenders = {m: sorted(t for t in targets if task_module.match(t))
                 for m, targets in g.graph().items() if not m.startswith("cvbench.tasks")}
    assert {m: t for m, t in offenders.items() if t} == {}
    assert "cvbench.tasks" not in g.graph()["cvbench.metrics"]  # metrics imports no task


def test_a_task_registers_its_own_metrics_when_constructed():
    from cvbench.metrics import get_metric

    task = get_task("retinopathy")
    for name in task.metrics:
        get_metric(name)  # qwk_eyepacs, referable, ... exist once the task exists


# ---------------------------------------------------------------- one planning path


def _count(monkeypatch):
    calls = {"build": 0, "validate": 0, "specs": 0}
    build, validate, specs = plan.create_method, methods.Method.validate, plan.Block.specs

    def counting_build(*a, **k):
        calls["build"] += 1
        return build(*a, **k)

    def counting_validate(self, *a, **k):
        calls["validate"] += 1
        return validate(self, *a, **k)

    def counting_specs(self, *a, **k):
        calls["specs"] += 1
        return specs(self, *a, **k)

    monkeypatch.setattr(plan, "create_method", counting_build)
    monkeypatch.setattr(methods.Method, "validate", counting_validate)
    monkeypatch.setattr(plan.Block, "specs", counting_specs)
    return calls


def test_a_method_is_built_and_validated_once_per_run(tmp_path, monkeypatch):
    get_task("hotelid").make_fixture(tmp_path, n_hotels=4, images_per_hotel=(3, 3), n_masks=2, size=(32, 24))
    calls = _count(monkeypatch)
    fits = []
    from cvbench.baselines.tiny import TinyKNN

    original_fit = TinyKNN.fit
    monkeypatch.setattr(TinyKNN, "fit", lambda self, split: fits.append(1) or original_fit(self, split))
    block = plan.Block("tiny-knn", params={"size": 8, "k": [1, 2]},
                       conditions={"test_occlusion": ["none", "masks"]})
    options = plan.RunOptions(data_dir=str(tmp_path), save=False, progress=False)
    p = plan.plan_runs("hotelid", plan.expand([block]), options, log=lambda m: None)
    from cvbench.run import execute

    records = []
    execute(p, options, on_record=records.append)
    assert len(records) == 4  # 2 k x 2 test conditions
    assert calls["build"] == 4 and calls["validate"] == 4  # once per run
    assert len(fits) == 2  # once per training condition and k: test conditions share the fit


def test_run_eval_and_suite_expand_through_one_block(tmp_path, monkeypatch, capsys):
    calls = _count(monkeypatch)
    board = str(tmp_path / "lb")
    assert cli.main(["run", "demo", "tiny-knn", "--set", "k=[1,3]", "--leaderboard", board,
                     "--no-progress"]) == 0
    assert calls["specs"] == 1 and calls["build"] == 2 and calls["validate"] == 2
    assert cli.main(["eval", "majority-class", "--tasks", "demo", "--leaderboard", board,
                     "--no-progress"]) == 0
    assert calls["specs"] == 2
    suite = tmp_path / "demo.toml"
    suite.write_text('task = "demo"\n[[run]]\nmethod = "tiny-knn"\nparams = { k = [1, 3] }\n')
    assert cli.main(["suite", "demo", "--suite", str(suite), "--leaderboard", board, "--no-progress"]) == 0
    # once per run (2), plus the check of the suite's other mode (--quick's points, never fitted)
    assert calls["specs"] == 4 and calls["build"] == 5 + 2 and calls["validate"] == 5 + 2


# ---------------------------------------------------------------- cvbench tune


class _Untouchable(np.ndarray):
    """Items of a split that must not be looked at: indexing, iterating, any numpy function
    or ufunc on them and any array derived from them are recorded."""

    touched: list = []

    def __array_finalize__(self, obj):
        if isinstance(obj, _Untouchable):
            _Untouchable.touched.append("derived")

    def __getitem__(self, index):
        _Untouchable.touched.append("index")
        return super().__getitem__(index)

    def __iter__(self):
        _Untouchable.touched.append("iter")
        return super().__iter__()

    def __array_function__(self, func, types, args, kwargs):
        _Untouchable.touched.append(func.__name__)
        return super().__array_function__(func, types, args, kwargs)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _Untouchable.touched.append(ufunc.__name__)
        plain = [np.asarray(x).view(np.ndarray) if isinstance(x, _Untouchable) else x for x in inputs]
        return getattr(ufunc, method)(*plain, **kwargs)


def test_tune_never_reads_the_test_split(monkeypatch, tmp_path, capsys):
    task = get_task("demo")
    reader = task.module("reader")
    original = reader.read

    def spied(folder, seed=0, skip_bad=False):
        train, test = original(folder, seed=seed, skip_bad=skip_bad)
        items = np.asarray(test.items).view(_Untouchable)
        object.__setattr__(test, "items", items)
        return train, test

    monkeypatch.setattr(reader, "read", spied)
    _Untouchable.touched = []
    code = cli.main(["tune", "demo", "tiny-knn", "--set", "k=[1,5]", "--out", str(tmp_path),
                     "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "best on validation" in out
    assert _Untouchable.touched == []  # the test side was never read
    saved = json.loads(next(tmp_path.glob("demo-tiny-knn-*.json")).read_text())
    assert saved["carve"]["val_n"] + saved["carve"]["fit_n"] == 1198 and len(saved["rows"]) == 2
    # the spy works: a run does read the test side (tiny's in-process feature cache emptied)
    from cvbench.baselines import tiny

    monkeypatch.setattr(tiny, "_mem_cache", {})
    cli.main(["run", "demo", "tiny-knn", "--no-save", "--no-progress"])
    assert _Untouchable.touched


def test_tune_carves_by_the_tasks_group(tmp_path):
    from cvbench.plan import validation_carve

    get_task("retinopathy").make_fixture(tmp_path, n_patients=12, size=24)
    task = get_task("retinopathy")
    train, _ = task.load_splits(tmp_path)
    fit, val = validation_carve(task, train, 0.25, seed=0)
    assert not set(fit.groups["patient"]) & set(val.groups["patient"])


def test_lr_range_test_records_a_rising_rate_through_the_callbacks():
    from cvbench.methods import create_method
    from cvbench.split import Split

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    split = Split(items=x, labels=np.arange(64) % 2, classes=("a", "b"), name="toy/train")
    m = create_method("cnn", model="resnet-small", width=0.125, image_size=8, batch_size=4,
                      device="cpu", augment="none")
    curve = m.lr_range_test(split, lr_min=1e-5, lr_max=10.0, steps=12)
    assert 2 <= curve["steps"] <= 12 and curve["lr"] == sorted(curve["lr"])
    assert curve["lr"][0] == pytest.approx(1e-5) and len(curve["loss"]) == curve["steps"]
    assert curve["suggested_lr"] == pytest.approx(curve["min_loss_lr"] / 10)
    assert not hasattr(m, "model_")  # the method itself was not trained


def _cited_tune_commands() -> dict[str, list[list[str]]]:
    cited = {}
    for path in sorted((repo_root() / "suites").glob("*.toml")):
        commands = re.findall(r"#\s+(cvbench tune .+)", path.read_text())
        cited[path.stem] = [[a.strip("'\"") for a in re.findall(r"\"[^\"]*\"|'[^']*'|\S+", c)][1:]
                            for c in commands]
    return cited


def test_every_cited_tune_command_is_valid():
    """Every `cvbench tune` command a suite cites parses, and every point of it builds and
    passes its method's parameter check and its task's condition check."""
    parser = cli.build_parser()
    cited = _cited_tune_commands()
    assert set(cited) == {p.stem for p in (repo_root() / "suites").glob("*.toml")}
    for suite, commands in cited.items():
        assert commands, f"suites/{suite}.toml cites no `cvbench tune` command"
        for argv in commands:
            args = parser.parse_args(argv)
            block = cli._block(args, cli.parse_sets(args.set), cli.parse_sets(args.condition))
            task = get_task(args.task)
            for spec in plan.expand([block]):
                plan.check_conditions(task, spec.conditions)
                plan.build_method(spec, "cpu", None).validate({})


@pytest.mark.realdata
def test_a_tune_command_a_suite_cites_runs_on_the_real_data(real_data, tmp_path, capsys):
    """Every suite cites the `cvbench tune` commands that chose its settings; one of them
    (scene15's tiny-image k-NN) runs here in quick mode."""
    argv = next(c for c in _cited_tune_commands()["scene15"] if c[2] == "tiny-knn")
    code = cli.main([*argv, "--data-dir", str(real_data), "--quick", "--out", str(tmp_path), "--no-progress"])
    assert code == 0 and "best on validation" in capsys.readouterr().out


# ---------------------------------------------------------------- a task is a folder


TOY_TOML = """\
name = "{name}"
title = "A throw-away task"
source = "tests/test_structure.py"
order = 99
folder = ""
layout = "none (generated)"
classes = ["dark", "light"]
metrics = ["topk", "light_share"]
primary = "accuracy"
"""

TOY_READER = """\
import numpy as np

from cvbench.split import Split


def read(folder, seed=0, skip_bad=False):
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 2
    x = rng.integers(0, 20, (60, 8, 8, 3), dtype=np.uint8)
    x[y == 0, :4] += 150  # "dark": a bright top half
    x[y == 1, :, :4] += 150  # "light": a bright left half
    meta = {"variant": "generated toy"}
    return (Split(x[:40], y[:40], ("dark", "light"), "toy/train", meta=meta),
            Split(x[40:], y[40:], ("dark", "light"), "toy/test", meta=meta))
"""

TOY_PROTOCOL = """\
from cvbench.metrics import register_metric


@register_metric("light_share")
def _light_share(inp):
    \"\"\"share of items predicted light\"\"\"
    return float((inp.y_pred == 1).mean())
"""


def test_a_task_folder_and_its_suite_are_all_it_takes(tmp_path, monkeypatch, capsys):
    name = "toytask"
    folder = tmp_path / "tasks" / name
    folder.mkdir(parents=True)
    (folder / "task.toml").write_text(TOY_TOML.format(name=name))
    (folder / "reader.py").write_text(TOY_READER)
    (folder / "protocol.py").write_text(TOY_PROTOCOL)
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / f"{name}.toml").write_text(textwrap.dedent(f"""\
        task = "{name}"
        [[run]]
        method = "tiny-knn"
        params = {{ size = 8, k = [1, 3] }}
        [[run]]
        method = "majority-class"
        """))
    monkeypatch.setenv("CVBENCH_TASKS", str(tmp_path / "tasks"))
    monkeypatch.setenv("CVBENCH_SUITES", str(suites))
    board = tmp_path / "lb"
    assert cli.main(["suite", name, "--leaderboard", str(board), "--no-progress"]) == 0
    records = load_records(name, board)
    assert len(records) == 3 and all(0 <= r.metrics["light_share"] <= 1 for r in records)
    knn = max((r for r in records if r.method == "tiny-knn"), key=lambda r: r.metrics["accuracy"])
    assert knn.metrics["accuracy"] > 0.9
    index = (board / "index.md").read_text()
    assert f"[{name}]({name}.md)" in index and (board / f"{name}.md").is_file()


def test_the_source_index_names_every_built_in_method_as_the_registry_does():
    """`cvbench list` and lazy building read registrations from the source (cvbench.method_index,
    which skips files that never name register_method and reads module-level statements only);
    importing every module it considers must register exactly the methods it found, with the
    same family and description."""
    from cvbench.method_index import _source_modules, method_index

    modules = {module for module, _ in _source_modules()}
    for module in modules:
        importlib.import_module(module)
    index = method_index()
    registered = {name: spec for name, spec in methods._METHODS.items()
                  if spec.build.__wrapped__.__module__ in modules}
    assert set(index) == set(registered)
    for name, info in index.items():
        assert (info.family, info.description) == (registered[name].family, registered[name].description), name
