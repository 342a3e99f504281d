"""Maze task (VPO_SPEC §7): generator invariants checked by an independent BFS, simulator, oracle."""

from __future__ import annotations

import pytest
import torch

from components.config import RunConfig
from components.tasks import get_task
from components.tasks.maze import Maze, generate_mazes, maze_row, oracle_routes, simulate

DIRS = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}


# ----------------------------------------------------------------------------- independent reference


def read_grid(text: str) -> dict:
    """Parse the rendered grid without the task's code."""
    lines = text.split("\n")
    cells = {(r, c): ch for r, line in enumerate(lines) for c, ch in enumerate(line)}
    where = {ch: [rc for rc, x in cells.items() if x == ch] for ch in "SEGDLB#."}
    return {"n": len(lines), "cells": cells, **where}


def neighbours(g: dict, avoid_lava: bool) -> dict:
    n, cells = g["n"], g["cells"]
    ok = {rc for rc, ch in cells.items() if ch != "#" and not (avoid_lava and ch == "L")}
    return {
        rc: [(rc[0] + dr, rc[1] + dc) for dr, dc in DIRS.values() if (rc[0] + dr, rc[1] + dc) in ok]
        for rc in ok
        if 0 <= rc[0] < n
    }


def shortest_collecting(g: dict, targets: list, avoid_lava: bool) -> float:
    """BFS over (cell, visited-target bitmask) from S; E ends the walk. Steps to reach E with all targets."""
    adj = neighbours(g, avoid_lava)
    start, end = g["S"][0], g["E"][0]
    bit = {t: 1 << i for i, t in enumerate(targets)}
    full = (1 << len(targets)) - 1
    first = (start, bit.get(start, 0))
    seen = {first}
    frontier = [first]
    steps = 0
    while frontier:
        steps += 1
        nxt = []
        for cell, mask in frontier:
            for nb in adj[cell]:
                state = (nb, mask | bit.get(nb, 0))
                if nb == end:
                    if state[1] == full:
                        return steps
                    continue  # the trajectory ends on E
                if state not in seen:
                    seen.add(state)
                    nxt.append(state)
        frontier = nxt
    return float("inf")


def corner_zone(n: int, corner: tuple[int, int]) -> set:
    return {(r, c) for r in range(n) for c in range(n) if max(abs(r - corner[0]), abs(c - corner[1])) <= 2}


@pytest.fixture(scope="module")
def mazes() -> list[Maze]:
    return generate_mazes(1000, seed=123)


# ----------------------------------------------------------------------------- generator


