"""Rollout engines: prompts in; token ids, texts, per-token log-probs and finish reasons out.

One interface (:class:`RolloutEngine`), two backends: ``hf`` (this module; any
transformers causal LM, CPU or GPU) and ``vllm`` (:mod:`components.policy.vllm_engine`).

Layout of :class:`Rollouts` (N = len(prompts) * n, prompt-major: rows
``i*n .. i*n+n-1`` are the n samples of prompt i):

* ``prompt_ids`` (N, P): left-padded prompt tokens, ``prompt_mask`` marks real ones;
* ``completion_ids`` (N, C): right-padded sampled tokens, ``completion_mask`` marks
  real ones. A completion that ends on EOS keeps the EOS token (the policy is
  trained to stop); one that ends on a stop string keeps the string's tokens.
* ``logprobs`` (N, C) float32: log pi(token | prefix) of the *sampling* distribution
  — ``log_softmax(logits / temperature)`` before top-p truncation — 0 on padding.
  The trainer's forward divides logits by the same temperature, so at the first
  PPO epoch the ratio is exactly 1 up to float rounding (temperature 1.0 in
  training, VPO_SPEC §4, makes this the plain model distribution).

Decoding is a hand-written loop over the model's KV cache (``DynamicCache`` on
CPU; ``StaticCache`` plus a compiled single-token forward on CUDA): per step one
batched forward, vectorised sampling and a vectorised stop check; finished rows
are carried as padding until every row is done or ``max_new_tokens`` is reached.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase, StaticCache
from transformers.generation import StopStringCriteria

from components.config import RunConfig

Progress = Callable[[int, int], None]
"""progress(done_sequences, total_sequences)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: ``n`` completions per prompt, nucleus sampling, stop strings, seed."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1 (got {self.n}, {self.max_new_tokens})")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature > 0 and 0 < top_p <= 1 (got {self.temperature}, {self.top_p})")


@dataclass
class Rollouts:
    """A batch of sampled completions; see the module docstring for the layout."""

    prompt_index: torch.Tensor
    """(N,) long: index into the prompts list."""
    prompt_ids: torch.Tensor
    """(N, P) long, left-padded."""
    prompt_mask: torch.Tensor
    """(N, P) bool."""
    completion_ids: torch.Tensor
    """(N, C) long, right-padded."""
    completion_mask: torch.Tensor
    """(N, C) bool."""
    logprobs: torch.Tensor
    """(N, C) float32 sampling log-probs, 0 on padding."""
    texts: list[str]
    """Decoded completions (special tokens removed)."""
    finish_reasons: list[str]
    """``"stop"`` (EOS or a stop string) or ``"length"`` (max_new_tokens reached)."""

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_completion_tokens(self) -> int:
        return int(self.completion_mask.sum())

    @property
    def num_prompt_tokens(self) -> int:
        return int(self.prompt_mask.sum())


class RolloutEngine(Protocol):
    """What the trainer and the evaluator need from a generation backend."""

    def generate(self, prompts: Sequence[str], params: SamplingParams, progress: Progress | None = None) -> Rollouts:
        """Sample ``params.n`` completions of every prompt (prompt-major order)."""

    def update_weights(self, model: PreTrainedModel) -> None:
        """Make the engine sample from ``model``'s current weights (after an optimizer step)."""


