"""Records -> typed tables: the one aggregation layer. Page code (report.py, leaderboard.py)
only formats what this module hands it (MTEB's model: benchmark objects build the tables, the
leaderboard styles them).

- `Config`: one configuration (data variant, label, method, parameters, conditions) over its
  seeds: mean ± sd of a metric, the pooled interval, its validation score and where that came
  from, its runtime, facts (test n, training N, parameter count, input size, commits, keys).
- `Row`: what a table shows for one (label, data variant, conditions): the configuration
  chosen among the label's configurations (by validation score when they have one; else the
  only one; else by test score, marked), with its rank interval among the rows that share its
  test sets.
- `TaskTable`: every row of a task, the headline of each family (chosen by validation score)
  in the task's default cell, and the statistics behind them.

Statistics (all from the stored per-item predictions, through the metric registry's own
bootstrap rules: by item, by the task's group such as patient, by query):
- pooling over seeds: records that share a test set (the same item ids, not merely the same
  labels) are resampled together; seeds with different test sets (hotelid's hold-out splits)
  are resampled each within its own set, and the seed-mean is taken per resample;
- rank intervals: every pair of rows on the same test sets is compared (McNemar's exact test
  for accuracy on one test set, else a paired bootstrap of the difference with a normal
  approximation); p-values are Holm-adjusted over all pairs of the table, and a row's rank
  interval runs from 1 + the rows significantly better to n - the rows significantly worse.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .methods import FAMILIES, HIDDEN_PARAMS
from .metrics import MetricInput, get_metric, holm, mcnemar_p, resample_indices
from .results import RunRecord

N_BOOT = 2000  # resamples of a pooled interval and of a paired difference
ALPHA = 0.05


# ---------------------------------------------------------------- records as metric inputs
def task_classes(task, records: list[RunRecord]) -> tuple[str, ...]:
    """The task's class names in its class order: task.toml's list, else the order the
    records stored (data.classes), else sorted class names (a task whose classes come from
    its folders sorts them)."""
    if isinstance(task.classes, tuple):
        return task.classes
    for r in records:
        stored = r.data.get("classes")
        if stored:
            return tuple(stored)
    names = sorted({c for r in records for c in (r.data["test"].get("class_counts") or {})})
    return tuple(names)


def metric_input(rec: RunRecord, classes: tuple[str, ...], group_key: str | None) -> MetricInput | None:
    """The record's stored predictions as a MetricInput (top-5 records get scores that keep
    the stored ranking), or None when it stored none."""
    y, p = np.asarray(rec.y_true(), dtype=np.int64), np.asarray(rec.y_pred(), dtype=np.int64)
    if not len(y) or len(p) != len(y):
        return None
    pred = rec.predictions
    k = len(classes)
    if pred.get("scores") is not None:
        scores = np.asarray(pred["scores"], dtype=np.float64)
    else:
        scores = np.full((len(y), k), -np.inf)
        top = rec.top_classes()
        if top is not None:
            top = np.asarray(top, dtype=np.int64)
            for j in range(top.shape[1]):
                scores[np.arange(len(y)), top[:, j]] = float(top.shape[1] - j)
        else:
            scores[np.arange(len(y)), p] = 1.0
    groups = {g: np.asarray(v) for g, v in (pred.get("groups") or {}).items()}
    return MetricInput(y, p, scores, classes, groups, rec.seed, group_key)


def test_set_id(rec: RunRecord) -> str:
    """Names the exact test items of a record (their ids, in order)."""
    ids = rec.item_ids()
    blob = json.dumps(ids if ids is not None else [rec.test_fingerprint, rec.test_n])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pooled_samples(records: list[RunRecord], metric: str, classes: tuple[str, ...],
                   group_key: str | None, n_boot: int = N_BOOT) -> np.ndarray | None:
    """Bootstrap samples of the seed-mean of `metric`: each test set resampled by the
    metric's own rule (items, or whole groups), the same draws for every record on that set
    (seeded by the set, so two configurations on one set are resampled alike)."""
    spec = get_metric(metric)
    by_set: dict[str, list[MetricInput]] = defaultdict(list)
    for r in records:
        inp = metric_input(r, classes, group_key)
        if inp is None:
            return None
        by_set[test_set_id(r)].append(inp)
    out = []
    for tid, inputs in sorted(by_set.items()):
        groups = spec.resampling_groups(inputs[0])
        draws = resample_indices(len(inputs[0].y_true), n_boot, int(tid[:8], 16), groups)
        out.extend(spec.samples(inp, draws) for inp in inputs)
    return np.mean(out, axis=0) if out else None


# ---------------------------------------------------------------- configurations
def config_id(rec: RunRecord) -> str:
    """What a configuration is: method, parameters and conditions, without the seed."""
    params = {k: v for k, v in rec.params.items() if k not in HIDDEN_PARAMS}
    return json.dumps([rec.method, params, rec.conditions], sort_keys=True, default=str)


def validation_score(rec: RunRecord, metric: str) -> tuple[float, str] | None:
    """What the run scored in `metric` on data carved from its training split, and where that
    came from, if it did: the suite's validation selection (the task's carve), else the
    method's own validation carve (a probe's chosen C or k, a deep run's last epoch)."""
    sel = rec.info.get("selection") or {}
    if isinstance(sel.get("score"), (int, float)) and sel.get("metric") == metric:
        return float(sel["score"]), f"validation carve ({sel.get('carve', 'of train')})"
    val = rec.info.get("validation") or {}
    curve, chosen = val.get("curve") or [], None
    for key in ("chosen_C", "chosen_k", "chosen_alpha"):
        if key in val:
            name = key.removeprefix("chosen_")
            chosen = next((c for c in curve if c.get(name) == val[key]), None)
    if chosen is not None:
        for k in (f"val_{metric}", f"oof_{metric}_fitted_thresholds"):
            if isinstance(chosen.get(k), (int, float)):
                return float(chosen[k]), "the method's own validation carve"
    vm = rec.info.get("val_metrics") or {}
    if isinstance(vm.get(metric), (int, float)):
        return float(vm[metric]), "the method's own validation carve"
    ordinal = rec.info.get("ordinal") or {}
    if metric == "qwk" and isinstance(ordinal.get("val_qwk_fitted"), (int, float)):
        return float(ordinal["val_qwk_fitted"]), "the method's own validation carve (thresholds fitted on it)"
    if metric == "accuracy":
        accs = [v for v in (rec.curves.get("val_acc") or []) if v is not None]
        if accs:
            best = rec.info.get("best_epoch")
            at = accs[best] if isinstance(best, int) and best < len(accs) else accs[-1]
            return float(at), "the method's own validation carve (val_fraction)"
    return None


