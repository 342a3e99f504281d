"""Run configuration: YAML + overrides, and errors that name the offending field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.config import ConfigError, RunConfig, apply_overrides, flatten_config, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_valid():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.estimator.name == "vpo" and cfg.task.num_answers >= 2


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_config(path)


def test_overrides_parse_yaml_scalars(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("training:\n  steps: 5\n")
    cfg = load_config(f, ["training.steps=7", "estimator.sampler=sobol", "training.dual_clip=null"])
    assert cfg.training.steps == 7
    assert cfg.estimator.sampler == "sobol"
    assert cfg.training.dual_clip is None


def test_switching_estimator_is_one_field():
    cfg = load_config(None, ["estimator.name=grpo", "task.num_answers=1"])
    assert cfg.estimator.name == "grpo"


@pytest.mark.parametrize(
    "overrides, path",
    [
        (["training.lr=-1"], "training.lr"),
        (["training.stepz=3"], "training.stepz"),
        (["estimator.name=ppo"], "estimator.name"),
        (["sandbox.backend=vm"], "sandbox.backend"),
        (["model.tiny.hidden_size=abc"], "model.tiny.hidden_size"),
    ],
)
def test_bad_field_names_its_dotted_path(overrides, path):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert path in str(err.value)


def test_inconsistent_method_and_answers_is_rejected():
    with pytest.raises(ConfigError, match="num_answers"):
        load_config(None, ["estimator.name=grpo", "task.num_answers=3"])


def test_malformed_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="dotted.path=value"):
        apply_overrides({}, ["training.steps"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"training": 3}, ["training.steps=1"])


def test_flatten_config_uses_dotted_keys():
    flat = flatten_config(load_config())
    assert flat["training.lr"] == pytest.approx(1e-6)
    assert "model.tiny.hidden_size" in flat


def _vpo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_help_lists_the_commands():
    out = _vpo("--help")
    assert out.returncode == 0, out.stderr
    for command in ("demo", "run", "prep", "train", "evaluate", "compare", "serve", "sandbox"):
        assert command in out.stdout


def test_cli_bad_config_prints_the_offending_path(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("training:\n  lr: -3\n")
    out = _vpo("prep", str(f))
    assert out.returncode == 2
    assert "training.lr" in out.stderr
