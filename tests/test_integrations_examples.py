"""The three ways in (docs/integrations.md) run as documented: ``python examples/<name>.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("plain_vpo.py", ["--steps", "1"], "step 0: E_w max (raw)"),
        ("trl_vpo.py", ["--steps", "1"], "last step: rewards (8, 3, 2) (B, m, k)"),
        ("verl_vpo.py", [], "non_tensor_batch['vpo_rewards'] (12, 3, 2) (B, m, k)"),
    ],
)
def test_example_runs_on_cpu(script, args, expect, tmp_path):
    if script == "verl_vpo.py":
        pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl is not installed (make setup installs it)")
    env = {**os.environ, "VPO_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert expect in out.stdout, out.stdout[-3000:]
