"""Policy loading: the tiny Qwen2 factory and its tokenizer reload exactly like a downloaded model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from components.config import ModelConfig, RunConfig, load_config
from components.policy import load_policy
from components.policy.model import model_source, resolve_dtype
from components.policy.tiny import (
    SPECIAL_TOKENS,
    build_char_tokenizer,
    byte_symbols,
    ensure_tiny_model_dir,
)
from components.policy.vllm_engine import vllm_weight_items

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("tiny_model_env")


def test_byte_symbols_are_a_bijection():
    symbols = byte_symbols()
    assert len(set(symbols)) == 256
    assert symbols[ord("A")] == "A" and symbols[ord(" ")] != " "


def test_char_tokenizer_round_trips_text_one_token_per_character():
    tok = build_char_tokenizer()
    text = "Maze:\nS.#E\n<route_1>UULR</route_1>  ~é"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok("Hello world\n", add_special_tokens=False)["input_ids"]) == len("Hello world\n")
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert tok.pad_token_id == 0 and tok.eos_token_id == 2 and tok.padding_side == "left"
    assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text


def test_tiny_model_reloads_through_auto_classes():
    cfg = RunConfig()
    path = Path(model_source(cfg))
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert isinstance(model, Qwen2ForCausalLM)
    assert model.config.vocab_size == len(tok) == 260
    assert model.config.hidden_size == cfg.model.tiny.hidden_size
    assert tok.decode(tok("a b\nc")["input_ids"]) == "a b\nc"


def test_load_policy_is_deterministic_per_seed_and_uses_config():
    cfg = RunConfig()
    model, tok = load_policy(cfg)
    again, _ = load_policy(cfg)
    other, _ = load_policy(cfg.model_copy(update={"seed": 1}))
    w = model.model.embed_tokens.weight
    assert torch.equal(w, again.model.embed_tokens.weight)
    assert not torch.equal(w, other.model.embed_tokens.weight)
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert model.config._attn_implementation == "sdpa"
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_gradient_checkpointing_option():
    cfg = load_config(None, ["model.gradient_checkpointing=true"])
    model, _ = load_policy(cfg)
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    model.train()
    out = model(input_ids=torch.tensor([[5, 6, 7, 8]]), labels=torch.tensor([[5, 6, 7, 8]]))
    out.loss.backward()
    assert model.lm_head.weight.grad is not None


def test_dtype_resolution():
    assert resolve_dtype(ModelConfig(), torch.device("cpu")) == torch.float32
    assert resolve_dtype(ModelConfig(), torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype(ModelConfig(dtype="float16"), torch.device("cpu")) == torch.float16


def test_bad_tiny_shape_is_a_clear_error():
    cfg = load_config(None, ["model.tiny.hidden_size=100", "model.tiny.num_attention_heads=3"])
    with pytest.raises(ValueError, match="divisible"):
        ensure_tiny_model_dir(cfg.model.tiny, seed=0)


def test_vllm_weight_names_follow_the_hf_checkpoint():
    cfg = RunConfig()
    model, _ = load_policy(cfg)
    items = list(vllm_weight_items(model))
    names = [n for n, _ in items]
    # vLLM's Qwen2 loader reads the checkpoint names (it fuses q/k/v and gate/up itself).
    assert "model.embed_tokens.weight" in names
    assert "model.layers.0.self_attn.q_proj.weight" in names
    assert "model.layers.1.mlp.gate_proj.weight" in names
    assert not any(n.startswith(("module.", "_orig_mod.", "model.model.")) for n in names)
    assert "lm_head.weight" not in names  # tied to the embeddings: vLLM skips it
    assert all(t.device.type == "cpu" for _, t in items)


def test_vllm_wrapped_names_are_unwrapped():
    cfg = RunConfig()
    model, _ = load_policy(cfg)
    ddp_like = torch.nn.Module()
    ddp_like.module = model  # what DDP's state_dict prefix looks like
    names = [n for n, _ in vllm_weight_items(ddp_like)]
    assert "model.embed_tokens.weight" in names


def test_policy_modules_do_not_import_mlflow_or_prefect():
    code = (
        "import sys, components.policy, components.training, components.policy.vllm_engine;"
        "bad = [m for m in ('mlflow', 'prefect', 'vllm') if m in sys.modules];"
        "assert not bad, bad"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
