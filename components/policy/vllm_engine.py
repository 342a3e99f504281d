"""vLLM rollout engine, colocated with the trainer on the same GPU (``rollout.engine: vllm``).

vLLM is imported lazily: this module imports without it, and so does the rest of
the project (vLLM needs CUDA and is not installed on the CPU machines; install
the ``gpu`` extra on a GPU box).

How it works:

* An offline ``vllm.LLM`` is created from the policy's weights (saved once to a
  temp directory), with ``gpu_memory_utilization = rollout.gpu_memory_utilization``
  and ``enable_sleep_mode=True``. The engine runs in-process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the trainer can reach its model.
* Generation returns the same :class:`~components.policy.rollout.Rollouts` as the
  hf engine; ``logprobs=1`` gives the sampled token's log-prob under the
  *processed* distribution (``logprobs_mode="processed_logprobs"``: after
  temperature, before top-p — the same convention as the hf engine).
* After each optimizer step :meth:`VLLMEngine.update_weights` wakes the weights
  up and streams ``(name, tensor)`` pairs into vLLM's documented loader
  ``model.load_weights(weights)``. Names are the Hugging Face checkpoint names
  (:func:`vllm_weight_items`), which vLLM's loaders expect: vLLM fuses
  q/k/v and gate/up projections itself; wrapper prefixes (DDP ``module.``,
  ``torch.compile``'s ``_orig_mod.``) are stripped; tied ``lm_head.weight`` is skipped.
* While the trainer updates, the engine sleeps (level 1: weights offloaded to
  CPU, KV cache freed), so training and sampling share one GPU's memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from components.config import RunConfig
from components.policy.rollout import Progress, Rollouts, SamplingParams

_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def hf_parameter_name(name: str) -> str:
    """A trainer-side parameter name -> the checkpoint name vLLM's ``load_weights`` expects."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
            name = name.replace(f".{prefix}", ".")
    return name


def vllm_weight_items(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint name, tensor)`` pairs of ``model`` for vLLM's ``load_weights``.

    Unwraps DDP/compile/checkpoint wrappers and skips the output projection when it is
    tied to the input embeddings (vLLM ties it again on its side).
    """
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, nn.Module):
        inner = inner.module
    tied = bool(getattr(getattr(inner, "config", None), "tie_word_embeddings", False))
    for name, tensor in inner.state_dict().items():
        name = hf_parameter_name(name)
        if tied and name == "lm_head.weight":
            continue
        yield name, tensor.detach()


class VLLMEngine:
    """The :class:`~components.policy.rollout.RolloutEngine` backed by an in-process vLLM ``LLM``."""

    def __init__(self, cfg: RunConfig, model: nn.Module, tokenizer: Any):
        if not torch.cuda.is_available():
            raise RuntimeError("rollout.engine=vllm needs a CUDA device; use rollout.engine=hf on CPU")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise RuntimeError("rollout.engine=vllm needs vLLM: pip install -e '.[gpu]'") from exc
        self.tokenizer = tokenizer
        with tempfile.TemporaryDirectory(prefix="vpo-vllm-") as tmp:
            inner = model.module if hasattr(model, "module") else model
            inner.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            self.llm = LLM(
                model=tmp,
                dtype=str(next(inner.parameters()).dtype).removeprefix("torch."),
                gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                enable_sleep_mode=True,
                seed=cfg.training.seed,
                logprobs_mode="processed_logprobs",
                max_model_len=getattr(inner.config, "max_position_embeddings", None),
            )
        self._asleep = False

    def _vllm_model(self) -> nn.Module:
        """The vLLM-side ``nn.Module`` (in-process engine; layout differs across vLLM versions)."""
        worker = self.llm.llm_engine.model_executor.driver_worker
        worker = getattr(worker, "worker", worker)
        return worker.model_runner.model

    def sleep(self) -> None:
        """Release GPU memory (weights to CPU, KV cache dropped) while the trainer runs."""
        if not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def update_weights(self, model: nn.Module) -> None:
        self.wake_up()
        self._vllm_model().load_weights(vllm_weight_items(model))
        self.llm.reset_prefix_cache()

    def generate(self, prompts: Sequence[str], params: SamplingParams, progress: Progress | None = None) -> Rollouts:
        from vllm import SamplingParams as VSamplingParams

        self.wake_up()
        vparams = VSamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None, include_stop_str_in_output=True, seed=params.seed, logprobs=0,
        )
        enc = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in enc], vparams, use_tqdm=False)
        prompt_rows, completions, logprobs, texts, reasons, index = [], [], [], [], [], []
        for i, out in enumerate(outputs):
            for sample in out.outputs:
                index.append(i)
                prompt_rows.append(enc[i])
                completions.append(list(sample.token_ids))
                logprobs.append([lp[tok].logprob for tok, lp in zip(sample.token_ids, sample.logprobs, strict=True)])
                texts.append(sample.text)
                reasons.append("length" if sample.finish_reason == "length" else "stop")
        if progress is not None:
            progress(len(texts), len(texts))
        self.sleep()
        return _pack(prompt_rows, completions, logprobs, texts, reasons, index, self.tokenizer.pad_token_id)


def _pack(prompts, completions, logprobs, texts, reasons, index, pad: int) -> Rollouts:
    """Lists of per-sample token lists -> the padded :class:`Rollouts` layout."""
    n = len(completions)
    p = max(len(x) for x in prompts)
    c = max(1, max(len(x) for x in completions))
    prompt_ids = torch.full((n, p), pad, dtype=torch.long)
    prompt_mask = torch.zeros((n, p), dtype=torch.bool)
    completion_ids = torch.full((n, c), pad, dtype=torch.long)
    completion_mask = torch.zeros((n, c), dtype=torch.bool)
    lp = torch.zeros((n, c), dtype=torch.float32)
    for row in range(n):
        k = len(prompts[row])
        prompt_ids[row, p - k :] = torch.tensor(prompts[row])
        prompt_mask[row, p - k :] = True
        k = len(completions[row])
        if k:
            completion_ids[row, :k] = torch.tensor(completions[row])
            completion_mask[row, :k] = True
            lp[row, :k] = torch.tensor(logprobs[row])
    return Rollouts(
        prompt_index=torch.tensor(index), prompt_ids=prompt_ids, prompt_mask=prompt_mask,
        completion_ids=completion_ids, completion_mask=completion_mask, logprobs=lp,
        texts=list(texts), finish_reasons=list(reasons),
    )
