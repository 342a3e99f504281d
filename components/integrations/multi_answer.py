"""Multi-answer prompts and the default answer parser, shared by the TRL and verl integrations.

VPO_SPEC §3: the prompt asks for m genuinely different answers after a short
shared reasoning part, each in numbered tags; every parsed answer is scored
separately. Plain Python, no framework imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from components.tasks.answers import parse_tagged, tag_name

ANSWER_TAG = "response"
"""The default answer tag: ``<response_1>...</response_1>`` (``<response>`` when m = 1)."""

AnswerParser = Callable[[str, int], list[str | None]]
"""``parser(completion_text, m)`` -> exactly m answers, None where missing or unparseable."""


def multi_answer_prompt(prompt: str | list[dict[str, Any]], num_answers: int, tag: str = ANSWER_TAG):
    """Rewrite a prompt (plain text or a list of chat messages) into the multi-answer form.

    Appends the VPO_SPEC §3 instruction: reason briefly, then give m genuinely
    different answers in numbered tags ``<tag_1>..</tag_1> ... <tag_m>..</tag_m>``
    (m = 1: one ``<tag>..</tag>``). A conversational prompt gets the instruction at
    the end of its last message; the input is never modified.
    """
    if num_answers < 1:
        raise ValueError(f"num_answers must be >= 1 (got {num_answers})")
    if num_answers == 1:
        ask = f"Think briefly, then give your answer as <{tag}>...</{tag}>."
    else:
        first, last = tag_name(tag, 1, num_answers), tag_name(tag, num_answers, num_answers)
        ask = (
            f"Think briefly, then give {num_answers} genuinely different answers, each in its "
            f"own numbered tag: <{first}>...</{first}> ... <{last}>...</{last}>."
        )
    if isinstance(prompt, str):
        return f"{prompt.rstrip()}\n\n{ask}"
    if not prompt or not isinstance(prompt[-1].get("content"), str):
        raise ValueError("a conversational prompt needs a last message with string content")
    return [*prompt[:-1], {**prompt[-1], "content": f"{prompt[-1]['content'].rstrip()}\n\n{ask}"}]


def parse_responses(text: str, num_answers: int) -> list[str | None]:
    """The default parser: the stripped contents of ``<response_i>`` tags, i = 1..m."""
    return [None if a is None else a.strip() for a in parse_tagged(text, ANSWER_TAG, num_answers)]
