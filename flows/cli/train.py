"""``vpo train CONFIG``: prepare (or reuse) the dataset, then warm start + RL, with progress bars.

A local stage run: checkpoints go to ``{storage.root}/{name}/checkpoints``; it
resumes from the latest one unless ``--fresh``. Metrics are printed, not
tracked: ``vpo run`` is the tracked (MLflow + Prefect) pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from flows.cli.app import SetOption, app, console, load_config_or_exit

SHOWN_METRICS = ("reward/fixed/mean", "train/loss", "train/kl", "perf/tokens_per_s")


class RichTrainProgress:
    """A :class:`components.training.TrainCallback` that drives two rich progress bars."""

    def __init__(self, bar: Progress, warmup_steps: int, rl_steps: int):
        self.bar = bar
        self.warm = bar.add_task("warm start", total=warmup_steps, info="", visible=warmup_steps > 0)
        self.rl = bar.add_task("RL", total=rl_steps, info="")
        self.checkpoints: list[tuple[int, str]] = []

    def on_step(self, step: int, metrics: dict[str, float], samples: list[dict] | None) -> None:
        if "warmstart/loss" in metrics:
            self.bar.update(self.warm, completed=step, info=f"loss {metrics['warmstart/loss']:.3f}")
            return
        info = "  ".join(f"{k.split('/')[-1] if k != 'reward/fixed/mean' else 'reward'} {metrics[k]:.4g}"
                         for k in SHOWN_METRICS if k in metrics)
        self.bar.update(self.rl, completed=step, info=info)

    def on_checkpoint(self, step: int, uri: str) -> None:
        self.checkpoints.append((step, uri))
        self.bar.console.print(f"checkpoint {'warm start' if step == 0 else f'step {step}'}: {uri}", highlight=False)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Run config YAML.")],
    set_: list[str] = SetOption,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore existing checkpoints of this run name.")] = False,
) -> None:
    """Warm-start and RL-train the policy of CONFIG (resumes from the latest checkpoint)."""
    cfg = load_config_or_exit(config, set_)
    from components.datasets import prepare_dataset
    from components.training import train as train_policy

    columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console) as bar:
        prep = bar.add_task("dataset", total=None, info=cfg.task.name)
        manifest = prepare_dataset(cfg, progress=lambda done, total: bar.update(prep, completed=done, total=total))
        bar.update(prep, completed=1, total=1, info=f"{manifest.counts} ({'reused' if manifest.reused else 'built'})")
        progress = RichTrainProgress(bar, cfg.training.warmup_steps, cfg.training.steps)
        result = train_policy(cfg, dataset=manifest, callback=progress, resume=not fresh)

    table = Table(title=f"trained {cfg.name} ({cfg.estimator.name}, {result.steps_done} RL steps)", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("checkpoint", result.checkpoint_uri)
    if result.warmstart_uri:
        table.add_row("warm start", result.warmstart_uri)
    for key in sorted(result.final_metrics):
        if key.startswith(("reward/", "train/")):
            table.add_row(key, f"{result.final_metrics[key]:.4f}")
    console.print(table)