def test_thousand_mazes_satisfy_invariants(mazes):
    assert len(mazes) == 1000
    for maze in mazes:
        g = read_grid(maze_row(maze, "x")["grid"])
        n, budget = g["n"], maze.budget
        assert n == 9
        corners = {(0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1)}
        (s,), (e,), (b,) = g["S"], g["E"], g["B"]
        assert s in corners and e == (n - 1 - s[0], n - 1 - s[1])
        assert b == (n // 2, n // 2)
        gold_corner, diamond_corner = (s[0], e[1]), (e[0], s[1])
        if not set(g["G"]) <= corner_zone(n, gold_corner):
            gold_corner, diamond_corner = diamond_corner, gold_corner
        assert set(g["G"]) <= corner_zone(n, gold_corner) and 3 <= len(g["G"]) <= 5
        assert set(g["D"]) <= corner_zone(n, diamond_corner) and 3 <= len(g["D"]) <= 5
        assert gold_corner in g["G"] and diamond_corner in g["D"]
        assert 3 <= len(g["L"]) <= 5
        assert not set(g["L"]) & set().union(*(corner_zone(n, c) for c in corners))

        # a safe (lava-free) path fits the budget
        assert shortest_collecting(g, [], avoid_lava=True) <= budget
        # one corner detour (every gold item, lava-free) fits
        via_gold = shortest_collecting(g, g["G"], avoid_lava=True)
        assert via_gold <= budget
        # visiting both corners never fits, even through lava
        assert shortest_collecting(g, [gold_corner, diamond_corner], avoid_lava=False) > budget


def test_budget_is_longest_full_detour_plus_seven(mazes):
    for maze in mazes[:100]:
        g = read_grid(maze.render())
        via = [shortest_collecting(g, g[z], avoid_lava=True) for z in "GD"]
        assert maze.budget == max(via) + 7


def test_generator_is_deterministic_per_seed():
    a, b, c = generate_mazes(20, seed=5), generate_mazes(20, seed=5), generate_mazes(20, seed=6)
    assert [m.render() for m in a] == [m.render() for m in b]
    assert [m.budget for m in a] == [m.budget for m in b]
    assert [m.render() for m in a] != [m.render() for m in c]
    # instance i does not depend on how many were asked for
    assert [m.render() for m in generate_mazes(5, seed=5)] == [m.render() for m in a[:5]]


def test_render_round_trip(mazes):
    for maze in mazes[:50]:
        again = Maze.from_text(maze.render(), maze.budget)
        assert again.render() == maze.render()
        assert (again.start, again.end, again.gold, again.diamond, again.lava) == (
            maze.start, maze.end, maze.gold, maze.diamond, maze.lava)


# ----------------------------------------------------------------------------- simulator

GRID = "\n".join([
    "S.G#E",
    ".#.#.",
    "....D",
    ".#.#.",
    "L.B..",
])


def tiny_maze(budget: int = 20) -> Maze:
    return Maze.from_text(GRID, budget)


@pytest.mark.parametrize(
    "route, expected",
    [
        ("DDRRRRUU", [1, 0, 1, 1]),  # via the diamond
        ("RRDDRRUU", [1, 1, 1, 1]),  # gold, then the diamond on the way
        ("RRRRDDRRUU", [1, 1, 1, 1]),  # R into # twice: blocked, the steps still count
        ("DDLRRRRUU", [1, 0, 1, 1]),  # L off the grid: stays in place
        ("D,D,R,R,R,R,U,U", [1, 0, 1, 1]),
        ("DD", [0, 0, 0, 0]),  # never reaches E
        ("DDRRRRUUDDLLUU", [1, 0, 1, 1]),  # gold after E does not count: the trajectory ended
        ("DDDDRRRRUUUU", [1, 0, 1, 0]),  # through the lava (1 of 1) and the bonus (no effect)
    ],
)
def test_simulate_rules(route, expected):
    from components.tasks.maze import parse_route

    assert simulate([tiny_maze()], [parse_route(route)])[0].tolist() == expected


def test_lava_fraction_and_no_lava():
    two_lava = Maze.from_text(GRID.replace("S.G", "SLG"), 20)
    assert len(two_lava.lava) == 2
    assert simulate([two_lava], ["RRDDRRUU"])[0].tolist() == [1, 1, 1, 0.5]
    no_lava = Maze.from_text(GRID.replace("L", "."), 20)
    assert simulate([no_lava], ["DDDDRRRRUUUU"])[0].tolist() == [1, 0, 1, 1]


def test_budget_exceeded_is_not_completed():
    assert simulate([tiny_maze(budget=8)], ["RRDDRRUU"])[0].tolist() == [1, 1, 1, 1]
    assert simulate([tiny_maze(budget=7)], ["RRDDRRUU"])[0].tolist() == [0, 0, 0, 0]


def test_simulate_is_batched_over_mazes(mazes):
    batch = mazes[:64]
    routes = [oracle_routes(m)["gold"] for m in batch]
    together = simulate(batch, routes)
    alone = [simulate([m], [r])[0].tolist() for m, r in zip(batch, routes, strict=True)]
    assert together.tolist() == alone


# ----------------------------------------------------------------------------- oracle and task


def test_oracle_routes_are_valid_and_of_three_kinds(mazes):
    for maze in mazes[:200]:
        routes = oracle_routes(maze)
        r = simulate([maze] * 3, [routes["gold"], routes["diamond"], routes["direct"]])
        assert r[:, 0].tolist() == [1, 1, 1]  # all complete
        assert r[:, 3].tolist() == [1, 1, 1]  # all lava-free
        assert r[0, 1] == 1 and r[1, 2] == 1  # full gold / full diamond
        assert r[0, 2] < 1 and r[1, 1] < 1  # never both (conflict by construction)
        assert len(routes["direct"]) <= min(len(routes["gold"]), len(routes["diamond"]))


def test_task_scores_oracle_answers_through_text(mazes):
    task = get_task(RunConfig(task={"name": "maze"}))
    rows = [maze_row(m, f"m{i}") for i, m in enumerate(mazes[:16])]
    for m in (1, 3, 5):
        texts = [task.format_answers(task.oracle_answers(row, m), m) for row in rows]
        answers = [task.parse_answers(t, m) for t in texts]
        scored = task.score(rows, answers)
        assert scored.rewards.shape == (16, m, 4) and scored.mask.shape == (16, m)
        assert scored.mask.all()
        assert (scored.rewards[:, :, 0] == 1).all()
        best = (scored.rewards * task.fixed_weights).sum(-1).max(-1).values
        assert torch.all(best >= 0.75)
        if m >= 3:
            union = scored.rewards.max(dim=1).values
            assert torch.all(union == 1)  # the set covers every objective
        assert not task.is_correct(scored.rewards).any()


def test_prompt_is_short_plain_text_with_the_grid(mazes):
    task = get_task(RunConfig(task={"name": "maze"}))
    row = maze_row(mazes[0], "m0")
    single, multi = task.build_prompt(row, 1), task.build_prompt(row, 3)
    assert row["grid"] in single and str(row["budget"]) in single
    assert "<route>" in single and "<route_1>" not in single
    assert "<route_1>" in multi and "<route_3>" in multi and "3 different" in multi
    assert len(multi) < 400 and multi.isascii()
    assert task.objective_names == ("completion", "gold", "diamond", "safety")
    assert torch.allclose(task.fixed_weights, torch.full((4,), 0.25))
