"""Multi-answer prompting and parsing (VPO_SPEC §3), shared by every task.

Two answer formats:

* tagged (maze): ``<route_1>...</route_1> <route_2>...</route_2>``; with m = 1
  the un-numbered ``<route>...</route>``.
* fenced code (code tasks): m fenced ```` ```python ```` blocks separated by
  a line ``---``.

Parsers are lenient about what surrounds the answers (prose, reasoning, extra
answers beyond m are ignored) and strict about the answers themselves: a
missing tag or block is ``None``; what is inside is left to the task to parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

CODE_SEPARATOR = "---"
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def apply_chat_template(text: str, tokenizer: Any | None) -> str:
    """Wrap a user message in the tokenizer's chat template when it has one, else return it."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return text
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tag_name(tag: str, index: int, m: int) -> str:
    """``route`` for m == 1, ``route_3`` for the third of m > 1 answers."""
    return tag if m == 1 else f"{tag}_{index}"


def parse_tagged(text: str, tag: str, m: int) -> list[str | None]:
    """The raw contents of ``<tag_i>...</tag_i>`` for i = 1..m (first occurrence wins).

    With m == 1 both ``<tag>`` and ``<tag_1>`` are accepted. Unclosed or absent
    tags give ``None``; tags numbered above m are ignored.
    """
    out: list[str | None] = []
    for i in range(1, m + 1):
        names = [tag, f"{tag}_1"] if m == 1 else [f"{tag}_{i}"]
        found: list[tuple[int, str]] = []
        for name in names:
            match = re.search(rf"<{name}>(.*?)</{name}>", text, re.DOTALL)
            if match:
                found.append((match.start(), match.group(1)))
        out.append(min(found)[1] if found else None)
    return out


def format_tagged(answers: Sequence[str], tag: str, m: int) -> str:
    """One line per answer: ``<tag_i>answer</tag_i>`` (``<tag>`` when m == 1)."""
    _check_count(answers, m)
    return "\n".join(f"<{tag_name(tag, i, m)}>{a}</{tag_name(tag, i, m)}>" for i, a in enumerate(answers, 1))


def parse_code_blocks(text: str, m: int) -> list[str | None]:
    """The first m fenced code blocks, in order; ``None`` for each one missing.

    Separators (``---``) are optional when reading; blocks past the m-th are ignored.
    """
    blocks: list[str | None] = [b for b in _FENCE.findall(text)][:m]
    return blocks + [None] * (m - len(blocks))


def format_code_blocks(programs: Sequence[str], m: int) -> str:
    """m fenced python blocks separated by ``---`` lines."""
    _check_count(programs, m)
    fenced = [f"```python\n{p.rstrip()}\n```" for p in programs]
    return f"\n{CODE_SEPARATOR}\n".join(fenced)


def drop_duplicates(
    answers: Sequence[str | None], key: Callable[[str], Hashable]
) -> list[str | None]:
    """Replace every answer whose key was already seen (or whose key is None) by None."""
    seen: set[Hashable] = set()
    out: list[str | None] = []
    for answer in answers:
        k = None if answer is None else key(answer)
        if k is None or k in seen:
            out.append(None)
        else:
            seen.add(k)
            out.append(answer)
    return out


def all_ones(reward: torch.Tensor) -> torch.Tensor:
    """(..., k) -> (...) bool: every reward dimension equals 1 (the shared ``is_correct``)."""
    return (reward >= 1.0).all(dim=-1)


def uniform_weights(k: int) -> torch.Tensor:
    """(k,) float32 weights of the plain mean."""
    return torch.full((k,), 1.0 / k, dtype=torch.float32)


def _check_count(answers: Sequence[str], m: int) -> None:
    if len(answers) != m:
        raise ValueError(f"expected {m} answers, got {len(answers)}")
