"""Rendered text typed as conductor's `set` step types it."""

import pytest

from workflows.definition.coercion import MAX_COERCED_BYTES, coerce_rendered


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("acme/widgets", "acme/widgets"),
        ("true", True),
        ("42", 42),
        ("[triage, low]", ["triage", "low"]),
        ("{a: 1, b: [x]}", {"a": 1, "b": ["x"]}),
        ("2026-06-07", "2026-06-07"),  # a YAML date, kept as its ISO text
        ("   ", ""),
        ("key: [unclosed", "key: [unclosed"),  # not YAML: the text itself
        ("a: &x [1]\nb: *x", {"a": [1], "b": [1]}),
        ("{1: one}", "{1: one}"),  # a key JSON cannot hold: the text itself
    ],
)
def test_auto_reads_the_text_as_yaml_or_keeps_it(text, expected):
    assert coerce_rendered(text, "auto") == expected


def test_auto_keeps_text_too_long_to_read_as_yaml():
    text = "[" + "1, " * (MAX_COERCED_BYTES // 3) + "1]"
    assert coerce_rendered(text, "auto") == text


@pytest.mark.parametrize(
    ("text", "output_type", "expected"),
    [
        (" 007 ", "string", " 007 "),
        ("007", "integer", 7),
        ("1.5", "number", 1.5),
        ("3", "number", 3),
        ("Yes", "boolean", True),
        ("0", "boolean", False),
        ("[1, 2]", "list", [1, 2]),
        ("{a: b}", "dict", {"a": "b"}),
    ],
)
def test_a_named_type_is_read_as_that_type(text, output_type, expected):
    assert coerce_rendered(text, output_type) == expected


@pytest.mark.parametrize(
    ("text", "output_type"),
    [("x", "integer"), ("1.5", "integer"), ("nan", "number"), ("maybe", "boolean"), ("{a: b}", "list"), ("[1]", "dict")],
)
def test_text_that_is_not_of_the_named_type_is_refused(text, output_type):
    with pytest.raises(ValueError):
        coerce_rendered(text, output_type)
