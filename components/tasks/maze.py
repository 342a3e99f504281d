"""The maze task of VPO_SPEC §7: a grid world whose four objectives conflict by construction.

Layout (size n = 9 by default, odd). Cells with both coordinates even are
rooms; Prim's algorithm carves a spanning tree of rooms through the cells
between them, then a few more of those walls are opened to make cycles. The
maze is rendered one character per cell::

    # wall   . floor   S start   E exit   G gold   D diamond   L lava   B bonus

* S and E sit on the two ends of a random diagonal (corners are rooms).
* The gold zone and the diamond zone are the two other corners: 3-5 items
  each on floor cells within radius 2 (Chebyshev) of their corner.
* 3-5 lava tiles on floor cells outside the four corner zones and the centre.
* The centre tile is the "bonus" B: advertised in the prompt, no effect.

Definitions (our choices where §7 is silent):

* Moves ``U D L R`` (row -1 / +1, column -1 / +1). A move into a wall or off
  the grid leaves the agent in place but still counts as a step. The
  trajectory ends on the first arrival at E; moves after it are ignored.
* A route *completes* when it reaches E within ``budget`` steps; a route that
  needs more steps (or never reaches E) scores 0 on every objective.
* Rewards, k = 4, all zero unless completed:
  ``completion`` = 1; ``gold`` / ``diamond`` = fraction of the zone's items
  stepped on before (or at) arrival; ``safety`` = 1 - fraction of the maze's
  lava tiles stepped on. Fixed scalar = their mean.
* "Path via gold" = the shortest lava-free S->E route that collects *every*
  gold item (likewise diamond); "direct" = the shortest lava-free S->E route.
  budget = max(via gold, via diamond) + 7.
* Conflict filter: an instance is kept only if a lava-free direct route and
  both full-corner detours fit the budget, and no route at all (lava allowed)
  that steps on at least one gold *and* one diamond item reaches E within the
  budget. So a single route can reach a fixed scalar of at most 0.75; a set
  of routes can cover every objective.

Everything is deterministic in (seed, stream, index): instance i draws its
candidates from ``numpy.random.default_rng([seed, stream, i, attempt])``.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from components.tasks.answers import (
    all_ones,
    apply_chat_template,
    drop_duplicates,
    format_tagged,
    parse_tagged,
    tag_name,
    uniform_weights,
)
from components.tasks.base import Row, ScoredBatch

GENERATOR_VERSION = "maze-v1"
OBJECTIVES = ("completion", "gold", "diamond", "safety")
BUDGET_SLACK = 7
ZONE_RADIUS = 2
EXTRA_CYCLE_FRACTION = 0.5
"""Share of the walls between two rooms left closed by Prim's tree that are opened."""
MOVES = "UDLR"
_DELTAS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)  # U D L R
_WORDS = {"UP": "U", "DOWN": "D", "LEFT": "L", "RIGHT": "R"}
_INF = 1 << 20
_MAX_ATTEMPTS = 500
_PERMUTATIONS = {n: np.array(list(itertools.permutations(range(n))), dtype=np.int64) for n in range(1, 8)}


@dataclass(frozen=True, eq=False)
class Maze:
    """One instance. Cells are flat indices ``row * size + col``."""

    floor: np.ndarray
    """(size, size) bool: walkable cells (items, lava, S, E and B are walkable)."""
    start: int
    end: int
    gold: tuple[int, ...]
    diamond: tuple[int, ...]
    lava: tuple[int, ...]
    bonus: int
    budget: int

    @property
    def size(self) -> int:
        return int(self.floor.shape[0])

    def render(self) -> str:
        """The grid as ``size`` lines of ``size`` characters (see module docstring)."""
        chars = np.where(self.floor, ".", "#").astype("<U1").reshape(-1)
        for cells, ch in ((self.gold, "G"), (self.diamond, "D"), (self.lava, "L")):
            chars[list(cells)] = ch
        chars[self.bonus] = "B"
        chars[self.start] = "S"
        chars[self.end] = "E"
        return "\n".join("".join(r) for r in chars.reshape(self.size, self.size))

    @classmethod
    def from_text(cls, grid: str, budget: int) -> Maze:
        """Inverse of :meth:`render`. Raises ValueError on a malformed grid."""
        lines = grid.strip("\n").split("\n")
        size = len(lines)
        if any(len(line) != size for line in lines):
            raise ValueError(f"maze grid must be square, got line lengths {[len(x) for x in lines]}")
        chars = np.array([list(line) for line in lines]).reshape(-1)
        bad = set(chars.tolist()) - set("#.SEGDLB")
        if bad:
            raise ValueError(f"maze grid has unknown characters {sorted(bad)}")
        cells = {ch: tuple(int(i) for i in np.flatnonzero(chars == ch)) for ch in "SEGDLB"}
        if len(cells["S"]) != 1 or len(cells["E"]) != 1 or len(cells["B"]) != 1:
            raise ValueError("maze grid needs exactly one S, one E and one B")
        return cls(
            floor=(chars != "#").reshape(size, size),
            start=cells["S"][0],
            end=cells["E"][0],
            gold=cells["G"],
            diamond=cells["D"],
            lava=cells["L"],
            bonus=cells["B"][0],
            budget=int(budget),
        )


