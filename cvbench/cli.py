"""The `cvbench` command line: list, data, suite, run, leaderboard."""

from __future__ import annotations

import argparse
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
    from .run import RunOptions

    fields = dict(data_dir=args.data_dir, device=args.device, n_jobs=args.jobs,
                  quick=getattr(args, "quick", False), skip_bad=args.skip_bad,
                  force=getattr(args, "force", False), progress=not args.no_progress)
    return RunOptions(**{**fields, **over})


def cmd_list(args) -> int:
    from .methods import list_methods
    from .tasks import list_tasks

    print(f"Tasks (data root: {_root(args)}):")
    for t in list_tasks():
        found = "data found" if t.has_data(args.data_dir) else f"no data (expected {t.data_path(args.data_dir)})"
        print(f"  {t.name:<12} {t.title}  [{found}]")
    print("\nMethods:")
    for m in list_methods():
        print(f"  {m.name:<18} {m.family:<9} {m.description}")
    return 0


def _root(args):
    from .paths import data_root

    return data_root(args.data_dir)


def cmd_data(args) -> int:
    from .tasks import get_task

    task = get_task(args.task)
    if args.action == "where":
        path = task.data_path(args.data_dir)
        print(f"{task.name}: {path} ({'present' if path.is_dir() else 'missing'})")
        print(f"expected layout: {task.layout}")
        return 0
    if args.action == "check":
        from .data.check import check_splits, format_report

        train, test = task.load_splits(args.data_dir, skip_bad=False)
        report = check_splits([train, test], progress=not args.no_progress)
        print(format_report(report))
        return 0
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


def cmd_suite(args) -> int:
    from .leaderboard import render_all
    from .suite import run_suite

    report = run_suite(args.task, _options(args), only=args.only,
                       path=Path(args.suite) if args.suite else None, dry_run=args.dry_run)
    if args.dry_run:
        print(f"{args.task}: {report.resumed} run(s) already recorded; nothing was run (--dry-run)")
        return 0
    index = render_all()
    print(f"{args.task}: {report.done} run(s) done, {report.resumed} already recorded (resumed), "
          f"{report.skipped_gpu} GPU-only skipped, {len(report.failed)} failed in "
          f"{report.wall_s:.1f} s")
    print(f"leaderboard: {index} (task page: {index.parent / (args.task + '.md')})")
    if report.failed:
        for name, why in report.failed:
            print(f"  failed: {name}: {why}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args) -> int:
    from .leaderboard import render_all
    from .run import RunSpec, run_one
    from .suite import expand_sweep

    params = parse_sets(args.set)
    options = _options(args, save=not args.no_save, force=True)
    for point, swept in expand_sweep(params):
        rec = run_one(args.task, RunSpec(method=args.method, params=point, seed=args.seed,
                                         label=args.label or args.method, sweep=swept), options)
        m = rec["metrics"]
        extra = "".join(f", {k} {m[k]:.4f}" for k in ("qwk", "map5", "top5_accuracy") if k in m)
        print(f"{args.task} {args.method} {point}: accuracy {m['accuracy']:.4f} "
              f"[{m['accuracy_ci'][0]:.4f}, {m['accuracy_ci'][1]:.4f}]{extra}; "
              f"fit {rec['timings']['fit_s']:.2f} s, predict {rec['timings']['predict_s']:.2f} s"
              f"{'' if options.save else ' (not saved)'}")
    if options.save:
        render_all()
    return 0


def cmd_leaderboard(args) -> int:
    from .leaderboard import render_all

    print(f"leaderboard written: {render_all()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvbench", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="data root (default: $CVBENCH_DATA or ~/.cache/cvbench/data)")
    common.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    common.add_argument("--jobs", type=int, default=None, help="parallel jobs for feature extraction")
    common.add_argument("--skip-bad", action="store_true",
                        help="skip undecodable images (counted in the record) instead of stopping")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", parents=[common], help="tasks, methods, and whether data was found").set_defaults(fn=cmd_list)

    d = sub.add_parser("data", parents=[common], help="where the data is, check it, fetch it")
    d.add_argument("action", choices=["where", "check", "fetch", "fixture"])
    d.add_argument("task")
    d.add_argument("dest", nargs="?", help="destination folder (fixture only)")
    d.set_defaults(fn=cmd_data)

    s = sub.add_parser("suite", parents=[common], help="run a task's suite (resumes; skips recorded runs)")
    s.add_argument("task")
    s.add_argument("--only", help="only the runs of this method (or block label)")
    s.add_argument("--quick", action="store_true", help="small subset and the suite's quick overrides")
    s.add_argument("--force", action="store_true", help="re-run runs that already have a record")
    s.add_argument("--suite", help="suite TOML to use instead of suites/<task>.toml")
    s.add_argument("--dry-run", action="store_true",
                   help="list the runs and whether each is already recorded; run nothing")
    s.set_defaults(fn=cmd_suite)

    r = sub.add_parser("run", parents=[common], help="run one method on one task")
    r.add_argument("task")
    r.add_argument("method")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="method parameter (repeatable)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--label", help="label for the leaderboard (default: the method name)")
    r.add_argument("--quick", action="store_true", help="small per-class subset of the data")
    r.add_argument("--no-save", action="store_true", help="print the result without recording it")
    r.set_defaults(fn=cmd_run)

    sub.add_parser("leaderboard", parents=[common], help="re-render leaderboard pages from records").set_defaults(fn=cmd_leaderboard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as exc:
        print(f"cvbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cvbench: interrupted; run the same command again to resume (finished runs are kept)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
