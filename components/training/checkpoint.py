"""Checkpoints in the artifact store: model + tokenizer + optimizer + RNG + step + config.

Layout under ``{storage.root}/{run name}/checkpoints/``::

    warmstart/            the supervised warm-start model (the pre-RL baseline)
    step-000010/          after RL step 10
        config.json  model.safetensors  generation_config.json   (save_pretrained)
        tokenizer.json  tokenizer_config.json                     (save_pretrained)
        optimizer.pt  rng.pt  trainer_state.json  run_config.json
        COMPLETE              written last: a checkpoint without it does not exist

A checkpoint is first written to a local temp directory, then uploaded file by
file (each upload atomic), then ``COMPLETE`` is written. A crash mid-upload
leaves a directory without the marker, which :func:`latest_checkpoint` ignores
and the next save of that step overwrites. "Latest" = highest step with a marker.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.config import ModelConfig, RunConfig
from components.storage import ArtifactStore, open_store

COMPLETE = "COMPLETE"
WARMSTART = "warmstart"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass
class CheckpointState:
    """Everything in a checkpoint besides the model and tokenizer."""

    step: int
    """RL steps done (0 for the warm-start checkpoint)."""
    config: dict[str, Any]
    """The RunConfig the checkpoint was trained with (JSON)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Metrics of the last step before saving."""
    optimizer: dict[str, Any] | None = None
    """``optimizer.state_dict()``, or None (warm start)."""
    rng: dict[str, Any] | None = None
    """Global RNG states (torch, numpy, python, CUDA); see :func:`capture_rng`."""


def checkpoint_store(cfg: RunConfig) -> ArtifactStore:
    """The store rooted at ``{storage.root}/{name}/checkpoints``."""
    return open_store(cfg.storage.root).child(f"{cfg.name}/checkpoints")


def step_dir(step: int) -> str:
    return f"step-{step:06d}"


def capture_rng() -> dict[str, Any]:
    """Global RNG states as plain tensors/lists (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    store: ArtifactStore,
    name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    state: CheckpointState,
    model_state: dict[str, torch.Tensor] | None = None,
) -> str:
    """Write checkpoint ``name`` (``step-XXXXXX`` or ``warmstart``) atomically; returns its URI.

    ``model_state`` replaces ``model.state_dict()`` (the gathered weights of a sharded model).
    """
    with tempfile.TemporaryDirectory(prefix="vpo-ckpt-") as tmp:
        local = Path(tmp)
        model.save_pretrained(local, state_dict=model_state)
        tokenizer.save_pretrained(local)
        if state.optimizer is not None:
            torch.save(state.optimizer, local / "optimizer.pt")
        if state.rng is not None:
            torch.save(state.rng, local / "rng.pt")
        (local / "trainer_state.json").write_text(json.dumps({"step": state.step, "metrics": state.metrics}, indent=1))
        (local / "run_config.json").write_text(json.dumps(state.config, indent=1))
        store.delete(f"{name}/{COMPLETE}")  # re-saving the same step: invalid until complete again
        store.put_dir(name, local)
        store.write_text(f"{name}/{COMPLETE}", json.dumps({"step": state.step}))
    return f"{store.uri.rstrip('/')}/{name}"


def is_complete(store: ArtifactStore, name: str) -> bool:
    return store.exists(f"{name}/{COMPLETE}")


def latest_checkpoint(store: ArtifactStore) -> tuple[int, str] | None:
    """``(step, uri)`` of the highest complete ``step-XXXXXX`` checkpoint, or None."""
    steps = []
    for key in store.list():
        parts = key.split("/")
        if len(parts) == 2 and parts[1] == COMPLETE and (match := _STEP_DIR.match(parts[0])):
            steps.append(int(match.group(1)))
    if not steps:
        return None
    step = max(steps)
    return step, f"{store.uri.rstrip('/')}/{step_dir(step)}"


def download_checkpoint(uri: str, local_dir: str | Path) -> Path:
    """Copy a complete checkpoint to ``local_dir``; raises if its ``COMPLETE`` marker is missing."""
    store = open_store(uri)
    if not store.exists(COMPLETE):
        raise FileNotFoundError(f"{uri} is not a complete checkpoint (no {COMPLETE} marker)")
    local_dir = Path(local_dir)
    for key in store.list():
        if key != COMPLETE:
            (local_dir / key).parent.mkdir(parents=True, exist_ok=True)
            store.get_file(key, local_dir / key)
    return local_dir


def load_checkpoint(
    uri: str, model_cfg: ModelConfig | None = None, device: torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, CheckpointState]:
    """Load ``(model, tokenizer, state)`` from a checkpoint URI.

    ``model_cfg`` (dtype, device, attention, gradient checkpointing) defaults to
    the ``model`` section of the config stored in the checkpoint.
    """
    from components.policy.model import load_pretrained

    tmp = Path(tempfile.mkdtemp(prefix="vpo-load-"))
    try:
        download_checkpoint(uri, tmp)
        config = json.loads((tmp / "run_config.json").read_text())
        if model_cfg is None:
            model_cfg = ModelConfig.model_validate(config.get("model", {}))
        model, tokenizer = load_pretrained(tmp, model_cfg, device)
        trainer_state = json.loads((tmp / "trainer_state.json").read_text())
        optimizer = torch.load(tmp / "optimizer.pt", weights_only=True) if (tmp / "optimizer.pt").exists() else None
        rng = torch.load(tmp / "rng.pt", weights_only=True) if (tmp / "rng.pt").exists() else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state = CheckpointState(
        step=int(trainer_state["step"]), config=config, metrics=trainer_state.get("metrics", {}),
        optimizer=optimizer, rng=rng,
    )
    return model, tokenizer, state
