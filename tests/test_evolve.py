"""Evolutionary search: the OpenAI-compatible policy server (real HTTP clients, the real
tiny model) and OpenEvolve end to end with our sandbox as its evaluator."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from components.config import SandboxConfig, TinyModelConfig
from components.evolve import (
    ProblemSearch,
    TaskPromptAdapter,
    evolve_problem,
    serve_policy,
    solved_curve,
)
from components.evolve.server import Completion, CompletionParams, PolicyServer, engine_sampler
from components.sandbox.problem import CodeProblem, TestCase


def echo_sampler(prompt: str, params: CompletionParams) -> list[Completion]:
    return [Completion(text=f"{i}|{params.temperature}|{prompt}", completion_tokens=1) for i in range(params.n)]


def test_chat_and_completion_routes_answer_an_openai_client() -> None:
    with PolicyServer(echo_sampler, model_names=("policy",)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        chat = client.chat.completions.create(
            model="policy", messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
            n=3, temperature=0.5, max_tokens=8,
        )
        assert [c.message.content.split("|")[0] for c in chat.choices] == ["0", "1", "2"]
        assert chat.choices[0].message.content == "0|0.5|system: S\nuser: U\nassistant:"
        assert chat.usage.completion_tokens == 3
        completion = client.completions.create(model="policy", prompt="abc", max_tokens=4)
        assert completion.choices[0].text == "0|1.0|abc"
        assert [m.id for m in client.models.list()] == ["policy"]
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="policy", messages=[], max_tokens=4)
        with pytest.raises(openai.NotFoundError):
            client.post("/nope", cast_to=dict, body={})
        assert server.requests_served == 2


def test_sampler_failure_is_a_500_and_the_server_keeps_serving() -> None:
    calls = []

    def flaky(prompt: str, params: CompletionParams) -> list[Completion]:
        calls.append(prompt)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return [Completion(text="ok")]

    with PolicyServer(flaky) as server:
        request = urllib.request.Request(
            f"{server.base_url}/completions", data=json.dumps({"prompt": "x"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 500 and "out of memory" in err.value.read().decode()
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["choices"][0]["text"] == "ok"


def test_tiny_model_served_through_the_hf_engine() -> None:
    from components.policy.rollout import HFEngine
    from components.policy.tiny import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    shape = TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, num_key_value_heads=1)
    model = build_tiny_model(shape, tokenizer, seed=0).eval()
    sampler = engine_sampler(HFEngine(model, tokenizer, batch_size=8))
    with PolicyServer(sampler, max_tokens=6, max_tokens_cap=6) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        reply = client.completions.create(model="policy", prompt="def f(x):", n=2, max_tokens=50, seed=3)
        again = client.completions.create(model="policy", prompt="def f(x):", n=2, max_tokens=50, seed=3)
    assert len(reply.choices) == 2
    assert [c.text for c in reply.choices] == [c.text for c in again.choices]  # seeded
    assert 0 < reply.usage.completion_tokens <= 12  # capped at 6 tokens per choice


def test_solved_curve_counts_problems_by_first_solving_iteration() -> None:
    searches = [
        ProblemSearch(problem_id="a", iterations=3, solved_at=2, best_score=1.0, children=3),
        ProblemSearch(problem_id="b", iterations=5, solved_at=None, best_score=0.5, children=5),
        ProblemSearch(problem_id="c", iterations=0, solved_at=0, best_score=1.0, children=0),
    ]
    assert solved_curve(searches, 5) == [1, 1, 2, 2, 2, 2]


class _ScriptedTask:
    """A task-like object for the task-mode adapter: answers are fenced by ``<a>..</a>``."""

    def build_prompt(self, row: dict, m: int, tokenizer=None) -> str:
        return f"solve {row['id']} with {m} answers"

    def parse_answers(self, text: str, m: int) -> list[str | None]:
        parts = [p.split("</a>")[0] for p in text.split("<a>")[1:]]
        return (parts + [None] * m)[:m]


DOUBLE = CodeProblem(
    problem_id="double",
    tests=(
        TestCase(kind="stdin", input="2\n", expected="4"),
        TestCase(kind="stdin", input="5\n", expected="10"),
    ),
    time_limit_s=5,
)


@pytest.mark.slow
def test_openevolve_end_to_end_with_the_sandbox_evaluator(tmp_path) -> None:
    """OpenEvolve asks the served 'policy' (task mode) for rewrites; the third proposal is
    correct, so the search solves the problem, and the trace yields the iteration."""
    proposals = iter([
        "<a>print(0)</a>",  # wrong
        "<a>print(int(input()) + 2)</a>",  # passes the first test only
        "<a>print(2 * int(input()))</a>",  # correct
    ])

    def scripted(prompt: str, params: CompletionParams) -> list[Completion]:
        assert prompt == "solve double with 1 answers"
        return [Completion(text=next(proposals, "<a>print(1)</a>"))]

    adapter = TaskPromptAdapter(_ScriptedTask(), {"double": {"id": "double"}}, num_answers=1)
    sandbox = SandboxConfig(backend="process", workers=1)
    with serve_policy(scripted, prompt_mode="task", model_names=["double"], task_adapter=adapter) as server:
        search = evolve_problem(DOUBLE, base_url=server.base_url, model_name="double", iterations=6,
                                sandbox=sandbox, workdir=tmp_path / "search", seed=0)
    assert search.solved_at == 3
    assert search.best_score == 1.0
    assert search.children >= 3


@pytest.mark.slow
def test_vpo_evolve_two_checkpoints_end_to_end(tmp_path) -> None:
    """`vpo evolve` on two real tiny checkpoints (a set-method one and a GRPO one): pools,
    hard-problem selection, the served policies, OpenEvolve, the sandbox, report and plot."""
    from typer.testing import CliRunner

    from components.config import load_config
    from components.datasets import prepare_dataset
    from components.training import train
    from flows.cli import app

    common = [
        "task.name=synthetic_code", "task.train_size=4", "task.test_size=2", f"storage.root=file://{tmp_path}/s",
        "training.steps=0", "training.warmup_steps=0", "sandbox.backend=process", "sandbox.workers=1",
        "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_hidden_layers=1",
        "model.tiny.num_attention_heads=2", "model.tiny.num_key_value_heads=1", "rollout.max_new_tokens=16",
        "evaluation.set_generations=2", "evaluation.single_samples=3",
    ]
    checkpoints = []
    for name, method, m in (("set", "vpo", 2), ("single", "grpo", 1)):
        cfg = load_config(None, [*common, f"name={name}", f"estimator.name={method}", f"task.num_answers={m}"])
        checkpoints.append(train(cfg, dataset=prepare_dataset(cfg)).checkpoint_uri)
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("{}\n")
    out = tmp_path / "evolve"
    args = ["evolve", str(config_file), "--checkpoint", checkpoints[0], "--label", "set",
            "--checkpoint", checkpoints[1], "--label", "single", "--iterations", "2", "--problems", "1",
            "--out", str(out)]
    overrides = sum((["--set", o] for o in [*common, "name=set", "estimator.name=vpo", "task.num_answers=2"]), [])
    result = CliRunner().invoke(app, [*args, *overrides])
    assert result.exit_code == 0, result.output
    reports = json.loads((out / "report.json").read_text())
    assert [r["checkpoint_uri"] for r in reports] == checkpoints
    for report in reports:
        assert len(report["problem_ids"]) == 1 and report["selection"]
        assert len(report["solved_curve"]) == 3 and len(report["mean_best_curve"]) == 3
        [search] = report["searches"]
        assert search["best_by_iteration"] == sorted(search["best_by_iteration"])
    assert (out / "solved_vs_iterations.png").read_bytes()[:4] == b"\x89PNG"