def _candidates(rec: RunRecord) -> list[dict[str, Any]]:
    """The sweep points a record's suite validation selection chose among (empty if none)."""
    sel = rec.info.get("selection") or {}
    points = [p.get("params") for p in sel.get("points") or () if isinstance(p, dict)]
    return [p for p in points if isinstance(p, dict)] if len(points) > 1 else []


def superseded(records: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(current, superseded) records. A record is superseded when a later record of the same
    label, data variant, conditions and quick flag was chosen by a validation selection
    (select = "validation") among points that include the earlier record's configuration and
    did not choose it: a test-split run of a point the selection turned down, left from before
    the block chose on validation (or from an older selection). Tables show only the
    current records; counting a turned-down point's test score would make the headline a
    best-of-test again."""
    selections: dict[tuple, list[tuple[RunRecord, list[dict[str, Any]]]]] = defaultdict(list)
    for r in records:
        if points := _candidates(r):
            selections[_place(r)].append((r, points))
    if not selections:
        return list(records), []
    current, old = [], []
    for r in records:
        newer = [points for s, points in selections.get(_place(r), ())
                 if s.started > r.started and config_id(s) != config_id(r)]
        if any(_matches(r, p) for points in newer for p in points):
            old.append(r)
        else:
            current.append(r)
    return current, old


def _place(r: RunRecord) -> tuple:
    return (r.label, r.variant, json.dumps(r.conditions, sort_keys=True, default=str), r.quick)


def _matches(rec: RunRecord, point: dict[str, Any]) -> bool:
    return all(rec.params.get(k) == v for k, v in point.items())


@dataclass
class Config:
    """One configuration over its seeds (see the module docstring)."""

    records: list[RunRecord]  # one per seed, by seed
    metric: str
    classes: tuple[str, ...]
    group_key: str | None = None
    _samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def first(self) -> RunRecord:
        return self.records[0]

    @property
    def label(self) -> str:
        return self.first.label

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def family(self) -> str:
        return self.first.family

    @property
    def variant(self) -> str:
        return self.first.variant

    @property
    def conditions(self) -> dict[str, Any]:
        return dict(self.first.conditions)

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.first.params.items() if k not in HIDDEN_PARAMS}

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.records]

    def values(self, metric: str | None = None) -> np.ndarray:
        m = metric or self.metric
        return np.array([v for v in (r.metric(m) for r in self.records) if v is not None])

    def mean(self, metric: str | None = None) -> float | None:
        v = self.values(metric)
        return float(v.mean()) if len(v) else None

    def sd(self, metric: str | None = None) -> float | None:
        v = self.values(metric)
        return float(v.std(ddof=1)) if len(v) > 1 else None

    @property
    def samples(self) -> np.ndarray | None:
        """Bootstrap samples of the seed-mean of the primary metric (pooled_samples)."""
        if self._samples is None:
            self._samples = pooled_samples(self.records, self.metric, self.classes, self.group_key)
        return self._samples

    def interval(self, metric: str | None = None) -> tuple[float, float] | None:
        """95% interval of the seed-mean: a single run's stored interval, else the pooled one."""
        m = metric or self.metric
        if len(self.records) == 1:
            return self.first.interval(m)
        samples = self.samples if m == self.metric else pooled_samples(
            self.records, m, self.classes, self.group_key)
        if samples is None:
            return None
        lo, hi = np.quantile(samples, [ALPHA / 2, 1 - ALPHA / 2])
        return float(lo), float(hi)

    @property
    def validation(self) -> tuple[float, str] | None:
        """(seed-mean validation score, its source), when every seed has one."""
        scores = [validation_score(r, self.metric) for r in self.records]
        if not scores or any(s is None for s in scores):
            return None
        return float(np.mean([s[0] for s in scores])), scores[0][1]

    @property
    def test_sets(self) -> tuple[str, ...]:
        return tuple(sorted({test_set_id(r) for r in self.records}))

    @property
    def test_n(self) -> int:
        return self.first.test_n

    @property
    def train_n(self) -> int:
        return self.first.train_n

    def runtime(self) -> Runtime:
        return Runtime.of(self.records)

    @property
    def commits(self) -> list[str]:
        return sorted({r.git for r in self.records if r.git})

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.records]


