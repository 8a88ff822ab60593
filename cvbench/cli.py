"""The `cvbench` command line: list, data, suite, run, eval, leaderboard, records."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

from .errors import UserError


def parse_value(text: str):
    """A --set value as TOML (numbers, booleans, quoted strings, lists), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_sets(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        params[key.strip()] = parse_value(value.strip())
    return params


def _options(args, **over):
    from .plan import RunOptions

    fields = dict(data_dir=args.data_dir, device=args.device, n_jobs=args.jobs,
                  quick=getattr(args, "quick", False), skip_bad=args.skip_bad,
                  force=getattr(args, "force", False), progress=not args.no_progress,
                  leaderboard=getattr(args, "leaderboard", None),
                  command=("cvbench", *getattr(args, "argv", ())))
    return RunOptions(**{**fields, **over})


def cmd_list(args) -> int:

    from .method_index import method_index
    from .tasks import list_tasks

    print(f"Tasks (data root: {_root(args)}):")
    for t in list_tasks():
        state = t.data_state(args.data_dir)
        found = f"no data (expected {t.data_path(args.data_dir)})" if state == "missing" else f"data {state}"
        print(f"  {t.name:<12} {t.title}  [{found}]")
    print("\nMethods:")
    from importlib.metadata import entry_points

    infos = dict(method_index())  # the built-in methods, read from the source (no torch)
    if (os.environ.get("CVBENCH_PLUGINS") or "cvbench.methods" in sys.modules
            or entry_points(group="cvbench.plugins")):  # plugins register when imported
        from .methods import method_infos

        infos = {m.name: m for m in method_infos()}
    for m in sorted(infos.values(), key=lambda m: m.name):
        print(f"  {m.name:<20} {m.family:<10} {m.description}")
    tasks = list_tasks()
    by_name: dict[str, list] = {}
    for t in tasks:
        for c in t.conditions.values():
            by_name.setdefault(c.name, []).append((t.name, c))
    print("\nConditions (a suite's `conditions`, or `--condition NAME=VALUE`):")
    for name, uses in by_name.items():
        c = uses[0][1]
        shared = len(uses) == len(tasks) and len({(u.acts_on, u.what) for _, u in uses}) == 1
        for where, cond in ([("every task", c)] if shared else uses):
            values = f"; values: {', '.join(map(str, cond.values))}" if cond.values else ""
            print(f"  {name:<16} {where}, {cond.acts_on}: {cond.what}{values}")
    return 0


def _root(args):
    from .paths import data_root

    return data_root(args.data_dir)


def cmd_data(args) -> int:
    from .tasks import get_task

    task = get_task(args.task)
    if args.action == "where":
        print(f"{task.name}: {task.data_path(args.data_dir)} ({task.data_state(args.data_dir, read=True)})")
        print(f"expected layout: {task.layout}")
        return 0
    if args.action == "check":
        from .data.check import check_splits, format_report, format_scan, scan_folder

        present = task.folder and task.data_state(args.data_dir) != "missing"
        scan = scan_folder(task.data_path(args.data_dir)) if present else None
        try:
            train, test = task.load_splits(args.data_dir, skip_bad=False)
        except UserError:
            for line in format_scan(scan) if scan else []:  # what the walk found, then why
                print(line)
            raise
        report = check_splits([train, test], progress=not args.no_progress, folder=scan)
        print(format_report(report))
        return 0 if report.ok else 1
    if args.action == "fetch":
        from .data.fetch import fetch_task

        print(fetch_task(task, args.data_dir))
        return 0
    if args.action == "fixture":
        if not args.dest:
            raise UserError("`cvbench data fixture TASK DEST` needs a destination folder")
        print(task.make_fixture(Path(args.dest)))
        return 0
    raise UserError(f"unknown data action {args.action!r}")


def _render(args) -> Path:
    from .leaderboard import render_all
    from .paths import leaderboard_dir
    from .plan import check_writable_folder

    root = Path(args.leaderboard) if getattr(args, "leaderboard", None) else None
    check_writable_folder(root or leaderboard_dir(), "the leaderboard folder")
    return render_all(root)


def _where(args, adhoc: bool) -> None:
    """Resolve where this command writes, once: --leaderboard, else $CVBENCH_LEADERBOARD, else
    for an ad-hoc run (`cvbench run`, a suite file of your own) an ignored scratch folder in a
    checkout, for a committed suite the committed leaderboard (an installed copy: ./leaderboard)."""
    from .paths import leaderboard_dir, scratch_leaderboard

    if not getattr(args, "leaderboard", None):
        args.leaderboard = str(scratch_leaderboard() if adhoc else leaderboard_dir())


def cmd_suite(args) -> int:

    from .run import run_suite

    _where(args, adhoc=bool(args.suite or os.environ.get("CVBENCH_SUITES")))

    try:
        report = run_suite(args.task, _options(args), only=args.only,
                           path=Path(args.suite) if args.suite else None, dry_run=args.dry_run)
    except KeyboardInterrupt:
        if not args.dry_run:
            _render(args)  # the runs finished before the interrupt show on the pages
        raise
    if args.dry_run:
        print(f"{args.task}: {report.resumed} run(s) already recorded; nothing was run (--dry-run)")
        return 0
    index = _render(args)
    print(f"{args.task}: {report.done} run(s) done, {report.resumed} already recorded (resumed), "
          f"{report.skipped_gpu} GPU-only skipped, {len(report.failed)} failed in "
          f"{report.wall_s:.1f} s")
    print(f"leaderboard: {index} (task page: {index.parent / (args.task + '.md')})")
    if args.show:
        _show(args.task, index.parent)
    if report.failed:
        for name, why in report.failed:
            print(f"  failed: {name}: {why}", file=sys.stderr)
        return 1
    return 0


def _result_line(rec, set_keys=()) -> str:
    """One run's result: the parameters the command line set (`set_keys`) and the swept
    ones, its conditions, metrics, times and the images --skip-bad left out."""
    from .run import skipped_note

    m = rec.metrics
    extra = "".join(f", {k} {m[k]:.4f}" for k in ("qwk", "map5", "top5_accuracy") if k in m)
    ci = rec.interval("accuracy") or (0.0, 0.0)
    point = {**{k: rec.params.get(k) for k in [*set_keys, *rec.sweep] if k in rec.params},
             **rec.conditions}
    return (f"{rec.task} {rec.method} {point or ''}: accuracy {m['accuracy']:.4f} "
            f"[{ci[0]:.4f}, {ci[1]:.4f}]{extra}; fit {rec.timings['fit_s']:.2f} s, "
            f"predict {rec.timings['predict_s']:.2f} s{skipped_note(rec)}")


def _show(task_name: str, root: Path) -> None:
    """Print every row of a task (what its page leads with)."""
    from .aggregate import superseded
    from .format import fmt_seconds
    from .report import Page, fmt_rank, fmt_row_metric, row_label
    from .results import load_records
    from .tasks import get_task

    task = get_task(task_name)
    records = superseded(load_records(task.name, root))[0]
    page = Page(task, [r for r in records if not r.quick] or records, [], root)
    rows = page.table.rows
    width = max([len(row_label(r)) for r in rows] + [6])
    print(f"\n{'method':<{width}}  {task.primary + ' [95% CI]':<44} {'rank':<8} runtime")
    for r in rows:
        print(f"{row_label(r):<{width}}  {fmt_row_metric(r, task.primary):<44} {fmt_rank(r):<8} "
              f"{fmt_seconds(r.runtime().seconds)}")


def _block(args, params: dict, conditions: dict | None = None):
    """The command line's method, parameters, conditions and seed as one block (the same
    expansion as a suite's [[run]] table)."""
    from .plan import Block, check_seed
    from .suite import _label_ok

    check_seed(args.seed)
    if args.label is not None and not _label_ok(args.label):
        raise UserError(f"--label must be one line of printable text, got {args.label!r}")
    return Block(method=args.method, label=args.label or args.method, params=params,
                 conditions=conditions or {}, seeds=[args.seed])


def cmd_run(args) -> int:
    from .plan import expand, plan_runs
    from .run import execute

    if not args.no_save:
        _where(args, adhoc=True)
    options = _options(args, save=not args.no_save, force=True)
    block = _block(args, parse_sets(args.set), parse_sets(args.condition))
    plan = plan_runs(args.task, expand([block]), options, log=lambda m: None)
    report = execute(plan, options, on_record=lambda rec: print(
        _result_line(rec, block.params) + ("" if options.save else " (not saved)")))
    if options.save:
        from .results import results_path

        index = _render(args)
        print(f"records: {results_path(args.task, Path(args.leaderboard))}; pages: {index}")
    return 1 if report.failed else 0


def cmd_eval(args) -> int:
    """One method on every task (its standard protocol) into a private leaderboard, next to
    the committed leaderboard's best run per family."""
    from .aggregate import superseded
    from .format import fmt
    from .paths import leaderboard_dir
    from .plan import expand, plan_runs
    from .results import load_records
    from .run import execute
    from .tasks import get_task, list_tasks

    if not args.leaderboard:
        raise UserError("cvbench eval writes into a private leaderboard: give --leaderboard DIR")
    private = Path(args.leaderboard)
    if private.resolve() == leaderboard_dir().resolve():
        raise UserError(f"--leaderboard {private} is the committed leaderboard; give another folder")
    names = [t.name for t in list_tasks()] if args.tasks == "all" else [n.strip() for n in args.tasks.split(",")]
    tasks = [get_task(n) for n in names]
    options = _options(args, force=True)
    block = _block(args, parse_sets(args.set))
    rows = []
    for task in tasks:
        state = task.data_state(args.data_dir)
        if state != "found":
            print(f"{task.name}: skipped (data {state} at {task.data_path(args.data_dir)})")
            continue
        plan = plan_runs(task, expand([block]), options, log=lambda m: None)
        done: list = []
        execute(plan, options, on_record=done.append)
        for rec in done:
            print(_result_line(rec, block.params))
        if not done:
            continue
        rec = done[0]
        committed = [r for r in superseded(load_records(task.name, warn=lambda m: None))[0]
                     if not r.quick and r.test_fingerprint == rec.test_fingerprint]
        best: dict[str, object] = {}
        for r in sorted(committed, key=lambda r: -(r.metric(task.primary) or -1e9)):
            best.setdefault(r.family, r)
        mine = rec.metric(task.primary)
        ci = rec.interval(task.primary) or rec.interval("accuracy")
        line = [task.name, task.primary, fmt(mine) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")]
        line += [f"{fam}: {fmt(r.metric(task.primary))} ({r.label})" for fam, r in best.items()]
        rows.append(line)
    _render(args)
    print(f"\n{args.method} against the committed leaderboard (same test data; {'quick subsets, ' if args.quick else ''}best run per family):")
    for line in rows:
        print("  " + " | ".join(line))
    print(f"private leaderboard: {private / 'index.md'}")
    return 0


def cmd_tune(args) -> int:
    """Score every sweep point on the task's validation carve of train (cvbench.tune)."""
    from .tune import tune

    lr_range = None
    if not args.no_lr_range:
        try:
            lo, hi = (float(x) for x in args.lr_range.split(","))
        except ValueError:
            raise UserError(f"--lr-range expects MIN,MAX (e.g. 1e-6,1), got {args.lr_range!r}") from None
        lr_range = (lo, hi)
    if not 0 < args.fraction < 1:
        raise UserError(f"--fraction must be between 0 and 1 (the share of train held out), got {args.fraction}")
    block = _block(args, parse_sets(args.set), parse_sets(args.condition))
    result = tune(args.task, block, _options(args, save=False), fraction=args.fraction,
                  lr_range=lr_range, lr_steps=args.lr_steps, out=Path(args.out))
    print()
    print(result.table())
    if result.rows:
        best = result.rows[result.best]
        print(f"best on validation: {best['point'] or best['params']} ({result.metric} {best['score']:.4f})")
    if result.lr_range and result.lr_range.get("suggested_lr"):
        print(f"learning-rate range test: suggested lr {result.lr_range['suggested_lr']:.3g}")
    for path in result.files:
        print(f"wrote {path}")
    return 0


def cmd_rerun(args) -> int:
    """Re-run one record from its stored specification and compare its metric."""
    from .methods import HIDDEN_PARAMS
    from .plan import RunSpec, plan_runs
    from .results import load_records
    from .run import execute
    from .tasks import get_task, list_tasks

    root = Path(args.leaderboard) if args.leaderboard else None
    found = [r for t in list_tasks() for r in load_records(t.name, root, warn=lambda m: None)
             if r.key.startswith(args.key)]
    if not found:
        raise UserError(f"no record has a key starting {args.key!r} in {root or 'the committed leaderboard'}")
    if len({r.key for r in found}) > 1:
        raise UserError(f"{len(found)} records have keys starting {args.key!r}: "
                        f"{', '.join(sorted(r.key for r in found)[:5])}; give more of the key")
    rec = found[0]
    task = get_task(rec.task)
    spec = RunSpec(rec.method, params={k: v for k, v in rec.params.items() if k not in HIDDEN_PARAMS},
                   seed=rec.seed, label=rec.label, sweep=tuple(rec.sweep), block=rec.block,
                   conditions=dict(rec.conditions))
    options = _options(args, quick=rec.quick, force=True, save=args.save)
    plan = plan_runs(task, [spec], options, log=lambda m: None)
    (planned,) = plan.runs
    print(f"re-running {rec.key} ({rec.task} {rec.method}, seed {rec.seed}{', quick' if rec.quick else ''}), "
          f"recorded at commit {rec.git or 'unknown'} on {rec.started[:10] or 'an unknown day'}"
          + (f" by `{' '.join(rec.command)}`" if rec.command else ""))
    if planned.key != rec.key:
        print(f"note: this run's key is {planned.key}, not {rec.key}: the data or the method's "
              "parameters differ from the record's")
    planned.selection = rec.info.get("selection")  # a record chosen on validation stays so
    new: list = []
    execute(plan, options, on_record=new.append)
    if not new:
        return 1
    metric = task.primary
    old_v, new_v = rec.metric(metric), new[0].metric(metric)
    same = old_v is not None and new_v is not None and abs(old_v - new_v) <= 1e-9
    print(f"{metric}: recorded {old_v:.4f}, now {new_v:.4f} ({'the same' if same else f'differs by {new_v - old_v:+.4f}'}); "
          f"code now at {new[0].git}" + ("" if args.save else " (not saved; --save replaces the record)"))
    return 0 if same else 1


def cmd_leaderboard(args) -> int:
    print(f"leaderboard written: {_render(args)}")
    return 0


def cmd_records(args) -> int:
    """Check every record file (report invalid lines) or rewrite them at the current schema."""
    from .aggregate import superseded
    from .results import load_records as load
    from .results import rewrite_records
    from .tasks import list_tasks

    root = Path(args.leaderboard) if args.leaderboard else None
    problems: list[str] = []
    for t in list_tasks():
        if args.action == "migrate":
            from .results import results_path

            n = rewrite_records(t.name, root, warn=problems.append)
            if n:
                print(f"{t.name}: {n} record(s) at the current schema in {results_path(t.name, root)}")
        recs = load(t.name, root, warn=problems.append)
        if args.action == "check":
            old = superseded(recs)[1]
            note = (f", {len(old)} of them set aside (test runs of sweep points a later validation "
                    "selection turned down; kept in the file, not shown)") if old else ""
            print(f"{t.name}: {len(recs)} valid record(s){note}")
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


class _Version(argparse.Action):
    """--version: the package version and the checkout's git revision (looked up only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__, env

        print(f"cvbench {__version__} (git revision {env.git_revision()})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from .paths import ENVIRONMENT

    epilog = "environment:\n" + "\n".join(f"  {name:<20} {what}" for name, what in ENVIRONMENT)
    p = argparse.ArgumentParser(prog="cvbench", description=__doc__, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version, help="print the version and the git revision, then exit")
    data = argparse.ArgumentParser(add_help=False)  # each subcommand takes only what it uses
    data.add_argument("--data-dir", help="data root (default: $CVBENCH_DATA or ~/.cache/cvbench/data)")
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument("--no-progress", action="store_true", help="no progress bars")
    running = argparse.ArgumentParser(add_help=False, parents=[data, progress])
    running.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    running.add_argument("--jobs", type=int, default=None,
                         help="worker processes for decoding and feature extraction: 1 to 256, or -1 "
                              "for every core (default: the method's own)")
    running.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                         help="send the classical per-image work (dense SIFT, encodings, tiny images) "
                              "to this Dask scheduler (needs the 'dask' extra; default: "
                              "$CVBENCH_SCHEDULER, else local worker processes)")
    running.add_argument("--skip-bad", action="store_true",
                         help="skip undecodable images (counted in the record) instead of stopping")
    seed_help = "seed of the run, an integer >= 0 (default 0); tasks that draw their split draw it with it"
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", parents=[data], help="tasks, methods, and whether data was found").set_defaults(fn=cmd_list)

    d = sub.add_parser("data", parents=[data, progress], help="where the data is, check it, fetch it")
    d.add_argument("action", choices=["where", "check", "fetch", "fixture"])
    d.add_argument("task")
    d.add_argument("dest", nargs="?", help="destination folder (fixture only)")
    d.set_defaults(fn=cmd_data)

    s = sub.add_parser("suite", parents=[running], help="run a task's suite (resumes; skips recorded runs)")
    s.add_argument("task")
    s.add_argument("--only", help="only the runs of this method (or block label)")
    s.add_argument("--quick", action="store_true", help="small subset and the suite's quick overrides")
    s.add_argument("--force", action="store_true", help="re-run runs that already have a record")
    s.add_argument("--suite", help="suite TOML to use instead of suites/<task>.toml")
    s.add_argument("--dry-run", action="store_true",
                   help="list the runs and whether each is already recorded; run nothing")
    s.add_argument("--leaderboard", help="write records and pages here instead of leaderboard/")
    s.add_argument("--show", action="store_true", help="print every method's result when done")
    s.set_defaults(fn=cmd_suite)

    r = sub.add_parser("run", parents=[running], help="run one method on one task")
    r.add_argument("task")
    r.add_argument("method")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="method parameter (repeatable)")
    r.add_argument("--condition", action="append", metavar="NAME=VALUE",
                   help="a task condition, e.g. composition=biased (repeatable; lists sweep)")
    r.add_argument("--leaderboard", help="write records and pages here instead of leaderboard/")
    r.add_argument("--seed", type=int, default=0, help=seed_help)
    r.add_argument("--label", help="label for the leaderboard (default: the method name)")
    r.add_argument("--quick", action="store_true", help="small per-class subset of the data")
    r.add_argument("--no-save", action="store_true", help="print the result without recording it")
    r.set_defaults(fn=cmd_run)

    e = sub.add_parser("eval", parents=[running],
                       help="run one method on every task into a private leaderboard, beside the committed one")
    e.add_argument("method")
    e.add_argument("--tasks", default="all", help="'all' or a comma-separated list")
    e.add_argument("--leaderboard", help="private leaderboard folder (required)")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="method parameter (repeatable)")
    e.add_argument("--seed", type=int, default=0, help=seed_help)
    e.add_argument("--label", help="label for the pages (default: the method name)")
    e.add_argument("--quick", action="store_true", help="small per-class subsets")
    e.set_defaults(fn=cmd_eval)

    t = sub.add_parser("tune", parents=[running],
                       help="score a method's sweep on a validation carve of train (never the test split)")
    t.add_argument("task")
    t.add_argument("method")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="method parameter; a list sweeps (repeatable)")
    t.add_argument("--condition", action="append", metavar="NAME=VALUE", help="a task condition (repeatable; lists sweep)")
    t.add_argument("--seed", type=int, default=0, help="seed of the carve and of the method (default 0)")
    t.add_argument("--label", help=argparse.SUPPRESS)
    t.add_argument("--fraction", type=float, default=0.2, help="share of train held out for validation (default 0.2)")
    t.add_argument("--quick", action="store_true", help="a small per-class subset of train and the quick overrides")
    t.add_argument("--lr-range", default="1e-6,1", metavar="MIN,MAX",
                   help="learning-rate range test of deep methods, from MIN to MAX (default 1e-6,1)")
    t.add_argument("--lr-steps", type=int, default=100, help="at most this many steps of the range test (default 100)")
    t.add_argument("--no-lr-range", action="store_true", help="skip the learning-rate range test")
    t.add_argument("--out", default=".cache/tune", help="folder for the table and figure (default .cache/tune)")
    t.set_defaults(fn=cmd_tune)

    rr = sub.add_parser("rerun", parents=[running],
                        help="re-run one record from its stored specification and compare its metric")
    rr.add_argument("key", help="the record's run key (a unique prefix is enough)")
    rr.add_argument("--leaderboard", help="leaderboard folder holding the record (default: leaderboard/)")
    rr.add_argument("--save", action="store_true", help="replace the stored record with the new run")
    rr.set_defaults(fn=cmd_rerun)

    lb = sub.add_parser("leaderboard", help="re-render leaderboard pages from records")
    lb.add_argument("--leaderboard", help="leaderboard folder (default: leaderboard/)")
    lb.set_defaults(fn=cmd_leaderboard)

    rc = sub.add_parser("records", help="check the record files, or migrate them to the current schema")
    rc.add_argument("action", choices=["check", "migrate"])
    rc.add_argument("--leaderboard", help="leaderboard folder (default: leaderboard/)")
    rc.set_defaults(fn=cmd_records)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = tuple(argv)
    try:
        if getattr(args, "scheduler", None):
            from cvbench.parallel import use_scheduler

            use_scheduler(args.scheduler)
        return args.fn(args)
    except UserError as exc:
        print(f"cvbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cvbench: interrupted; run the same command again to resume (finished runs are kept)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cvbench list | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
