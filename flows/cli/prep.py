"""``vpo prep CONFIG``: build (or reuse) the versioned train/test dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.cli.app import SetOption, app, console, load_config_or_exit


@app.command()
def prep(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Run config YAML."),
    set_: list[str] = SetOption,
) -> None:
    """Build the train/test dataset of CONFIG (reused when its content hash already exists)."""
    from components.datasets import DatasetError, prepare_dataset

    cfg = load_config_or_exit(config, set_)
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    columns = (TextColumn(f"prep {cfg.task.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            job = bar.add_task("rows", total=None)
            manifest = prepare_dataset(cfg, progress=lambda done, total: bar.update(job, completed=done, total=total))
    except DatasetError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None

    table = Table(title="dataset (reused, nothing rebuilt)" if manifest.reused else "dataset (built)",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("uri", manifest.uri)
    table.add_row("content hash", manifest.content_hash)
    table.add_row("task", manifest.task)
    table.add_row("objectives", f"k={len(manifest.objective_names)}: {', '.join(manifest.objective_names)}")
    table.add_row("counts", ", ".join(f"{k}={v}" for k, v in manifest.counts.items()))
    table.add_row("generator", f"{manifest.generator_version} (seed {manifest.seed})")
    if manifest.bad_rows:
        table.add_row("bad rows", ", ".join(map(str, manifest.bad_rows)))
    table.add_row("created", manifest.created_at)
    console.print(table)