def sample_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row of ``logits`` (b, V).

    Returns ``(tokens (b,), logprobs (b,))`` where the log-prob is under
    ``softmax(logits / temperature)`` *before* top-p truncation.
    """
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    probs = logprobs.exp()
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # keeps the top token
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def left_padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded (or left+right padded) mask: 0 at the first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class HFEngine:
    """Batched sampling with a transformers model and a hand-written KV-cache decode loop.

    Args:
        model: a causal LM (the *same object* the trainer updates: no weight copy).
        tokenizer: its tokenizer; must have pad and EOS tokens.
        batch_size: sequences per decode batch (prompts x n are chunked by this).
        static_cache: use a ``StaticCache`` (fixed shapes); default: on CUDA only.
        compile: ``torch.compile`` the single-token decode forward (needs static_cache);
            default: on CUDA only.
        lockstep: always decode ``max_new_tokens`` steps (no early exit when every row has
            finished) — needed when each forward is a collective, as under FSDP.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 64,
        static_cache: bool | None = None,
        compile: bool | None = None,
        lockstep: bool = False,
    ):
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs a pad token and an EOS token")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.lockstep = lockstep
        on_cuda = next(model.parameters()).device.type == "cuda"
        self.static_cache = on_cuda if static_cache is None else static_cache
        self.compile = (on_cuda if compile is None else compile) and self.static_cache
        self._decode_forward: Callable | None = None
        self._cache_arg = _cache_argument_name(model)
        self._stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}

    def update_weights(self, model: PreTrainedModel) -> None:
        """The engine samples from the trainer's own module: only the reference changes."""
        if model is not self.model:
            self.model = model
            self._decode_forward = None
            self._cache_arg = _cache_argument_name(model)

    def generate(self, prompts: Sequence[str], params: SamplingParams, progress: Progress | None = None) -> Rollouts:
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        device = next(self.model.parameters()).device
        enc = self.tokenizer(list(prompts), padding=True, add_special_tokens=False, return_tensors="pt")
        prompt_index = torch.arange(len(prompts)).repeat_interleave(params.n)
        prompt_ids = enc["input_ids"][prompt_index]
        prompt_mask = enc["attention_mask"][prompt_index].bool()
        generator = torch.Generator(device=device).manual_seed(params.seed)
        stop = self._stop_criterion(params.stop)

        chunks = []
        total = len(prompt_index)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, total, self.batch_size):
                rows = slice(start, start + self.batch_size)
                chunks.append(
                    self._decode(prompt_ids[rows], prompt_mask[rows], params, generator, stop)
                )
                if progress is not None:
                    progress(min(start + self.batch_size, total), total)
        finally:
            self.model.train(was_training)

        width = max(c[0].shape[1] for c in chunks)
        pad = self.tokenizer.pad_token_id
        completion_ids = torch.cat([_pad_right(c[0], width, pad) for c in chunks])
        completion_mask = torch.cat([_pad_right(c[1], width, False) for c in chunks])
        logprobs = torch.cat([_pad_right(c[2], width, 0.0) for c in chunks])
        finish_reasons = [r for c in chunks for r in c[3]]
        texts = self.tokenizer.batch_decode(
            completion_ids.masked_fill(~completion_mask, pad), skip_special_tokens=True
        )
        return Rollouts(
            prompt_index=prompt_index,
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            logprobs=logprobs,
            texts=texts,
            finish_reasons=finish_reasons,
        )

    # -- internals -------------------------------------------------------------------------

    def _stop_criterion(self, stop: tuple[str, ...]) -> StopStringCriteria | None:
        if not stop:
            return None
        if stop not in self._stop_criteria:
            self._stop_criteria[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_criteria[stop]

    @torch.no_grad()
    def _decode(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator,
        stop: StopStringCriteria | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """Sample one chunk; returns (ids (b, C), mask (b, C), logprobs (b, C), finish reasons)."""
        device = next(self.model.parameters()).device
        # Drop columns that are padding in every row of this chunk.
        first_real = int((~prompt_mask).all(0).long().cumprod(0).sum())
        prompt_ids, prompt_mask = prompt_ids[:, first_real:].to(device), prompt_mask[:, first_real:].to(device)
        b, p = prompt_ids.shape
        max_new = params.max_new_tokens
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id

        tokens = torch.full((b, max_new), pad, dtype=torch.long, device=device)
        logprobs = torch.zeros((b, max_new), dtype=torch.float32, device=device)
        alive = torch.ones((b, max_new), dtype=torch.bool, device=device)
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        stopped = torch.zeros(b, dtype=torch.bool, device=device)
        positions = left_padded_positions(prompt_mask)

        if self.static_cache:
            cache = StaticCache(config=self.model.config, max_cache_len=p + max_new)
            attention = torch.cat([prompt_mask.long(), torch.zeros((b, max_new), dtype=torch.long, device=device)], 1)
            logits = self.model(
                input_ids=prompt_ids, attention_mask=attention[:, :p], position_ids=positions,
                **{self._cache_arg: cache}, use_cache=True, logits_to_keep=1,
                cache_position=torch.arange(p, device=device),
            ).logits[:, -1]
        else:
            cache = DynamicCache(config=self.model.config)
            attention = prompt_mask.long()
            logits = self.model(
                input_ids=prompt_ids, attention_mask=attention, position_ids=positions,
                **{self._cache_arg: cache}, use_cache=True, logits_to_keep=1,
            ).logits[:, -1]
        next_position = positions[:, -1:] + 1

        steps = 0
        for t in range(max_new):
            token, logprob = sample_tokens(logits, params.temperature, params.top_p, generator)
            token = token.masked_fill(finished, pad)
            tokens[:, t] = token
            logprobs[:, t] = logprob.masked_fill(finished, 0.0)
            alive[:, t] = ~finished
            steps = t + 1
            hit_stop = stop(tokens[:, :steps], None).to(device) if stop is not None else torch.zeros_like(finished)
            newly_done = ~finished & ((token == eos) | hit_stop)
            stopped |= newly_done
            finished |= newly_done
            if t == max_new - 1 or (bool(finished.all()) and not self.lockstep):
                break
            if not self.static_cache:
                attention = torch.cat([attention, torch.ones((b, 1), dtype=attention.dtype, device=device)], 1)
            logits = self._step(token, attention, next_position, cache, p + t)
            next_position = next_position + 1

        reasons = ["stop" if s else "length" for s in stopped.tolist()]
        return tokens[:, :steps].cpu(), alive[:, :steps].cpu(), logprobs[:, :steps].cpu(), reasons

    def _step(
        self,
        token: torch.Tensor,
        attention: torch.Tensor,
        position: torch.Tensor,
        cache: DynamicCache | StaticCache,
        cache_index: int,
    ) -> torch.Tensor:
        """One single-token forward; returns next-token logits (b, V)."""
        if not self.static_cache:
            out = self.model(
                input_ids=token[:, None], attention_mask=attention, position_ids=position,
                **{self._cache_arg: cache}, use_cache=True,
            )
            return out.logits[:, -1]
        attention[:, cache_index] = 1
        cache_position = torch.tensor([cache_index], device=token.device)
        if self._decode_forward is None:
            forward = self.model.forward
            self._decode_forward = (
                torch.compile(forward, mode="reduce-overhead", fullgraph=False) if self.compile else forward
            )
        out = self._decode_forward(
            input_ids=token[:, None], attention_mask=attention, position_ids=position,
            **{self._cache_arg: cache}, use_cache=True, cache_position=cache_position,
        )
        return out.logits[:, -1]


def _cache_argument_name(model: PreTrainedModel) -> str:
    """transformers >= 5.2x renamed ``past_key_values`` to ``cache``; accept both (GPU image: 5.17)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _pad_right(x: torch.Tensor, width: int, value: float | bool | int) -> torch.Tensor:
    if x.shape[1] == width:
        return x
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def make_engine(cfg: RunConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> RolloutEngine:
    """The engine named by ``cfg.rollout.engine`` sampling from ``model``."""
    if cfg.rollout.engine == "vllm":
        from components.policy.vllm_engine import VLLMEngine

        return VLLMEngine(cfg, model, tokenizer)
    return HFEngine(model, tokenizer, batch_size=cfg.rollout.generation_batch_size)
