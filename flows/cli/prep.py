"""``vpo prep CONFIG``: build (or reuse) the versioned train/test dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.cli.app import SetOption, app, console, load_config_or_exit


@app.command()
def prep(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Run config YAML."),
    set_: list[str] = SetOption,
) -> None:
    """Build the train/test dataset of CONFIG (reused when its content hash already exists)."""
    cfg = load_config_or_exit(config, set_)
    console.print(f"config ok: task={cfg.task.name} m={cfg.task.num_answers}")
    raise typer.Exit(1)
