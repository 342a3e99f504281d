"""Answer parsing (VPO_SPEC §3): missing tags, prose around tags, extra answers, garbage, duplicates."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.config import RunConfig
from components.sandbox import SandboxConfig, open_sandbox
from components.tasks import get_task
from components.tasks.code import ast_key, parse_programs
from components.tasks.maze import Maze, MazeTask

MAZE = MazeTask()
GRID = "S.G#E\n.#.#.\n....D\n.#.#.\nL.B.."
ROW = {"id": "t", "grid": GRID, "budget": 20}
F1 = "def f(x):\n    return x*2+1"
F2 = "def f(x):\n    return x+7"


# ----------------------------------------------------------------------------- maze routes


def test_maze_missing_tags():
    text = "<route_1>RRDD</route_1>\n<route_3>DDRR</route_3>"
    assert MAZE.parse_answers(text, 3) == ["RRDD", None, "DDRR"]
    assert MAZE.parse_answers("no tags at all", 3) == [None, None, None]
    assert MAZE.parse_answers("<route_1>RRDD", 1) == [None]  # unclosed
    assert MAZE.parse_answers("<route_2>RR</route_1>", 2) == [None, None]  # mismatched


def test_maze_prose_around_tags():
    text = (
        "Gold is top right, diamond bottom right. Plan: three routes.\n"
        "First <route_1>R R D D</route_1>, then the diamond\n<route_2>D,D,R,R</route_2> and "
        "finally <route_3>down, down, right</route_3>. Done!"
    )
    assert MAZE.parse_answers(text, 3) == ["RRDD", "DDRR", "DDR"]


def test_maze_extra_answers_are_ignored():
    text = "".join(f"<route_{i}>{'R' * i}</route_{i}>" for i in (1, 2, 3, 4, 5))
    assert MAZE.parse_answers(text, 3) == ["R", "RR", "RRR"]
    # a repeated tag: the first occurrence wins
    assert MAZE.parse_answers("<route_1>U</route_1><route_1>D</route_1>", 1) == ["U"]


def test_maze_single_answer_tag():
    assert MAZE.parse_answers("ok <route>RRDDRRUU</route>", 1) == ["RRDDRRUU"]
    assert MAZE.parse_answers("<route_1>RRDDRRUU</route_1>", 1) == ["RRDDRRUU"]


def test_maze_garbage():
    text = "<route_1>go to the gold</route_1><route_2></route_2><route_3>RRX</route_3>"
    assert MAZE.parse_answers(text, 3) == [None, None, None]
    assert MAZE.parse_answers("\x00\xff<<route_1>>>", 2) == [None, None]
    scored = MAZE.score([ROW], [MAZE.parse_answers(text, 3)])
    assert scored.mask.tolist() == [[False, False, False]]
    assert scored.rewards.abs().sum() == 0


def test_maze_duplicates_are_dropped_before_scoring():
    text = "<route_1>RRDDRRUU</route_1><route_2>R,R,D,D,R,R,U,U</route_2><route_3>DDRRRRUU</route_3>"
    answers = MAZE.parse_answers(text, 3)
    scored = MAZE.score([ROW], [answers])
    assert scored.mask.tolist() == [[True, False, True]]
    assert scored.rewards[0, 1].abs().sum() == 0
    assert scored.rewards[0, 0].tolist() == [1, 1, 1, 1]
    assert scored.rewards[0, 2].tolist() == [1, 0, 1, 1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="UDLR", min_size=1, max_size=40), min_size=1, max_size=5))
def test_maze_format_parse_round_trip(routes):
    m = len(routes)
    assert MAZE.parse_answers(MAZE.format_answers(routes, m), m) == routes


def test_maze_score_never_leaves_the_unit_interval():
    maze = Maze.from_text(GRID, 20)
    answers = [["RRDDRRUU", "UUUU", None], ["DDDDRRRRUUUU", "LLLL" * 10, "RDRDRDRD"]]
    scored = MAZE.score([ROW, ROW], answers)
    assert scored.rewards.shape == (2, 3, 4)
    assert ((scored.rewards >= 0) & (scored.rewards <= 1)).all()
    assert maze.budget == 20


# ----------------------------------------------------------------------------- code blocks


def blocks(*programs: str, sep: str = "\n---\n") -> str:
    return sep.join(f"```python\n{p}\n```" for p in programs)


def test_code_missing_blocks():
    assert parse_programs(blocks(F1), 3) == [F1 + "\n", None, None]
    assert parse_programs("def f(x): return 1", 2) == [None, None]  # no fence
    assert parse_programs("```python\ndef f(x):\n    return 1\n", 1) == [None]  # unclosed fence


def test_code_prose_around_blocks():
    text = "Two ideas: doubling, then shifting.\n" + blocks(F1, F2) + "\nBoth are short."
    assert parse_programs(text, 2) == [F1 + "\n", F2 + "\n"]
    # plain ``` fences and missing separators are accepted too
    assert parse_programs(f"```\n{F1}\n```\n```py\n{F2}\n```", 2) == [F1 + "\n", F2 + "\n"]


def test_code_extra_answers_are_ignored():
    text = blocks(F1, F2, "def f(x):\n    return 3")
    assert parse_programs(text, 2) == [F1 + "\n", F2 + "\n"]


def test_code_garbage():
    text = blocks("def f(x) return x", "this is not python at all", "x = = 1")
    assert parse_programs(text, 3) == [None, None, None]
    assert parse_programs("\x00\x01 ``` garbage", 2) == [None, None]
    assert ast_key("def f(x):\n\x00") is None


def test_code_duplicates_by_ast():
    same = "def f(x):\n    # double then add one\n    return (x * 2) + 1\n"
    assert ast_key(F1) == ast_key(same)
    assert ast_key(F1) != ast_key(F2)
    cfg = RunConfig(task={"name": "synthetic_code"})
    with open_sandbox(SandboxConfig(backend="process", workers=1)) as sb:
        task = get_task(cfg, sb)
        from components.tasks.synthetic_code import generate_problems

        row = generate_problems(1, seed=0)[0]
        answers = task.parse_answers(blocks(F1, same, F2), 3)
        scored = task.score([row], [answers])
    assert scored.mask.tolist() == [[True, False, True]]
    assert torch.equal(scored.rewards[0, 1], torch.zeros(task.k))


def test_code_format_parse_round_trip():
    task = get_task(RunConfig(task={"name": "synthetic_code"}), sandbox=object())
    for m in (1, 2, 4):
        programs = [f"def f(x):\n    return x+{i}" for i in range(1, m + 1)]
        text = task.format_answers(programs, m)
        assert [p.rstrip() for p in task.parse_answers(text, m)] == programs
        if m > 1:
            assert text.count("\n---\n") == m - 1


def test_every_task_implements_the_protocol():
    from components.tasks import Task, objective_names

    for name in ("maze", "synthetic_code", "livecodebench", "humaneval"):
        cfg = RunConfig(task={"name": name})
        task = get_task(cfg, sandbox=object())
        assert isinstance(task, Task)
        assert task.name == name
        assert tuple(task.objective_names) == objective_names(cfg.task)
        weights = task.fixed_weights
        assert weights.shape == (len(task.objective_names),) and torch.isclose(weights.sum(), torch.tensor(1.0))
