"""Conductor's reasoning effort, and its context tier: the values each may take, and how much of a
call's output cap thinking may use.

Thinking is output: OpenAI counts reasoning tokens within `max_completion_tokens` and Anthropic
counts thinking within `max_tokens`, and both bill them at the output rate. So the cap the gate
prices holds the thinking too (model.output_cap), and the thinking budget sent to Anthropic is
fitted inside that cap (`thinking_budget`).
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import TemplateFailure

# Conductor's levels (its providers/reasoning.py, ReasoningEffort).
REASONING_EFFORTS = ("low", "medium", "high", "xhigh", "max")
# Conductor's Anthropic thinking budget for each level; 59,904 is its 64,000-token thinking cap less
# the 4,096 tokens it keeps for the answer. Here also what a step's default output cap adds for thinking.
THINKING_TOKENS: Mapping[str, int] = {"low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768, "max": 59904}
ANSWER_TOKENS = 4096  # what the thinking leaves the answer, when the cap has room (conductor's headroom)
MIN_THINKING_TOKENS = 1024  # the least budget_tokens Anthropic takes
# The least max_tokens of a step that reasons: the least thinking, and as much again for the answer.
MIN_REASONING_CAP = 2 * MIN_THINKING_TOKENS
# Conductor's context tiers (its providers/context_tier.py, ContextTier).
CONTEXT_TIERS = ("default", "long_context")


def is_template(value: object) -> bool:
    """Whether conductor renders the value before using it (its `is_jinja_template`)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def thinking_budget(effort: str, cap: int) -> int:
    """Anthropic's `budget_tokens` for `effort` in a call of at most `cap` output tokens: the level's
    budget, lowered where it would leave the answer less than ANSWER_TOKENS, or less than half of a
    cap below twice that. Always below `cap`, as Anthropic requires; at least MIN_THINKING_TOKENS
    for a cap of at least MIN_REASONING_CAP."""
    return min(THINKING_TOKENS[effort], cap - min(ANSWER_TOKENS, cap // 2))


def rendered_choice(text: str, choices: tuple[str, ...], *, where: str) -> str:
    """What a template rendered, stripped as conductor strips it, when it is one of `choices`;
    TemplateFailure naming what it rendered otherwise, an empty text included."""
    value = text.strip()
    if value not in choices:
        raise TemplateFailure(where, f"rendered {value[:80]!r}, which is not one of {', '.join(choices)}")
    return value
