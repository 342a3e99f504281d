"""The ``vpo`` typer application and the helpers every command shares."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from components.config import ConfigError, RunConfig, load_config

app = typer.Typer(
    name="vpo",
    help="VPO post-training pipeline: prep, train, evaluate, compare; Docker sandbox; Prefect deployments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

SetOption = typer.Option(
    None, "--set", help="Override a config field: --set training.steps=50 (repeatable)."
)


def load_config_or_exit(path: Path | None, overrides: list[str] | None) -> RunConfig:
    """Load and validate a run config; on error print the offending dotted paths and exit 2."""
    try:
        return load_config(path, overrides or [])
    except ConfigError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.callback()
def main() -> None:
    """VPO post-training pipeline."""
