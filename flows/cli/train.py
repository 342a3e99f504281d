"""Commands of this group are registered on the shared app below."""

from flows.cli.app import app  # noqa: F401