@dataclass
class Runtime:
    """The fit + predict seconds a row shows: the mean over its cold runs (no stage served by a
    cache), else over its warm runs, said so; runs that did not record their cache use are
    counted as they are ("cache use not recorded")."""

    seconds: float
    n: int
    kind: str  # "cold", "warm" or "unknown"
    cached: tuple[str, ...] = ()  # the stages a warm run found in a cache

    @classmethod
    def of(cls, records: list[RunRecord]) -> Runtime:
        cold = [r for r in records if r.cache_hits == ()]
        warm = [r for r in records if r.cache_hits]
        unknown = [r for r in records if r.cache_hits is None]
        if cold:
            pick, kind = cold, "cold"
        elif warm:
            pick, kind = warm, "warm"
        else:
            pick, kind = unknown, "unknown"
        stages = tuple(sorted({s for r in pick for s in (r.cache_hits or ())}))
        return cls(float(np.mean([r.run_seconds for r in pick])), len(pick), kind, stages)

    def note(self) -> str:
        """'mean of 3', 'warm: embeddings cached', ... (empty for one cold run)."""
        parts = [f"mean of {self.n}"] if self.n > 1 else []
        if self.kind == "warm":
            parts.append("warm: " + ", ".join(self.cached) + " cached")
        return "; ".join(parts)


# ---------------------------------------------------------------- rows and the task table
@dataclass
class Row:
    """One (label, data variant, conditions) as a table shows it: the chosen configuration."""

    config: Config
    candidates: int = 1
    selection: str = "single"  # "single", "validation" or "test"
    rank: tuple[int, int] | None = None  # rank interval among rows on the same test sets
    rank_of: int = 0
    rank_test: str = ""

    def __getattr__(self, name: str):  # a row reads as its configuration
        if name == "config":
            raise AttributeError(name)
        return getattr(self.config, name)

    @property
    def test_selected(self) -> bool:
        return self.selection == "test"

    @property
    def cell(self) -> dict[str, Any]:
        return self.config.conditions


