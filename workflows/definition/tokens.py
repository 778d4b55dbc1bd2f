"""Token counting: the fake provider's exact count and a conservative estimate for budgets."""

from __future__ import annotations

import re

# Words and single punctuation marks: real tokenizers never merge across these boundaries.
_PIECE = re.compile(r"\w+|[^\w\s]")
_CHARS_PER_TOKEN = 4


def fake_token_count(text: str) -> int:
    """What the fake provider reports: one token per 4 characters, rounded up."""
    return _ceil_div(len(text), _CHARS_PER_TOKEN)


def count_tokens(text: str) -> int:
    """A budget estimate that is never below ``fake_token_count`` and higher for finely split text."""
    if not text:
        return 0
    pieces = sum(_piece_tokens(match.group()) for match in _PIECE.finditer(text))
    return max(fake_token_count(text), pieces)


def _piece_tokens(piece: str) -> int:
    if piece.isascii():
        return _ceil_div(len(piece), _CHARS_PER_TOKEN)
    # Tokenizers spend at least one token per non-ASCII character (often more than one).
    wide = sum(1 for char in piece if not char.isascii())
    return wide + _ceil_div(len(piece) - wide, _CHARS_PER_TOKEN)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
