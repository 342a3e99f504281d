"""A from-scratch tiny Qwen2 model and a character-level tokenizer, built offline.

The pair is written with ``save_pretrained`` into a directory and loaded back
with ``AutoTokenizer`` / ``AutoModelForCausalLM``: the CPU demo exercises the
exact code path of a downloaded model.

Tokenizer: a byte-level Qwen2 tokenizer with *no merges* — one token per byte,
so one token per character for the ASCII text of our tasks (printable ASCII
and ``"\\n"``) and a lossless round trip for any UTF-8 text — plus the special
tokens ``<pad>`` (id 0), ``<bos>`` (1), ``<eos>`` (2), ``<unk>`` (3): 260 ids.
It is a real ``Qwen2Tokenizer`` (the class ``AutoTokenizer`` picks for a Qwen2
config), so reloading needs no special casing. Encoding never adds special
tokens; the trainer appends ``<eos>`` to supervised targets, so the model
learns to stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

from components.config import TinyModelConfig

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
TOKENIZER_VERSION = "bytes-v1"
"""Bump when the vocabulary changes: it is part of the tiny-model cache key."""


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes 0..255 (GPT-2 convention).

    Printable Latin-1 bytes stand for themselves; the others (space, control
    bytes, ...) are mapped in order onto code points from 256 upwards.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def build_char_tokenizer() -> Qwen2Tokenizer:
    """One-token-per-byte Qwen2 tokenizer (no merges), left padding."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in byte_symbols():
        vocab[symbol] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=1 << 20,
    )


def build_tiny_model(shape: TinyModelConfig, tokenizer: Qwen2Tokenizer, seed: int) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM of ``shape``; identical for identical ``seed``."""
    if shape.hidden_size % shape.num_attention_heads:
        raise ValueError(
            f"model.tiny.hidden_size={shape.hidden_size} must be divisible by "
            f"num_attention_heads={shape.num_attention_heads}"
        )
    if shape.num_attention_heads % shape.num_key_value_heads:
        raise ValueError("model.tiny.num_attention_heads must be a multiple of num_key_value_heads")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.float()


def tiny_cache_dir() -> Path:
    """Where built tiny models live: ``$VPO_CACHE_DIR/tiny`` (default ``~/.cache/vpo/tiny``)."""
    root = os.environ.get("VPO_CACHE_DIR") or Path.home() / ".cache" / "vpo"
    return Path(root) / "tiny"


def ensure_tiny_model_dir(shape: TinyModelConfig, seed: int) -> Path:
    """Build (once) and return a directory loadable with ``from_pretrained``.

    Keyed by shape, seed and tokenizer version; written to a temp dir and renamed,
    so concurrent builders never see a half-written directory.
    """
    key_src = json.dumps({"shape": shape.model_dump(), "seed": seed, "tok": TOKENIZER_VERSION}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    dest = tiny_cache_dir() / key
    if (dest / "config.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=dest.parent))
    try:
        tokenizer = build_char_tokenizer()
        build_tiny_model(shape, tokenizer, seed).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
