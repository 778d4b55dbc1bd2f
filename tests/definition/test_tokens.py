import random
import string

import pytest

from workflows.definition import count_tokens, fake_token_count


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("日本語", 1), ("x" * 4001, 1001)],
)
def test_fake_token_count_is_characters_over_four_rounded_up(text, expected):
    assert fake_token_count(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("plain words here", 5),  # "plain" and "words" are 2 tokens each
        ("a,b,c,d", 7),  # every word and mark is a piece
        ("internationalization", 5),  # a 20-character word counts as 20 / 4
        ("日本語", 3),  # one per non-ASCII character
        ("café", 2),  # "caf" plus "é"
        ("🙂🙂", 2),
        ("     ", 2),  # whitespace still costs what the fake provider charges
    ],
)
def test_count_tokens(text, expected):
    assert count_tokens(text) == expected


def test_count_tokens_is_never_below_what_the_fake_provider_reports():
    rng = random.Random(7)
    alphabet = string.printable + "éü日本語🙂—"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))

        assert count_tokens(text) >= fake_token_count(text)
