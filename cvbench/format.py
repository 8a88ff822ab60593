"""Formatting for pages: numbers, seconds, intervals, markdown tables, parameter lists, budgets.
Strings only: nothing here computes a statistic (cvbench.aggregate does)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from .methods import HIDDEN_PARAMS
from .results import RunRecord

SWEEP_MARK = "†"


def num(x: float, digits: int = 3) -> str:
    """A number to `digits` decimals, never "-0.000"."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"


def fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_ci(rec: RunRecord, name: str = "accuracy", digits: int = 4) -> str:
    value = fmt(rec.metric(name), digits)
    ci = rec.interval(name)
    return f"{value} [{num(ci[0])}, {num(ci[1])}]" if ci else value


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(c: Any) -> str:
        return " ".join(str(c).split("\n")).replace("|", "\\|")

    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "run"


def fmt_budget(rec: RunRecord) -> str:
    b = rec.budget or {}
    parts = []
    if b.get("protocol"):
        parts.append(str(b["protocol"]))
    if b.get("epochs_run") is not None and b.get("epochs") is not None:
        if b["epochs_run"] != b["epochs"] or "epoch" not in str(b.get("protocol", "")):
            parts.append(f"{b['epochs_run']}/{b['epochs']} ep")
    elif b.get("epochs") is not None and "epoch" not in str(b.get("protocol", "")):
        parts.append(f"{b['epochs']} ep")
    if b.get("time_budget_s"):
        cpu = " CPU" if b.get("budget_clock") == "process" else ""
        parts.append(f"≤{fmt_seconds(float(b['time_budget_s']))}{cpu}")
    if b.get("stopped_early"):
        parts.append("stopped early")
    if rec.quick:
        parts.append("quick")
    return ", ".join(parts) or ("quick" if rec.quick else "full")


def sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def values_of(rec: RunRecord) -> dict[str, Any]:
    """Parameters and conditions of a run in one mapping (what a sweep varies)."""
    return {**rec.params, **rec.conditions}


def varying_params(records: list[RunRecord]) -> list[str]:
    """Parameter and condition names whose value differs between the given records."""
    keys: dict[str, set] = defaultdict(set)
    for r in records:
        for k, v in values_of(r).items():
            if k not in HIDDEN_PARAMS:
                keys[k].add(repr(v))
    return sorted(k for k, vals in keys.items() if len(vals) > 1)


def param_str(rec: RunRecord, names: list[str]) -> str:
    values = values_of(rec)
    return ", ".join(f"{k}={values.get(k)}" for k in names if k in values)


def one_line(rec: RunRecord) -> str:
    """Method name, the parameters that differ from its defaults, conditions, seed, budget."""
    defaults = rec.defaults
    names = [k for k, v in rec.params.items()
             if k not in HIDDEN_PARAMS and (k not in defaults or defaults[k] != v)]
    names += sorted(rec.conditions)
    return (f"`{rec.method}` " + (param_str(rec, names) or "defaults")
            + f"; seed {rec.seed}; {fmt_budget(rec)}")




def details(title: str, text: str) -> str:
    """A collapsed block: the detail below the answer."""
    if not text.strip():
        return ""
    return f"<details><summary>{title}</summary>\n\n{text.strip()}\n\n</details>\n"