# ----------------------------------------------------------------------------- generation


def _carve_prim(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) bool floor: Prim's spanning tree over the even-coordinate rooms, plus cycles."""
    floor = np.zeros((size, size), dtype=bool)
    rooms = size // 2 + 1
    floor[0::2, 0::2] = True
    first = (int(rng.integers(rooms)) * 2, int(rng.integers(rooms)) * 2)
    in_tree = {first}
    frontier: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def add_edges(room: tuple[int, int]) -> None:
        r, c = room
        for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2)):
            nr, nc = r + dr, c + dc
            if 0 <= nr < size and 0 <= nc < size and (nr, nc) not in in_tree:
                frontier.append((room, (nr, nc)))

    add_edges(first)
    while frontier:
        a, b = frontier.pop(int(rng.integers(len(frontier))))
        if b in in_tree:
            continue
        floor[(a[0] + b[0]) // 2, (a[1] + b[1]) // 2] = True
        in_tree.add(b)
        add_edges(b)
    # Open half of the remaining walls between two rooms: extra cycles.
    walls = np.zeros((size, size), dtype=bool)
    walls[0::2, 1::2] = True
    walls[1::2, 0::2] = True
    closed = np.flatnonzero(walls.reshape(-1) & ~floor.reshape(-1))
    n_open = int(round(EXTRA_CYCLE_FRACTION * len(closed)))
    floor.reshape(-1)[rng.choice(closed, size=n_open, replace=False)] = True
    return floor


@lru_cache(maxsize=64)
def _zone(size: int, corner: tuple[int, int]) -> np.ndarray:
    """(size * size,) bool, read-only: cells within Chebyshev radius ZONE_RADIUS of a corner."""
    rows, cols = np.indices((size, size))
    zone = ((np.abs(rows - corner[0]) <= ZONE_RADIUS) & (np.abs(cols - corner[1]) <= ZONE_RADIUS)).reshape(-1)
    zone.flags.writeable = False
    return zone


def _candidate(rng: np.random.Generator, size: int) -> Maze:
    """A random instance before the conflict filter (budget 0)."""
    floor = _carve_prim(rng, size)
    last = size - 1
    corners = [(0, 0), (0, last), (last, last), (last, 0)]  # clockwise: i and i+2 are opposite
    s = int(rng.integers(4))
    start, end = corners[s], corners[(s + 2) % 4]
    gold_corner, diamond_corner = corners[(s + 1) % 4], corners[(s + 3) % 4]
    if rng.random() < 0.5:
        gold_corner, diamond_corner = diamond_corner, gold_corner
    centre = (size // 2, size // 2)
    floor[centre] = True

    def flat(rc: tuple[int, int]) -> int:
        return rc[0] * size + rc[1]

    def place(zone_cells: np.ndarray, low: int, high: int) -> tuple[int, ...]:
        count = min(int(rng.integers(low, high + 1)), len(zone_cells))
        return tuple(sorted(int(c) for c in rng.choice(zone_cells, size=count, replace=False)))

    flat_floor = floor.reshape(-1)

    def zone_items(corner: tuple[int, int]) -> tuple[int, ...]:
        # The corner cell always holds an item; 2-4 more on the zone's other floor cells.
        others = np.flatnonzero(_zone(size, corner) & flat_floor)
        others = others[others != flat(corner)]
        return tuple(sorted((flat(corner), *place(others, 2, 4))))

    gold, diamond = zone_items(gold_corner), zone_items(diamond_corner)
    inside = flat_floor.copy()
    for corner in corners:
        inside &= ~_zone(size, corner)
    inside[flat(centre)] = False
    lava = place(np.flatnonzero(inside), 3, 5)
    return Maze(floor, flat(start), flat(end), gold, diamond, lava, flat(centre), budget=0)


def _bfs(floor: np.ndarray, sources: np.ndarray, enterable: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    """Step distances from each source, batched over mazes.

    floor (B, n, n) bool; sources (B, s) flat cells; enterable (B, n*n) cells a
    path may step on; blocked (B, n*n) cells a path may end on but not pass
    through (E: the trajectory stops there). Returns (B, s, n*n) int64, _INF
    where unreachable.
    """
    b, n = floor.shape[0], floor.shape[1]
    s = sources.shape[1]
    onehot = np.zeros((b, s, n * n), dtype=bool)
    np.put_along_axis(onehot, sources[:, :, None], True, axis=2)
    can_enter = (floor.reshape(b, 1, n * n) & enterable[:, None, :]).reshape(b, 1, n, n)
    can_expand = (can_enter.reshape(b, 1, n * n) & ~blocked[:, None, :]) | onehot
    can_expand = can_expand.reshape(b, s, n, n)
    frontier = onehot.reshape(b, s, n, n)
    visited = frontier.copy()
    dist = np.full((b, s, n, n), _INF, dtype=np.int64)
    dist[frontier] = 0
    step = 0
    while frontier.any():
        f = frontier & can_expand
        nxt = np.zeros_like(f)
        nxt[..., 1:, :] |= f[..., :-1, :]
        nxt[..., :-1, :] |= f[..., 1:, :]
        nxt[..., :, 1:] |= f[..., :, :-1]
        nxt[..., :, :-1] |= f[..., :, 1:]
        nxt &= can_enter & ~visited
        step += 1
        dist[nxt] = step
        visited |= nxt
        frontier = nxt
    return dist.reshape(b, s, n * n)


def _tour(dist: np.ndarray, first: int, items: Sequence[int], last_cell: int) -> tuple[int, np.ndarray]:
    """Shortest start -> (all items, any order) -> last_cell walk length and the item order.

    ``dist`` (s, n*n) rows are BFS distances from the sources; the item sources
    occupy rows ``first .. first + len(items) - 1`` and row 0 is the start.
    """
    k = len(items)
    perms = _PERMUTATIONS[k]
    rows = first + perms
    head = dist[0, np.asarray(items)[perms[:, 0]]]
    middle = dist[rows[:, :-1], np.asarray(items)[perms[:, 1:]]].sum(axis=1) if k > 1 else 0
    tail = dist[rows[:, -1], last_cell]
    total = np.minimum(head + middle + tail, _INF)
    best = int(np.argmin(total))
    return int(total[best]), perms[best]


@dataclass(frozen=True)
class RouteLengths:
    """Shortest route lengths of one instance (steps; _INF = impossible)."""

    direct: int
    via_gold: int
    via_diamond: int
    both: int
    """Shortest route (lava allowed) stepping on both zone corners (each holds an item)."""


def _corner_of(maze: Maze, items: tuple[int, ...]) -> int:
    """The zone's corner cell (the grid corner among its items)."""
    last = maze.size - 1
    corners = {0, last, last * maze.size, last * maze.size + last}
    found = [c for c in items if c in corners]
    if len(found) != 1:
        raise ValueError("maze zone must hold exactly one item on a grid corner")
    return found[0]


def _sources(m: Maze) -> np.ndarray:
    return np.array([m.start, m.end, *m.gold, *m.diamond], dtype=np.int64)


def route_lengths(mazes: Sequence[Maze]) -> list[RouteLengths]:
    """The lengths the budget and the conflict filter are defined by, batched (one maze size)."""
    if not mazes:
        return []
    size = mazes[0].size
    if any(m.size != size for m in mazes):
        raise ValueError("route_lengths: every maze in one call must have the same size")
    width = max(len(_sources(m)) for m in mazes)
    sources = np.stack([np.pad(_sources(m), (0, width - len(_sources(m))), mode="edge") for m in mazes])
    floor = np.stack([m.floor for m in mazes])
    lava = np.zeros((len(mazes), size * size), dtype=bool)
    blocked = np.zeros_like(lava)
    for i, m in enumerate(mazes):
        lava[i, list(m.lava)] = True
        blocked[i, m.end] = True
    safe = _bfs(floor, sources, ~lava, blocked)
    risky = _bfs(floor, sources, np.ones_like(lava), blocked)
    out = []
    for i, m in enumerate(mazes):
        g0, d0 = 2, 2 + len(m.gold)
        via_gold, _ = _tour(safe[i], g0, m.gold, m.end)
        via_diamond, _ = _tour(safe[i], d0, m.diamond, m.end)
        # Corner cells hold items: rows of the corner sources in the source list.
        gc, dc = _corner_of(m, m.gold), _corner_of(m, m.diamond)
        g_row, d_row = g0 + m.gold.index(gc), d0 + m.diamond.index(dc)
        r = risky[i]
        both = int(min(r[0, gc] + r[g_row, dc] + r[d_row, m.end], r[0, dc] + r[d_row, gc] + r[g_row, m.end], _INF))
        out.append(RouteLengths(int(safe[i, 0, m.end]), via_gold, via_diamond, both))
    return out


def _accept(lengths: RouteLengths) -> int | None:
    """The budget if the instance passes the conflict filter, else None."""
    if max(lengths.direct, lengths.via_gold, lengths.via_diamond) >= _INF:
        return None
    budget = max(lengths.via_gold, lengths.via_diamond) + BUDGET_SLACK
    return budget if lengths.both > budget else None


def generate_mazes(count: int, seed: int, size: int = 9, stream: int = 0, first: int = 0) -> list[Maze]:
    """Instances ``first .. first+count-1`` (all pass the conflict filter); instance i depends only on (seed, stream, i)."""
    if size < 9 or size % 2 == 0:
        raise ValueError(f"maze size must be odd and >= 9 (smaller grids almost never pass the conflict filter), got {size}")
    result: list[Maze | None] = [None] * count
    pending = list(range(count))
    for attempt in range(_MAX_ATTEMPTS):
        if not pending:
            break
        candidates = [_candidate(np.random.default_rng([seed, stream, first + i, attempt]), size) for i in pending]
        still = []
        for i, cand, lengths in zip(pending, candidates, route_lengths(candidates), strict=True):
            budget = _accept(lengths)
            if budget is None:
                still.append(i)
            else:
                result[i] = replace(cand, budget=budget)
        pending = still
    if pending:
        raise RuntimeError(f"no valid {size}x{size} maze after {_MAX_ATTEMPTS} attempts for {len(pending)} instances")
    return [m for m in result if m is not None]


# ----------------------------------------------------------------------------- simulation


def parse_route(text: str) -> str | None:
    """Normalise a route to a ``UDLR`` string: letters (``RRD``, ``R,R,D``) or words (``RIGHT, DOWN``).

    Returns None for an empty route or anything else.
    """
    tokens = [t for t in text.replace(",", " ").split() if t]
    if not tokens:
        return None
    upper = [t.upper() for t in tokens]
    if all(t in _WORDS for t in upper):
        return "".join(_WORDS[t] for t in upper)
    joined = "".join(upper)
    if all(ch in MOVES for ch in joined):
        return joined
    return None


def simulate(mazes: Sequence[Maze], routes: Sequence[str]) -> np.ndarray:
    """Rewards (N, 4) float32 of ``routes[i]`` (a ``UDLR`` string) on ``mazes[i]``, vectorised over N."""
    n = len(mazes)
    if n == 0:
        return np.zeros((0, len(OBJECTIVES)), dtype=np.float32)
    size = mazes[0].size
    if any(m.size != size for m in mazes):
        raise ValueError("simulate: every maze in one call must have the same size")
    cells = size * size
    floor = np.stack([m.floor.reshape(-1) for m in mazes])
    kinds = np.zeros((n, 3, cells), dtype=bool)  # gold, diamond, lava
    for i, m in enumerate(mazes):
        kinds[i, 0, list(m.gold)] = True
        kinds[i, 1, list(m.diamond)] = True
        kinds[i, 2, list(m.lava)] = True
    budget = np.array([m.budget for m in mazes])
    end = np.array([m.end for m in mazes])
    horizon = int(min(max(len(r) for r in routes), budget.max()))
    codes = np.full((n, max(horizon, 1)), -1, dtype=np.int64)
    lookup = {ch: i for i, ch in enumerate(MOVES)}
    for i, route in enumerate(routes):
        clipped = route[:horizon]
        codes[i, : len(clipped)] = [lookup[ch] for ch in clipped]

    pos = np.array([m.start for m in mazes], dtype=np.int64)
    visited = np.zeros((n, cells), dtype=bool)
    visited[np.arange(n), pos] = True
    arrived_at = np.full(n, _INF)
    rows = np.arange(n)
    for t in range(horizon):
        move = codes[:, t]
        active = (move >= 0) & (arrived_at == _INF)
        delta = _DELTAS[np.clip(move, 0, 3)]
        r, c = pos // size + delta[:, 0], pos % size + delta[:, 1]
        inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        target = np.clip(r, 0, size - 1) * size + np.clip(c, 0, size - 1)
        ok = active & inside & floor[rows, target]
        pos = np.where(ok, target, pos)
        visited[rows, pos] |= active
        arrived_at = np.where(active & (pos == end), t + 1, arrived_at)
    completed = arrived_at <= budget
    counts = kinds.sum(axis=2)
    fractions = (kinds & visited[:, None, :]).sum(axis=2) / np.maximum(counts, 1)
    rewards = np.stack([np.ones(n), fractions[:, 0], fractions[:, 1], 1.0 - fractions[:, 2]], axis=1)
    return (rewards * completed[:, None]).astype(np.float32)


# ----------------------------------------------------------------------------- oracle


def _walk(maze: Maze, dist_to_target: np.ndarray, cell: int, target: int, order: str, safe: np.ndarray) -> str:
    """Moves of a shortest path ``cell -> target`` descending ``dist_to_target``; ties broken by ``order``."""
    size = maze.size
    moves = []
    while cell != target:
        for ch in order:
            dr, dc = _DELTAS[MOVES.index(ch)]
            r, c = cell // size + dr, cell % size + dc
            if not (0 <= r < size and 0 <= c < size):
                continue
            nxt = int(r * size + c)
            if safe[nxt] and (nxt != maze.end or nxt == target) and dist_to_target[nxt] == dist_to_target[cell] - 1:
                moves.append(ch)
                cell = nxt
                break
        else:
            raise RuntimeError("oracle walk lost the shortest path (distance field inconsistent)")
    return "".join(moves)


def oracle_routes(maze: Maze, order: str = "UDLR") -> dict[str, str]:
    """Shortest lava-free routes of three kinds: ``gold`` (collects all gold), ``diamond``, ``direct``."""
    sources = _sources(maze)
    cells = maze.size * maze.size
    safe = maze.floor.reshape(-1).copy()
    safe[list(maze.lava)] = False
    blocked = np.zeros((1, cells), dtype=bool)
    blocked[0, maze.end] = True
    dist = _bfs(maze.floor[None], sources[None], safe[None], blocked)[0]
    row_of = {int(c): i for i, c in reversed(list(enumerate(sources)))}

    def chain(points: list[int]) -> str:
        return "".join(_walk(maze, dist[row_of[b]], a, b, order, safe) for a, b in itertools.pairwise(points))

    routes = {"direct": chain([maze.start, maze.end])}
    for name, items, first in (("gold", maze.gold, 2), ("diamond", maze.diamond, 2 + len(maze.gold))):
        _, perm = _tour(dist, first, items, maze.end)
        routes[name] = chain([maze.start, *(items[j] for j in perm), maze.end])
    return routes


# ----------------------------------------------------------------------------- task


@lru_cache(maxsize=4096)
def _maze_of(grid: str, budget: int) -> Maze:
    return Maze.from_text(grid, budget)


def maze_row(maze: Maze, row_id: str) -> Row:
    """The dataset row of an instance (plain JSON-able values)."""
    return {"id": row_id, "grid": maze.render(), "budget": int(maze.budget)}


def row_maze(row: Row) -> Maze:
    """The instance of a dataset row (cached)."""
    return _maze_of(row["grid"], int(row["budget"]))


class MazeTask:
    """VPO_SPEC §7 maze: answers are move strings in ``<route_i>`` tags, k = 4 objectives."""

    name = "maze"
    objective_names = OBJECTIVES
    tag = "route"

    @property
    def fixed_weights(self) -> torch.Tensor:
        return uniform_weights(len(OBJECTIVES))

    def build_prompt(self, row: Row, m: int, tokenizer: Any | None = None) -> str:
        head = (
            "Maze: S start, E exit, # wall, G gold, D diamond, L lava, B bonus.\n"
            f"{row['grid']}\n"
            f"Reach E in at most {row['budget']} moves (U D L R); collect G and D, avoid L.\n"
        )
        if m == 1:
            ask = "Answer as <route>moves</route>."
        else:
            first, last = tag_name(self.tag, 1, m), tag_name(self.tag, m, m)
            ask = f"Give {m} different routes: <{first}>moves</{first}> ... <{last}>moves</{last}>."
        return apply_chat_template(head + ask + "\n", tokenizer)

    def parse_answers(self, text: str, m: int) -> list[str | None]:
        return [None if raw is None else parse_route(raw) for raw in parse_tagged(text, self.tag, m)]

    def dedup_key(self, answer: str) -> Hashable:
        return parse_route(answer)

    def score(self, rows: Sequence[Row], answers: Sequence[Sequence[str | None]]) -> ScoredBatch:
        if len(rows) != len(answers):
            raise ValueError(f"score: {len(rows)} rows but {len(answers)} answer lists")
        m = max((len(a) for a in answers), default=0)
        rewards = torch.zeros(len(rows), m, len(OBJECTIVES), dtype=torch.float32)
        mask = torch.zeros(len(rows), m, dtype=torch.bool)
        slots: list[tuple[int, int]] = []
        mazes: list[Maze] = []
        routes: list[str] = []
        for b, (row, row_answers) in enumerate(zip(rows, answers, strict=True)):
            maze = row_maze(row)
            for i, answer in enumerate(drop_duplicates(list(row_answers), self.dedup_key)):
                route = None if answer is None else parse_route(answer)
                if route is not None:
                    slots.append((b, i))
                    mazes.append(maze)
                    routes.append(route)
        if slots:
            index = torch.tensor(slots)
            by_size: dict[int, list[int]] = {}
            for j, maze in enumerate(mazes):
                by_size.setdefault(maze.size, []).append(j)
            for js in by_size.values():
                values = torch.from_numpy(simulate([mazes[j] for j in js], [routes[j] for j in js]))
                rewards[index[js, 0], index[js, 1]] = values
            mask[index[:, 0], index[:, 1]] = True
        return ScoredBatch(rewards=rewards, mask=mask)

    def is_correct(self, reward: torch.Tensor) -> torch.Tensor:
        return all_ones(reward)

    def oracle_answers(self, row: Row, m: int) -> list[str]:
        """m = 1: the shorter full-corner detour. m > 1: gold, diamond, direct, then distinct variants."""
        maze = row_maze(row)
        base = oracle_routes(maze)
        if m == 1:
            return [min(base["gold"], base["diamond"], key=len)]
        picks = [base["gold"], base["diamond"], base["direct"]]
        for order in ("RLDU", "DURL", "LRUD"):
            if len(set(picks)) >= m:
                break
            variant = oracle_routes(maze, order)
            picks += [r for r in (variant["gold"], variant["diamond"], variant["direct"]) if r not in picks]
        # Still short: the base routes after k bumps into the border at S (k extra steps, same rewards).
        size = maze.size
        bump = "U" if maze.start // size == 0 else "D"
        base_kinds, k = picks[:3], 1
        while len(picks) < m:
            picks += [bump * k + r for r in base_kinds if len(r) + k <= maze.budget]
            k += 1
        return picks[:m]

    def format_answers(self, answers: Sequence[str], m: int) -> str:
        return format_tagged(answers, self.tag, m)
