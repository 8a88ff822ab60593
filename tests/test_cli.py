"""The command line's own surface: --version, the options each subcommand takes, what a run
echoes, the method list."""

from __future__ import annotations

import pickle

import pytest

from cvbench import __version__, cli
from cvbench.errors import BadImageError


def test_version_prints_the_package_version_and_the_git_revision(capsys):
    from cvbench.env import git_revision

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"cvbench {__version__} (git revision {git_revision()})\n"


def _options(command: str) -> set[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {s for a in sub._actions for s in a.option_strings}


@pytest.mark.parametrize("command, takes, not_takes", [
    ("list", {"--data-dir"}, {"--device", "--jobs", "--skip-bad", "--no-progress"}),
    ("data", {"--data-dir", "--no-progress"}, {"--device", "--jobs", "--skip-bad"}),
    ("leaderboard", {"--leaderboard"}, {"--data-dir", "--device", "--jobs", "--skip-bad", "--no-progress"}),
    ("records", {"--leaderboard"}, {"--data-dir", "--device", "--jobs", "--skip-bad", "--no-progress"}),
    ("run", {"--data-dir", "--device", "--jobs", "--skip-bad", "--no-progress", "--seed"}, set()),
    ("suite", {"--data-dir", "--device", "--jobs", "--skip-bad", "--no-progress"}, {"--seed"}),
])
def test_each_subcommand_takes_only_the_options_it_uses(command, takes, not_takes):
    options = _options(command)
    assert takes <= options and not (not_takes & options)


def test_every_option_has_help():
    parser = cli.build_parser()
    for sub in next(a for a in parser._actions if a.dest == "command").choices.values():
        for action in sub._actions:
            if action.option_strings and action.help != "==SUPPRESS==":
                assert action.help, f"{sub.prog} {action.option_strings[0]} has no help text"


def test_a_run_echoes_the_parameters_the_command_line_set(capsys):
    assert cli.main(["run", "demo", "tiny-knn", "--set", "k=3", "--set", "size=8", "--no-save",
                     "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("demo tiny-knn {'k': 3, 'size': 8}: accuracy ")


def test_method_descriptions_are_whole_first_paragraphs(capsys):
    assert cli.main(["list"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("cnn-retrieval ")]
    assert line.rstrip().endswith("(top-5 classes = the 5 best-matching classes).")


def test_list_names_a_condition_every_task_has_once_with_its_values(capsys):
    """It printed "condition of <task>: corruption = see the task" six times."""
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "see the task" not in out
    corruption = [ln for ln in out.splitlines() if ln.strip().startswith("corruption ")]
    assert len(corruption) == 1 and "every task, test:" in corruption[0] and "jpeg" in corruption[0]
    (occ,) = [ln for ln in out.splitlines() if ln.strip().startswith("test_occlusion ")]
    assert "hotelid, test:" in occ and occ.endswith("values: none, masks")


def test_a_bad_image_error_crosses_a_process_unchanged():
    """joblib's worker processes pickle the error: its message must not gain a second prefix."""
    exc = BadImageError("/data/a.jpg", "Truncated File Read")
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) and again.path == exc.path and again.reason == exc.reason
    assert str(again).count("cannot decode image") == 1
