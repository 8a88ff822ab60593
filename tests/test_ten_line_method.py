"""The README's ten-line method, exactly as printed there, runs on all six tasks and under
every task's conditions (FairFace compositions, the Hotel-ID 2x2) with no registration
beyond its own @register_method; `cvbench eval` runs it everywhere into a private leaderboard."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cvbench import cli
from cvbench.paths import repo_root
from cvbench.plan import RunOptions, RunSpec, expand_sweep, plan_runs
from cvbench.results import load_records
from cvbench.run import execute, run_one
from cvbench.tasks import get_task, task_names

TASKS = ["demo", "scene15", "cifar10", "fairface", "retinopathy", "hotelid"]


def _readme_method() -> str:
    text = (repo_root() / "README.md").read_text()
    section = text[text.index("## Add a method in ten lines"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module", autouse=True)
def nearest_mean():
    import cvbench.methods as methods

    code = _readme_method()
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 16
    methods.load_plugins()
    methods._METHODS.pop("nearest-mean", None)
    exec(compile(code, "README.md", "exec"), {})
    yield
    methods._METHODS.pop("nearest-mean", None)


def test_every_task_folder_is_discovered():
    assert task_names() == TASKS


def test_on_demo_it_beats_chance_by_far():
    rec = run_one("demo", RunSpec("nearest-mean"))
    assert rec.metrics["accuracy"] > 0.85


@pytest.mark.realdata
@pytest.mark.parametrize("task", TASKS[1:])
def test_runs_on_every_real_task(real_data, task):
    rec = run_one(task, RunSpec("nearest-mean"), RunOptions(data_dir=str(real_data), quick=True,
                                                             save=False, progress=False))
    primary = rec.metric(get_task(task).primary)
    assert rec.test_n > 0 and primary is not None and np.isfinite(primary)


@pytest.mark.realdata
def test_runs_under_the_fairface_compositions(real_data):
    options = RunOptions(data_dir=str(real_data), quick=True, progress=False)
    specs = [RunSpec("nearest-mean", conditions=point, sweep=swept)
             for point, swept in expand_sweep({"composition": ["biased", "balanced"]})]
    report = execute(plan_runs("fairface", specs, options, log=lambda m: None), options, log=lambda m: None)
    assert report.done == 2
    recs = {r.conditions["composition"]: r for r in load_records("fairface")}
    assert recs["biased"].composition["counts"]["White"] > recs["balanced"].composition["counts"]["White"]
    assert recs["biased"].train_n == recs["balanced"].train_n


def test_runs_under_the_hotelid_two_by_two(tmp_path):
    get_task("hotelid").make_fixture(tmp_path, n_hotels=5, images_per_hotel=(2, 3), n_masks=2, size=(40, 30))
    options = RunOptions(data_dir=str(tmp_path), progress=False)
    grid = {"train_occlusion": ["none", "masks"], "test_occlusion": ["none", "masks"]}
    specs = [RunSpec("nearest-mean", conditions=p, sweep=s) for p, s in expand_sweep(grid)]
    plan = plan_runs("hotelid", specs, options, log=lambda m: None)
    assert len(plan.groups) == 2  # one fit per training side
    assert execute(plan, options, log=lambda m: None).done == 4
    cells = {(r.conditions["train_occlusion"], r.conditions["test_occlusion"]) for r in load_records("hotelid")}
    assert len(cells) == 4


def test_eval_runs_every_task_into_a_private_leaderboard(tmp_path, capsys):
    private = tmp_path / "mine"
    assert cli.main(["eval", "nearest-mean", "--tasks", "demo", "--leaderboard", str(private),
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "nearest-mean against the committed leaderboard" in out and "demo | accuracy" in out
    assert len(load_records("demo", private)) == 1 and (private / "demo.md").is_file()
    assert load_records("demo") == []  # the (test) leaderboard itself is untouched
    assert cli.main(["eval", "nearest-mean", "--tasks", "demo"]) == 2  # the private folder is required