def _mean_or_inf(c: Config) -> float:
    m = c.mean()
    if m is None:
        m = c.mean("accuracy")
    return m if m is not None else float("-inf")


def choose(configs: list[Config]) -> tuple[Config, str, int]:
    """The configuration to show of several: the best validation score when every one has one,
    else the best test score (a test-selected, optimistic choice); "single" when alone, unless
    its block chose it on validation among several points before the test (select =
    "validation": only the chosen point ran on the test split). Returns (config, how, of how
    many)."""
    if len(configs) == 1:
        sel = configs[0].first.info.get("selection") or {}
        points = len(sel.get("points") or ())
        return (configs[0], "validation", points) if points > 1 else (configs[0], "single", 1)
    vals = [c.validation for c in configs]
    if all(v is not None for v in vals):
        return max(zip(configs, vals), key=lambda cv: cv[1][0])[0], "validation", len(configs)
    return max(configs, key=_mean_or_inf), "test", len(configs)


CORRUPTION = "corruption"  # the test-side condition every task has (cvbench.corruptions)


def corruption_of(config: Config | RunRecord) -> str | None:
    """The test-image corruption of a configuration or a record (None on clean images)."""
    return config.conditions.get(CORRUPTION)


def clean_records(records: list[RunRecord]) -> list[RunRecord]:
    """The runs on clean test images: what a task section that groups records itself shows (a
    run under a corruption shares its fit, cell and seed with a clean one; the robustness
    table shows it)."""
    return [r for r in records if corruption_of(r) in (None, "none")]


def clean_id(config: Config) -> str:
    """A configuration's identity without its test-image corruption (its clean twin's)."""
    rec = config.first
    params = {k: v for k, v in rec.params.items() if k not in HIDDEN_PARAMS}
    conditions = {k: v for k, v in rec.conditions.items() if k != CORRUPTION}
    return json.dumps([rec.label, rec.variant, rec.method, params, conditions], sort_keys=True, default=str)


@dataclass
class Robustness:
    """A configuration on clean test images and under each corruption it ran with: the metric,
    the drop from clean and the paired interval of the drop (the same test items, the same
    resamples: a corrupted image keeps its clean image's id)."""

    clean: Config
    corrupted: dict[str, Config]  # "jpeg:3" -> its configuration

    def severities(self, name: str) -> dict[int, Config]:
        out = {}
        for value, c in self.corrupted.items():
            n, _, sev = value.partition(":")
            if n == name:
                out[int(sev)] = c
        return out

    @property
    def names(self) -> list[str]:
        return sorted({v.partition(":")[0] for v in self.corrupted})

    def drop(self, value: str) -> tuple[float, tuple[float, float] | None]:
        c = self.corrupted[value]
        d = (c.mean() or 0.0) - (self.clean.mean() or 0.0)
        sc, s0 = c.samples, self.clean.samples
        if sc is None or s0 is None or c.test_sets != self.clean.test_sets:
            return d, None
        lo, hi = np.quantile(sc - s0, [ALPHA / 2, 1 - ALPHA / 2])
        return d, (float(lo), float(hi))

    def mean_under(self, severity: int = 3) -> tuple[float, tuple[float, float] | None, int] | None:
        """The metric averaged over the corruptions run at `severity`, its interval, how many."""
        picked = [c for v, c in self.corrupted.items() if v.endswith(f":{severity}")]
        if not picked:
            return None
        mean = float(np.mean([c.mean() or 0.0 for c in picked]))
        samples = [c.samples for c in picked]
        if any(x is None for x in samples):
            return mean, None, len(picked)
        lo, hi = np.quantile(np.mean(samples, axis=0), [ALPHA / 2, 1 - ALPHA / 2])
        return mean, (float(lo), float(hi)), len(picked)


def robustness(configs: list[Config]) -> list[Robustness]:
    """Every configuration that ran under a corruption, with its clean twin."""
    clean = {clean_id(c): c for c in configs if corruption_of(c) is None}
    out: dict[str, Robustness] = {}
    for c in configs:
        value = corruption_of(c)
        twin = clean.get(clean_id(c)) if value else None
        if twin is not None:
            out.setdefault(clean_id(c), Robustness(twin, {})).corrupted[value] = c
    return sorted(out.values(), key=lambda r: (r.clean.family, r.clean.label))


