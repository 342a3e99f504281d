"""Load the policy model and tokenizer: any Hugging Face causal LM, or the tiny factory.

Every model — a hub id, a local directory, a checkpoint, or ``tiny`` — goes
through ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from components.config import ModelConfig, RunConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(model_cfg: ModelConfig) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if model_cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device=cuda but no CUDA device is available")
    if model_cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(model_cfg.device)


def resolve_dtype(model_cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU."""
    if model_cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[model_cfg.dtype]


def model_source(cfg: RunConfig) -> str:
    """The path/id handed to ``from_pretrained``: the built tiny model's directory for ``tiny``."""
    if cfg.model.name_or_path == "tiny":
        from components.policy.tiny import ensure_tiny_model_dir

        return str(ensure_tiny_model_dir(cfg.model.tiny, seed=cfg.seed))
    return cfg.model.name_or_path


def load_pretrained(
    source: str | Path, model_cfg: ModelConfig, device: torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``from_pretrained`` a model directory/hub id with the dtype, device and attention of ``model_cfg``.

    The tokenizer pads on the left (generation layout) and always has a pad token.
    """
    device = device or resolve_device(model_cfg)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        str(source),
        dtype=resolve_dtype(model_cfg, device),
        attn_implementation=model_cfg.attn_implementation,
    ).to(device)
    if model_cfg.gradient_checkpointing:
        # transformers >= 5.2x calls it activation checkpointing; 5.17 (GPU image) has the old name only.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # generation passes its own cache; training never needs one
    return model, tokenizer


def load_policy(cfg: RunConfig, task: Any | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The policy ``(model, tokenizer)`` of ``cfg.model``.

    ``model.name_or_path == "tiny"`` builds (once, cached) a small Qwen2 of shape
    ``cfg.model.tiny`` initialised from ``cfg.seed``, with the byte-level tokenizer of
    :mod:`components.policy.tiny` — it covers every task's alphabet, so ``task``
    is accepted for interface symmetry and not needed.
    """
    del task
    return load_pretrained(model_source(cfg), cfg.model)
