"""The estimator is a plain library: importing it pulls in no pipeline service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("prefect", "mlflow", "docker", "boto3", "botocore", "trl", "verl", "ray", "transformers")


def imported_by(module: str) -> list[str]:
    """Top-level packages of HEAVY that a fresh interpreter has loaded after ``import module``."""
    code = (
        f"import json, sys; import {module}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout)


def test_advantages_import_pulls_in_no_service_or_framework():
    assert imported_by("components.advantages") == []


def test_integrations_package_imports_neither_framework():
    assert imported_by("components.integrations") == []