@dataclass
class TaskTable:
    task: Any
    configs: list[Config]  # every configuration of the records
    rows: list[Row]  # the shown one per (label, variant, conditions), clean test images
    headlines: list[tuple[Row, int, str]]  # (row, rows it was chosen from, how)
    default_cell: dict[str, list[Any]]
    ranked: str = ""  # which test the rank intervals used
    robust: list[Robustness] = field(default_factory=list)

    def robustness_of(self, row: Row) -> Robustness | None:
        key = clean_id(row.config)
        return next((r for r in self.robust if clean_id(r.clean) == key), None)


def group_configs(task, records: list[RunRecord]) -> list[Config]:
    classes = task_classes(task, records)
    by_config: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        by_config[(r.label, r.variant, config_id(r))].append(r)
    return [Config(sorted(rs, key=lambda r: r.seed), task.primary, classes, task.val_group_key)
            for rs in by_config.values()]


def build_rows(configs: list[Config]) -> list[Row]:
    """One row per (label, data variant, conditions), the shown configuration chosen by
    `choose`; sorted by the primary metric."""
    by_row: dict[tuple[str, str, str], list[Config]] = defaultdict(list)
    for c in configs:
        by_row[(c.label, c.variant, json.dumps(c.conditions, sort_keys=True, default=str))].append(c)
    rows = []
    for configs in by_row.values():
        config, how, n = choose(configs)
        rows.append(Row(config, n, how))
    return sorted(rows, key=lambda r: (-_mean_or_inf(r.config), r.label, r.variant))


def in_cell(conditions: dict[str, Any], cell: dict[str, list[Any]]) -> int | None:
    """The preference rank of `conditions` in a default cell {condition: [values in order of
    preference]} ("" = the condition absent), or None when it is outside the cell."""
    rank = 0
    for name, allowed in cell.items():
        value = conditions.get(name, "")
        if value not in allowed:
            return None
        rank += allowed.index(value)
    return rank


