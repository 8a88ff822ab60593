"""Project-root conftest: loads the speed guard, so `pytest --benchmark` works from here
(tests/benchmarks/plugin.py; README "Speed regressions"), and pytester for its own tests."""

pytest_plugins = ["tests.benchmarks.plugin", "pytester"]
