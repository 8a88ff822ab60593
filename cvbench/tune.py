"""Choose hyper-parameters on a validation split carved from TRAIN, never on the test split.

    cvbench tune scene15 tiny-knn --set size=16 --set "k=[1,3,5,7]" --set "metric=['l1','l2']"

`tune` carves a validation split from the task's training split with the task's protocol
(stratified by class; whole groups where task.toml names `val_group_key`, e.g. both eyes of a
patient on one side), fits every sweep point on the rest through the same planner and runner
as `cvbench suite` (so a point is built, validated and keyed once, and points that share
features share them), scores each on the carve with the task's primary metric, and prints and
saves the table (markdown and JSON). The test split is never read: no image of it is decoded
and no item of it is looked at.

For a deep method it also runs the learning-rate range test the retinopathy study used to
choose its rate ("effective learning rate identification"): the training loss of a fresh
network against an exponentially growing rate over at most one pass of the fitting part,
through the engine's callbacks, saved as a figure with the suggested rate.

A suite block with `select = "validation"` is chosen with the same carve and scoring
(`validation_scores`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plan import Block, RunOptions, RunSpec, build_method, expand, training_split, validation_carve
from .run import DEFAULT_FRACTION, validation_scores
from .split import Split
from .tasks import Task, get_task


@dataclass
class TuneResult:
    task: str
    method: str
    metric: str
    carve: dict[str, Any]
    rows: list[dict[str, Any]]
    best: int
    lr_range: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The validation table as markdown (the best row marked)."""
        from .format import md_table

        keys = sorted({k for r in self.rows for k in r["point"]})
        also = ["accuracy"] if self.metric != "accuracy" else []
        head = [*keys, f"validation {self.metric}", *(f"validation {m}" for m in also), "fit + predict"]
        body = []
        for i, r in enumerate(self.rows):
            mark = " ←" if i == self.best else ""
            body.append([str(r["point"].get(k, "–")) for k in keys] + [f"{r['score']:.4f}{mark}"]
                        + [f"{r[m]:.4f}" for m in also] + [f"{r['seconds']:.1f} s"])
        return md_table(head, body)


def tune(task_name: str, block: Block, options: RunOptions, fraction: float = DEFAULT_FRACTION,
         lr_range: tuple[float, float] | None = None, lr_steps: int = 100, out: Path | None = None,
         log=print) -> TuneResult:
    """Score every point of `block` on the task's validation carve (module docstring); with
    `lr_range` (lr_min, lr_max) and a deep method, the learning-rate range test too. Writes
    the table (and figure) under `out` when given."""
    task = get_task(task_name)
    seed = block.seeds[0]
    specs = expand([block], quick=options.quick)
    train = training_split(task, options, seed)
    fit, val = validation_carve(task, train, fraction, seed)
    log(f"{task.name}: validation carve of train {len(fit)} fit / {len(val)} val"
        f"{' (grouped by ' + task.val_group_key + ')' if task.val_group_key else ''}, seed {seed}"
        f"{' [quick]' if options.quick else ''}; {len(specs)} point(s) of {block.method}")
    records = validation_scores(task, specs, fit, val, options, log=log)
    rows = []
    for rec in records:
        point = {k: v for k, v in {**rec.params, **rec.conditions}.items() if k in rec.sweep}
        score = rec.metric(task.primary)
        rows.append({"point": point, "params": rec.params, "conditions": rec.conditions,
                     "score": score if score is not None else float("nan"),
                     "accuracy": rec.metric("accuracy") or 0.0, "seconds": rec.run_seconds})
    best = max(range(len(rows)), key=lambda i: (rows[i]["score"], -i)) if rows else -1
    carve = {"fit_n": len(fit), "val_n": len(val), "fraction": fraction, "seed": seed,
             "group_key": task.val_group_key, "train": train.name, "quick": options.quick}
    result = TuneResult(task.name, block.method, task.primary, carve, rows, best)
    if lr_range is not None:
        result.lr_range = _lr_range(task, block, specs, fit, options, lr_range, lr_steps, log)
    if out is not None:
        result.files = save(result, Path(out))
    return result


def _lr_range(task: Task, block: Block, specs: list[RunSpec], fit: Split, options: RunOptions,
              lr_range: tuple[float, float], steps: int, log) -> dict[str, Any] | None:
    """The range test of the first point, when the method trains with the deep engine."""
    from . import env

    method = build_method(specs[0], env.resolve_device(options.device), options.n_jobs)
    if not hasattr(method, "lr_range_test"):  # not trained by the deep engine
        return None
    method.validate({"n_train": len(fit)})
    log(f"learning-rate range test: {lr_range[0]:g} to {lr_range[1]:g} over at most {steps} steps")
    return method.lr_range_test(fit, lr_min=lr_range[0], lr_max=lr_range[1], steps=steps)


def save(result: TuneResult, out: Path) -> list[str]:
    """Write <task>-<method>-<id>.md / .json (and -lr-range.png) under `out`; their paths."""
    from .atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    ident = hashlib.sha256(json.dumps([result.carve, [r["params"] | r["conditions"] for r in result.rows]],
                                      sort_keys=True, default=str).encode()).hexdigest()[:8]
    stem = out / f"{result.task}-{result.method}-{ident}"
    files = []
    text = [f"# Validation: {result.method} on {result.task}\n",
            f"Carve: {json.dumps(result.carve)}. Metric: {result.metric} on the validation part; "
            "the test split was not read.\n", result.table()]
    if result.lr_range and result.lr_range.get("lr"):
        png = stem.with_name(stem.name + "-lr-range.png")
        _lr_figure(result.lr_range, png, f"{result.task}: {result.method} learning-rate range test")
        files.append(str(png))
        text.append(f"\nLearning-rate range test: suggested lr {result.lr_range['suggested_lr']:.3g} "
                    f"(a tenth of {result.lr_range['min_loss_lr']:.3g}, where the smoothed loss was "
                    f"lowest; {result.lr_range['steps']} steps, {result.lr_range['stopped']}).\n\n"
                    f"![lr range test]({png.name})\n")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(text))
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result.__dict__, indent=1, default=str))
    return [str(stem.with_suffix(".md")), str(stem.with_suffix(".json")), *files]


def _lr_figure(curve: dict[str, Any], path: Path, title: str) -> None:
    from .figures import figure_setup, save_png

    plt = figure_setup()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(curve["lr"], curve["loss"], alpha=0.35, label="training loss")
    ax.plot(curve["lr"], curve["smoothed"], label="smoothed")
    if curve.get("suggested_lr"):
        ax.axvline(curve["suggested_lr"], color="tab:red", ls="--",
                   label=f"suggested lr {curve['suggested_lr']:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=8)
    save_png(fig, path)
    plt.close(fig)