def headlines(rows: list[Row], cell: dict[str, list[Any]]) -> list[tuple[Row, int, str]]:
    """The headline row of each family and data variant: among its rows in the task's default
    cell (the most preferred cell it has), the best validation score; the only row when there
    is one; else the best test score (marked). Returns (row, candidates, how)."""
    by_family: dict[tuple[str, str], list[tuple[int, Row]]] = defaultdict(list)
    for r in rows:
        rank = in_cell(r.cell, cell)
        if rank is not None:
            by_family[(r.family, r.variant)].append((rank, r))
    out = []
    order = {f: i for i, f in enumerate(FAMILIES)}
    for _key, ranked in sorted(by_family.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        best_cell = min(rank for rank, _ in ranked)
        cands = [r for rank, r in ranked if rank == best_cell]
        scored = [(r, r.validation) for r in cands if r.validation is not None]
        if len(cands) == 1:
            out.append((cands[0], 1, "single"))
        elif scored:
            out.append((max(scored, key=lambda rv: rv[1][0])[0], len(scored), "validation"))
        else:
            out.append((max(cands, key=lambda r: _mean_or_inf(r.config)), len(cands), "test"))
    return out


def paired_p(a: Config, b: Config) -> float | None:
    """p-value that two configurations on the same test sets score the same (module doc)."""
    if a.test_sets != b.test_sets:
        return None
    if a.metric == "accuracy" and len(a.records) == len(b.records) == 1:
        ya, yb = np.asarray(a.first.y_true()), np.asarray(b.first.y_true())
        if len(ya) and len(ya) == len(yb):
            return mcnemar_p(np.asarray(a.first.y_pred()) == ya, np.asarray(b.first.y_pred()) == yb)
    sa, sb = a.samples, b.samples
    if sa is None or sb is None:
        return None
    from scipy.stats import norm

    d, sd = (a.mean() or 0.0) - (b.mean() or 0.0), float(np.std(sa - sb))
    if sd == 0:
        return 1.0 if d == 0 else 0.0
    return float(2 * norm.sf(abs(d) / sd))


def rank_intervals(rows: list[Row]) -> str:
    """Set each row's rank interval among the rows on its test sets (module doc); the name of
    the test used."""
    by_sets: dict[tuple[str, ...], list[Row]] = defaultdict(list)
    for r in rows:
        if r.config.mean() is not None:
            by_sets[r.config.test_sets].append(r)
    tests = set()
    for group in by_sets.values():
        n = len(group)
        if n == 1:
            group[0].rank, group[0].rank_of = (1, 1), 1
            continue
        pairs, ps = [], []
        for i in range(n):
            for j in range(i + 1, n):
                p = paired_p(group[i].config, group[j].config)
                if p is not None:
                    pairs.append((i, j))
                    ps.append(p)
                    single = group[i].metric == "accuracy" and len(group[i].records) == len(group[j].records) == 1
                    tests.add("McNemar's exact test" if single else "a paired bootstrap")
        better = np.zeros(n, dtype=int)
        worse = np.zeros(n, dtype=int)
        for (i, j), p in zip(pairs, holm(ps) if ps else []):
            if p < ALPHA:
                hi, lo = (i, j) if _mean_or_inf(group[i].config) > _mean_or_inf(group[j].config) else (j, i)
                better[lo] += 1
                worse[hi] += 1
        for k, r in enumerate(group):
            r.rank, r.rank_of = (1 + better[k], n - worse[k]), n
    return " and ".join(sorted(tests))


def task_table(task, records: list[RunRecord]) -> TaskTable:
    """Every row of a task's (full, not quick) records, ranked, and the family headlines."""
    configs = group_configs(task, records)
    rows = build_rows([c for c in configs if corruption_of(c) is None])  # clean test images
    ranked = rank_intervals(rows)
    cell = {k: list(v) if isinstance(v, list) else [v] for k, v in (task.default_cell or {}).items()}
    return TaskTable(task, configs, rows, headlines(rows, cell), cell, ranked, robustness(configs))


def cell_name(conditions: dict[str, Any]) -> str:
    """'train_occlusion=none, test_occlusion=none' ('' for no condition)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(conditions.items()))


# ---------------------------------------------------------------- results.csv
CSV_COLUMNS = ("task", "variant", "method", "label", "family", "conditions", "params", "seeds",
               "test_n", "train_n", "metric", "mean", "sd", "ci_low", "ci_high", "selection",
               "validation_score", "rank_low", "rank_high", "rank_of", "runtime_s", "runtime_kind",
               "runtime_runs", "images_per_s", "n_params", "input_size", "skipped_images",
               "commits", "record_keys")


def csv_rows(table: TaskTable) -> list[dict[str, Any]]:
    """One row per configuration of every record group (timm's results files): the shown
    rows and every other configuration of a label alike, with its selection."""
    shown = {id(r.config): r for r in table.rows}
    return [csv_row(table.task, c, shown.get(id(c))) for c in table.configs]


def csv_row(task, config: Config, row: Row | None) -> dict[str, Any]:
    ci = config.interval()
    rt = config.runtime()
    val = config.validation
    rec = config.first
    ips = rec.info.get("embeddings", {}).get("images_per_s") if isinstance(rec.info.get("embeddings"), dict) else None
    ips = ips or rec.info.get("train_images_per_s")
    return {
        "task": task.name, "variant": config.variant, "method": config.method, "label": config.label,
        "family": config.family, "conditions": json.dumps(config.conditions, sort_keys=True),
        "params": json.dumps(config.params, sort_keys=True, default=str),
        "seeds": " ".join(map(str, config.seeds)), "test_n": config.test_n, "train_n": config.train_n,
        "metric": task.primary, "mean": _r(config.mean()), "sd": _r(config.sd()),
        "ci_low": _r(ci[0]) if ci else "", "ci_high": _r(ci[1]) if ci else "",
        "selection": row.selection if row else "not shown",
        "validation_score": _r(val[0]) if val else "",
        "rank_low": row.rank[0] if row and row.rank else "", "rank_high": row.rank[1] if row and row.rank else "",
        "rank_of": row.rank_of if row and row.rank else "",
        "runtime_s": round(rt.seconds, 3), "runtime_kind": rt.kind, "runtime_runs": rt.n,
        "images_per_s": ips if isinstance(ips, (int, float)) else "",
        "n_params": rec.info.get("n_params", ""), "input_size": rec.info.get("image_size") or rec.params.get("size") or "",
        "skipped_images": sum(int(r.data.get("bad_images_skipped", 0)) for r in config.records),
        "commits": " ".join(config.commits), "record_keys": " ".join(config.keys),
    }


def _r(x: float | None) -> Any:
    return round(float(x), 6) if x is not None else ""
