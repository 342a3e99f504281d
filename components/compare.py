"""Methods side by side: mean ± standard error over seeds, tables and curve plots.

Input is a list of :class:`RunRecord` (params + final metrics of finished runs,
read from MLflow by ``components.tracking``); runs are grouped by
(``task.name``, ``estimator.name``) and each metric is summarised over the
group's runs (one per seed) as mean ± standard error (sample std / sqrt(n);
0 for a single run). Output: a rich table for the terminal, ``comparison.md``,
``comparison.csv`` and, per task, PNG plots of best@k and pass@k curves (mean
with a ± standard-error band).
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

METHOD_PARAM = "estimator.name"
TASK_PARAM = "task.name"
SEED_PARAM = "training.seed"

HEADLINE_METRICS: tuple[tuple[str, str], ...] = (
    ("eval/best_at_1", "best@1"),
    ("eval/best_at_10", "best@10"),
    ("eval/best_at_30", "best@30"),
    ("eval/pass_at_1/candidate", "pass@1"),
    ("eval/pass_at_30/candidate", "pass@30"),
    ("eval/pass_at_10/generation", "pass@10 gen"),
    ("eval/diversity", "diversity"),
    ("eval/union_coverage", "coverage"),
    ("eval/pareto/fraction", "pareto frac"),
    ("eval/valid_fraction", "valid"),
    ("train/climb_se", "RL climb (s.e.)"),
    ("probe/diversity_change", "probe div. Δ"),
)
"""(MLflow metric key, column label) of the comparison table, in order (the last two are
:func:`derived_metrics` of the training run's histories)."""


@dataclass(frozen=True)
class RunRecord:
    """One finished run: its id, flattened config params and latest metric values."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    name: str = ""


@dataclass(frozen=True)
class Summary:
    """mean ± standard error of one metric over n runs."""

    mean: float
    stderr: float
    n: int

    def __str__(self) -> str:
        """``mean ± s.e.``; the mean alone for a single run (no spread to report)."""
        return f"{self.mean:.3f}" if self.n == 1 else f"{self.mean:.3f} ± {self.stderr:.3f}"


@dataclass
class MethodGroup:
    """The runs of one (task, method) pair."""

    task: str
    method: str
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def seeds(self) -> list[str]:
        return sorted(r.params.get(SEED_PARAM, "?") for r in self.runs)

    def summary(self, key: str) -> Summary | None:
        values = [r.metrics[key] for r in self.runs if key in r.metrics]
        return summarise(values) if values else None

    def curve(self, prefix: str, suffix: str = "") -> tuple[list[float], list[float]]:
        """Mean and standard error of ``{prefix}{k}{suffix}`` for k = 1.. while every run has it."""
        means, errors = [], []
        k = 1
        while True:
            key = f"{prefix}{k}{suffix}"
            s = self.summary(key)
            if s is None or s.n < len(self.runs):
                return means, errors
            means.append(s.mean)
            errors.append(s.stderr)
            k += 1


def summarise(values: Sequence[float]) -> Summary:
    """Mean and standard error (sample std / sqrt(n); 0 when n = 1)."""
    n = len(values)
    if n == 0:
        raise ValueError("summarise needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return Summary(mean, 0.0, 1)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Summary(mean, math.sqrt(variance / n), n)


def paired_difference(a: MethodGroup, b: MethodGroup, key: str) -> Summary | None:
    """mean ± s.e. over seeds of ``a[key] - b[key]``, runs paired by ``training.seed`` (seeds
    present in both groups); None when no seed has the metric in both."""
    by_seed = {r.params.get(SEED_PARAM): r.metrics[key] for r in b.runs if key in r.metrics}
    diffs = [r.metrics[key] - by_seed[seed] for r in a.runs
             if key in r.metrics and (seed := r.params.get(SEED_PARAM)) in by_seed]
    return summarise(diffs) if diffs else None


def quarter_climb(values: Sequence[float]) -> Summary:
    """How far a training curve rose: mean of the last quarter of ``values`` minus the mean of
    the first quarter, with the standard error of that difference (Welch: sqrt(s1²/n1 + s2²/n2)),
    ``n`` = steps per quarter. Needs at least 8 values (two per quarter)."""
    n = len(values) // 4
    if n < 2:
        raise ValueError(f"quarter_climb needs at least 8 values, got {len(values)}")
    first, last = summarise(values[:n]), summarise(values[-n:])
    return Summary(last.mean - first.mean, math.hypot(first.stderr, last.stderr), n)


PAIRED_METRICS: tuple[tuple[str, str], ...] = (
    ("eval/best_at_1", "best@1"),
    ("eval/best_at_10", "best@10"),
    ("eval/best_at_30", "best@30"),
    ("eval/best_at_30_minus_1", "best@30 − best@1"),
    ("eval/diversity", "diversity"),
    ("probe/diversity_change", "probe diversity Δ"),
)
"""Rows of the paired table (:func:`paired_tables`); derived keys come from :func:`derived_metrics`."""


def climbed_objective(method: str) -> str:
    """The training metric an estimator climbs: VPO's own-set E_w[max]; the fixed scalar otherwise
    (Multi-RLVR's sum over answers is m times the logged per-answer mean: the same curve, scaled)."""
    return "vpo/own_set_expected_max" if method == "vpo" else "reward/fixed/mean"


def derived_metrics(metrics: dict[str, float], histories: dict[str, list[float]]) -> dict[str, float]:
    """Per-run numbers the paired analysis needs beyond the final metrics.

    ``eval/best_at_30_minus_1`` (how much 29 extra samples add); from the training run's metric
    histories (values in step order): ``train/climb_se`` = :func:`quarter_climb` of the objective
    the estimator climbs (:func:`climbed_objective`, passed as ``histories["objective"]``) divided by
    its s.e., and ``probe/diversity_change`` = last minus first
    probe.
    """
    out: dict[str, float] = {}
    if "eval/best_at_30" in metrics and "eval/best_at_1" in metrics:
        out["eval/best_at_30_minus_1"] = metrics["eval/best_at_30"] - metrics["eval/best_at_1"]
    objective = histories.get("objective", [])
    if len(objective) >= 8:
        climb = quarter_climb(objective)
        out["train/climb"] = climb.mean
        out["train/climb_se"] = climb.mean / climb.stderr if climb.stderr > 0 else math.inf
    probe = histories.get("probe/diversity", [])
    if len(probe) >= 2:
        out["probe/diversity_change"] = probe[-1] - probe[0]
    return out


def paired_tables(groups: Sequence[MethodGroup], title: str) -> list[Table]:
    """Every pair of methods of a task, paired by seed: mean ± s.e. of the per-seed differences."""
    by_task: dict[str, list[MethodGroup]] = defaultdict(list)
    for g in groups:
        by_task[g.task].append(g)
    tables = []
    for task, task_groups in sorted(by_task.items()):
        ordered = sorted(task_groups, key=lambda g: (g.method != "vpo", g.method))  # "vpo − x" reads best
        pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
        if not pairs:
            continue
        table = Table(title=f"{title}: {task}")
        table.add_column("metric")
        for a, b in pairs:
            table.add_column(f"{a.method} − {b.method}", justify="right")
        for key, label in PAIRED_METRICS:
            cells = [paired_difference(a, b, key) for a, b in pairs]
            if any(c is not None for c in cells):
                table.add_row(label, *(f"{c} (n={c.n})" if c is not None else "—" for c in cells))
        tables.append(table)
    return tables


def group_runs(runs: Sequence[RunRecord], required_metric: str = "eval/best_at_1") -> list[MethodGroup]:
    """Group evaluated runs by (task, method); runs without ``required_metric`` are skipped."""
    groups: dict[tuple[str, str], MethodGroup] = {}
    for run in runs:
        if required_metric not in run.metrics or METHOD_PARAM not in run.params:
            continue
        key = (run.params.get(TASK_PARAM, "?"), run.params[METHOD_PARAM])
        groups.setdefault(key, MethodGroup(*key)).runs.append(run)
    return [groups[key] for key in sorted(groups)]


def _columns(groups: Sequence[MethodGroup]) -> list[tuple[str, str]]:
    """Headline metrics some run has and some run has non-zero (see :func:`all_zero_metrics`)."""
    zero = set(all_zero_metrics(groups))
    present = {key for g in groups for r in g.runs for key in r.metrics}
    return [(key, label) for key, label in HEADLINE_METRICS if key in present and label not in zero]


def all_zero_metrics(groups: Sequence[MethodGroup]) -> list[str]:
    """Labels of headline metrics that are exactly 0 in every run, left out of the tables: on the
    synthetic tasks no single answer passes every test by construction, so pass@k is 0 for all."""
    values: dict[str, list[float]] = defaultdict(list)
    for g in groups:
        for r in g.runs:
            for key, label in HEADLINE_METRICS:
                if key in r.metrics:
                    values[label].append(r.metrics[key])
    return [label for _, label in HEADLINE_METRICS if values.get(label) and not any(values[label])]


def rich_tables(groups: Sequence[MethodGroup], title: str) -> list[Table]:
    """The comparison for a terminal: one table per task, metrics as rows, methods as columns."""
    by_task: dict[str, list[MethodGroup]] = defaultdict(list)
    for g in groups:
        by_task[g.task].append(g)
    tables = []
    for task, task_groups in sorted(by_task.items()):
        table = Table(title=f"{title}: {task}")
        table.add_column("metric")
        for g in task_groups:
            table.add_column(f"{g.method} (n={len(g.runs)})", justify="right")
        for key, label in _columns(task_groups):
            table.add_row(label, *(str(g.summary(key) or "—") for g in task_groups))
        zero = all_zero_metrics(task_groups)
        if zero:
            table.caption = f"0 in every run, left out: {', '.join(zero)}"
        tables.append(table)
    return tables


def markdown_table(groups: Sequence[MethodGroup]) -> str:
    """The comparison as a GitHub markdown table (mean ± standard error)."""
    columns = _columns(groups)
    header = ["task", "method", "seeds", *(label for _, label in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        cells = [str(g.summary(key) or "—") for key, _ in columns]
        lines.append("| " + " | ".join([g.task, g.method, str(len(g.runs)), *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, groups: Sequence[MethodGroup]) -> Path:
    """Long-format CSV: task, method, metric, mean, stderr, n (every metric of every group)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "method", "metric", "mean", "stderr", "n"])
        for g in groups:
            keys = sorted({key for r in g.runs for key in r.metrics}, key=_natural_key)
            for key in keys:
                s = g.summary(key)
                if s is not None:
                    writer.writerow([g.task, g.method, key, f"{s.mean:.6g}", f"{s.stderr:.6g}", s.n])
    return path


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def plot_curves(
    path: Path, groups: Sequence[MethodGroup], *, prefix: str, suffix: str = "", ylabel: str, title: str
) -> Path | None:
    """Mean curve ± standard-error band per method; None when no group has the curve."""
    from components.evaluation import pyplot, save_figure, style_k_axes

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    drawn = False
    for g in groups:
        means, errors = g.curve(prefix, suffix)
        if not means:
            continue
        ks = range(1, len(means) + 1)
        ax.plot(ks, means, marker=".", label=f"{g.method} (n={len(g.runs)})")
        ax.fill_between(ks, [m - e for m, e in zip(means, errors, strict=True)],
                        [m + e for m, e in zip(means, errors, strict=True)], alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    style_k_axes(ax, ylabel=ylabel, title=title)
    return save_figure(fig, path)


@dataclass(frozen=True)
class ComparisonFiles:
    markdown: Path
    csv: Path
    plots: dict[str, Path]


def write_comparison(groups: Sequence[MethodGroup], out_dir: Path, title: str) -> ComparisonFiles:
    """Write comparison.md, comparison.csv and per-task curve plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    by_task: dict[str, list[MethodGroup]] = defaultdict(list)
    for g in groups:
        by_task[g.task].append(g)
    sections = [f"# {title}\n", "mean ± standard error over seeds\n", markdown_table(groups)]
    for task, task_groups in sorted(by_task.items()):
        for name, prefix, suffix, ylabel in (
            ("best_at_k", "eval/best_at_", "", "best@k (fixed scalar)"),
            ("pass_at_k", "eval/pass_at_", "/candidate", "pass@k (per candidate)"),
        ):
            path = plot_curves(out_dir / f"{name}_{task}.png", task_groups, prefix=prefix, suffix=suffix,
                               ylabel=ylabel, title=f"{task}: {ylabel}")
            if path is not None:
                plots[f"{name}_{task}"] = path
                sections.append(f"\n![{name} {task}]({path.name})\n")
    markdown = out_dir / "comparison.md"
    markdown.write_text("\n".join(sections))
    return ComparisonFiles(markdown=markdown, csv=write_csv(out_dir / "comparison.csv", groups), plots=plots)
