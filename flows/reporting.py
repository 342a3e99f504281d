"""Prefect artifacts that summarise a stage or a pipeline run in the Prefect UI.

Each stage publishes a markdown summary, a table of headline metrics and a
link to its MLflow run (a URL for a tracking server; for a local store, the
``mlflow ui`` command that opens it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from prefect import runtime
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from components import tracking

HEADLINE_PREFIXES = ("eval/best_at_", "eval/pass_at_", "eval/diversity", "eval/union_coverage",
                     "eval/pareto/", "eval/valid_fraction", "reward/fixed/", "train/loss", "train/kl")
HEADLINE_KS = {1, 5, 10, 30}
"""best@k / pass@k rows are kept only for these k (and the largest k present)."""
_AT_K = re.compile(r"_at_(\d+)")


def artifact_key(text: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


def headline(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics worth a table row, in a stable order (k-curves thinned to a few k)."""
    ks = [int(m.group(1)) for k in metrics if (m := _AT_K.search(k))]
    keep_ks = HEADLINE_KS | ({max(ks)} if ks else set())
    rows = {}
    for key in sorted(metrics):
        match = _AT_K.search(key)
        if key.startswith(HEADLINE_PREFIXES) and (match is None or int(match.group(1)) in keep_ks):
            rows[key] = float(metrics[key])
    return rows


def publish_summary(
    *, key: str, title: str, facts: Mapping[str, object], metrics: Mapping[str, float], mlflow_link: str
) -> None:
    """Markdown summary + metrics table + MLflow link for one stage or pipeline run."""
    key = artifact_key(key)
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | `{value}` |" for name, value in facts.items()]
    lines += ["", f"MLflow: {mlflow_link}"]
    create_markdown_artifact("\n".join(lines), key=f"{key}-summary", description=title)
    rows = [{"metric": k, "value": round(v, 6)} for k, v in headline(metrics).items()]
    if rows:
        create_table_artifact(rows, key=f"{key}-metrics", description=f"{title}: headline metrics")
    if mlflow_link.startswith(("http://", "https://")):
        create_link_artifact(mlflow_link, link_text="MLflow run", key=f"{key}-mlflow")


def link_to_prefect(run_id: str) -> None:
    """Tag an MLflow run with the Prefect flow run (and deployment) that produced it."""
    tags = {"prefect.flow_run_id": str(runtime.flow_run.id or ""),
            "prefect.flow_run_name": str(runtime.flow_run.name or ""),
            "prefect.deployment": str(runtime.deployment.name or "")}
    tracking.set_tags(run_id, {k: v for k, v in tags.items() if v})
