"""Command-line entry point ``vpo``; one module per command group registers its commands."""

from flows.cli import evaluate, pipeline, prep, sandbox, train  # noqa: F401  (register commands)
from flows.cli.app import app

__all__ = ["app"]
