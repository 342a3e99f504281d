"""The hf rollout engine: layout, seeding, log-probs consistent with the training forward, stops."""

from __future__ import annotations

import os

import pytest
import torch

from components.config import RunConfig
from components.policy import HFEngine, SamplingParams, load_policy
from components.policy.rollout import sample_tokens
from components.policy.vllm_engine import _pack
from components.training.forward import SequenceBatch, TokenLogprobs

PROMPTS = ["Maze:\nS.#\n..E\nroute?", "Hi", "abc def"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    old, old_threads = os.environ.get("VPO_CACHE_DIR"), torch.get_num_threads()
    os.environ["VPO_CACHE_DIR"] = str(tmp_path_factory.mktemp("vpo-cache"))
    torch.set_num_threads(1)
    model, tok = load_policy(RunConfig())
    yield model, tok
    torch.set_num_threads(old_threads)
    if old is None:
        os.environ.pop("VPO_CACHE_DIR", None)
    else:
        os.environ["VPO_CACHE_DIR"] = old


def _forward_logprobs(model, rollouts, temperature=1.0):
    batch = SequenceBatch(rollouts.prompt_ids, rollouts.prompt_mask, rollouts.completion_ids, rollouts.completion_mask)
    with torch.no_grad():
        return TokenLogprobs(model, temperature, chunk_tokens=17)(batch)[0]


def test_layout_is_prompt_major_and_padded(policy):
    model, tok = policy
    r = HFEngine(model, tok, batch_size=5).generate(PROMPTS, SamplingParams(n=4, max_new_tokens=12, seed=0))
    assert len(r) == 12 and r.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert r.completion_ids.shape == r.completion_mask.shape == r.logprobs.shape
    assert r.completion_ids.shape[1] <= 12
    # prompts: left padded, and decode back to the prompt text
    assert r.prompt_mask[:, -1].all()
    assert tok.decode(r.prompt_ids[4][r.prompt_mask[4]]) == PROMPTS[1]
    # completions: right padded, mask is a prefix, padding has logprob 0
    lengths = r.completion_mask.sum(1)
    assert torch.equal(r.completion_mask, torch.arange(r.completion_mask.shape[1])[None] < lengths[:, None])
    assert (r.logprobs[~r.completion_mask] == 0).all() and (r.logprobs[r.completion_mask] < 0).all()
    assert set(r.finish_reasons) <= {"stop", "length"}
    for b in range(len(r)):
        if r.finish_reasons[b] == "length":
            assert lengths[b] == 12
        ids = r.completion_ids[b][r.completion_mask[b]].tolist()
        assert r.texts[b] == tok.decode(ids, skip_special_tokens=True)


def test_sampling_is_seeded(policy):
    model, tok = policy
    engine = HFEngine(model, tok)
    a = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=10, seed=7))
    b = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=10, seed=7))
    c = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=10, seed=8))
    assert a.texts == b.texts and torch.equal(a.logprobs, b.logprobs)
    assert a.texts != c.texts


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_match_the_training_forward(policy, temperature):
    model, tok = policy
    r = HFEngine(model, tok).generate(PROMPTS, SamplingParams(n=3, max_new_tokens=16, temperature=temperature, seed=1))
    train_lp = _forward_logprobs(model, r, temperature)
    assert torch.allclose(train_lp, r.logprobs, atol=1e-5)


def test_static_cache_path_matches_dynamic_cache(policy):
    model, tok = policy
    params = SamplingParams(n=2, max_new_tokens=14, seed=3)
    dynamic = HFEngine(model, tok, static_cache=False).generate(PROMPTS, params)
    static = HFEngine(model, tok, static_cache=True, compile=False).generate(PROMPTS, params)
    assert torch.equal(dynamic.completion_ids, static.completion_ids)
    assert torch.allclose(dynamic.logprobs, static.logprobs, atol=1e-5)


def test_tiny_top_p_is_greedy_and_matches_generate(policy):
    model, tok = policy
    r = HFEngine(model, tok).generate(PROMPTS, SamplingParams(n=1, max_new_tokens=8, top_p=1e-6, seed=0))
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)
    reference = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert r.texts == reference


def test_stop_string_ends_a_completion_and_is_kept(policy):
    model, tok = policy
    engine = HFEngine(model, tok)
    free = engine.generate(PROMPTS[:1], SamplingParams(n=1, max_new_tokens=20, seed=5))
    text = free.texts[0]
    assert len(text) >= 6, "need a long enough sample to pick a stop string from"
    stop = text[3:5]
    cut = engine.generate(PROMPTS[:1], SamplingParams(n=1, max_new_tokens=20, seed=5, stop=(stop,)))
    expected = text[: text.index(stop) + len(stop)]
    assert cut.texts[0] == expected and cut.finish_reasons[0] == "stop"


def test_eos_is_kept_in_tokens_and_dropped_from_text(policy):
    model, tok = policy
    # Make EOS overwhelmingly likely by biasing the output layer.
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[tok.eos_token_id] = 50.0
    model.set_output_embeddings(biased)
    try:
        r = HFEngine(model, tok).generate(PROMPTS, SamplingParams(n=1, max_new_tokens=5, seed=0))
    finally:
        model.set_output_embeddings(head)
    assert r.finish_reasons == ["stop"] * 3
    assert r.completion_ids[:, 0].tolist() == [tok.eos_token_id] * 3
    assert r.completion_mask.sum(1).tolist() == [1, 1, 1]
    assert r.texts == ["", "", ""]


def test_sample_tokens_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    seen = {int(sample_tokens(logits, 1.0, 0.7, gen)[0]) for _ in range(200)}
    assert seen == {0, 1}
    tokens, logprobs = sample_tokens(logits.repeat(3, 1), 2.0, 1.0, gen)
    expected = torch.log_softmax(logits[0] / 2.0, -1)[tokens]
    assert torch.allclose(logprobs, expected)


def test_invalid_sampling_params_are_rejected():
    with pytest.raises(ValueError):
        SamplingParams(n=0)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)


def test_vllm_outputs_pack_into_the_same_layout():
    r = _pack(
        prompts=[[5, 6, 7], [8]], completions=[[9, 2], [10, 11, 12]], logprobs=[[-0.1, -0.2], [-1.0, -2.0, -3.0]],
        texts=["a", "bcd"], reasons=["stop", "length"], index=[0, 1], pad=0,
    )
    assert r.prompt_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert r.prompt_mask.tolist() == [[True] * 3, [False, False, True]]
    assert r.completion_ids.tolist() == [[9, 2, 0], [10, 11, 12]]
    assert r.logprobs[0].tolist() == pytest.approx([-0.1, -0.2, 0.0])
