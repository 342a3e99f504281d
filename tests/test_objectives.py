"""The demo task's objectives disagree, shown before any training (VPO_SPEC §2, §5).

On one ``easy_first`` synthetic-code problem (lines weighted 1:2:2 in the fixed scalar,
as in configs/demo.yaml), hand-built answer sets are scored by the real task through the
process sandbox, then valued by each method's objective:

* VPO: E_w[max_s w . r_s] (w ~ Dir(1) over the k tests) — the raw value of
  :func:`components.advantages.vpo_advantages`;
* Multi-RLVR: the sum over the set's de-duplicated answers of the fixed scalar;
* GRPO: the fixed scalar of one single answer.

VPO's optimum covers the three conflicting lines; Multi-RLVR prefers behaviour-preserving
rewrites of one heavy line (individually strong answers sharing a blind spot: two lines
never covered); GRPO takes the single best answer. And the two set objectives rank at
least one pair of sets in opposite orders.
"""

from __future__ import annotations

import json

import pytest
import torch

from components.advantages import vpo_advantages
from components.config import RunConfig, SandboxConfig
from components.sandbox import open_sandbox
from components.tasks.code import variant_programs
from components.tasks.synthetic_code import EASY, GRAMMAR, SyntheticCodeTask, generate_problems, program_of

DEMO_TASK = {"name": "synthetic_code", "code_layout": "easy_first", "code_target_weights": [1, 2, 2]}


@pytest.fixture(scope="module")
def scored_sets():
    cfg = RunConfig.model_validate({"task": DEMO_TASK})
    row = generate_problems(1, seed=0, layout="easy_first")[0]
    easy, hard1, hard2 = json.loads(row["programs"])
    wrong = program_of("1000")  # passes no test of any line
    sets = {
        "cover": [easy, hard1, hard2],
        "easy_rewrites": variant_programs([easy], 3),
        "hard_rewrites": variant_programs([hard1], 3),
        "easy+hard": [easy, hard1, wrong],
        "hard+hard": [hard1, hard2, wrong],
        "easy_alone": [easy, wrong, wrong],
        "hard_alone": [hard1, wrong, wrong],
    }
    with open_sandbox(SandboxConfig(backend="process", workers=1)) as sandbox:
        task = SyntheticCodeTask(sandbox, cfg.task)
        scored = task.score([row] * len(sets), list(sets.values()))
    return task, list(sets), scored


def objectives(task, scored) -> dict[str, list[float]]:
    """Each method's value of each set (S values per method)."""
    n = scored.rewards.shape[0]
    # One group per set (group ids 0..S-1), so vpo_advantages' raw value is E_w[max] of that set alone.
    weights = torch.distributions.Dirichlet(torch.ones(scored.rewards.shape[-1])).sample(
        (20_000,)
    )  # (K, k): a fine Monte-Carlo estimate, shared by every set
    _, vpo = vpo_advantages(scored.rewards, torch.arange(n), weights=weights, mask=scored.mask)
    fixed = (scored.rewards @ task.fixed_weights) * scored.mask  # (S, m)
    return {"vpo": vpo.tolist(), "multi_rlvr": fixed.sum(dim=1).tolist(),
            "grpo_best_single": fixed.max(dim=1).values.tolist()}


def test_the_tasks_lines_are_easy_then_hard_and_weighted():
    row = generate_problems(1, seed=0, layout="easy_first")[0]
    exprs = [p.split("return ")[1] for p in json.loads(row["programs"])]
    assert GRAMMAR.index(exprs[0]) < EASY and all(GRAMMAR.index(e) >= EASY for e in exprs[1:])


def test_each_method_prefers_what_the_spec_predicts(scored_sets):
    torch.manual_seed(0)
    task, names, scored = scored_sets
    values = objectives(task, scored)
    best = {method: names[v.index(max(v))] for method, v in values.items()}
    # every line's program passes exactly its own 3 tests; rewrites are distinct ASTs, so all kept
    assert scored.mask[names.index("easy_rewrites")].all() and scored.mask[names.index("hard_rewrites")].all()
    assert best["vpo"] == "cover"  # VPO covers the conflicting objectives
    assert best["multi_rlvr"] == "hard_rewrites"  # strong answers sharing a blind spot (lines 1, 3)
    assert values["multi_rlvr"][names.index("hard_rewrites")] == pytest.approx(1.2)
    assert values["multi_rlvr"][names.index("cover")] == pytest.approx(1.0)
    # GRPO: the single best answer is a heavy (hard) line's program, worth 2/5 of the fixed scalar
    assert max(values["grpo_best_single"]) == pytest.approx(0.4)
    # rewrites add nothing under VPO: their value is that of the line alone
    vpo = values["vpo"]
    assert vpo[names.index("hard_rewrites")] == pytest.approx(vpo[names.index("hard_alone")], abs=1e-6)
    assert vpo[names.index("easy_rewrites")] == pytest.approx(vpo[names.index("easy_alone")], abs=1e-6)


def test_vpo_and_multi_rlvr_rank_a_pair_of_sets_in_opposite_orders(scored_sets):
    task, names, scored = scored_sets
    values = objectives(task, scored)
    vpo, multi = values["vpo"], values["multi_rlvr"]
    cover, rewrites = names.index("cover"), names.index("hard_rewrites")
    assert vpo[cover] > vpo[rewrites] + 0.1
    assert multi[rewrites] > multi[cover] + 0.1
    # and the easy line's rewrites beat a hard line alone under Multi-RLVR, not under VPO
    easy_rw, hard_alone = names.index("easy_rewrites"), names.index("hard_alone")
    assert multi[easy_rw] > multi[hard_alone]
    assert vpo[easy_rw] == pytest.approx(vpo[hard_alone], abs=0.02)
