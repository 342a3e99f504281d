"""``python -m flows.cli`` == ``vpo``."""

from flows.cli import app

app()
