"""Conductor's output constraints: checked at upload as conductor checks them, sent to a model as it
can take them, and an answer checked against them."""

import pytest

from workflows.definition import DefinitionError, json_schema, load_definition, output_problems

FIELDS = {
    "verdict": {"type": "string", "enum": ["approve", "reject"]},
    "ticket": {"type": "string", "pattern": r"^T-\d+$"},
    "score": {"type": "number", "minimum": 0, "maximum": 10},
    "summary": {"type": "string", "minLength": 3, "maxLength": 20},
    "notes": {"type": "string", "nullable": True},
    "extra": {"type": "string", "required": False},
}
GOOD = {"verdict": "approve", "ticket": "T-42", "score": 7.5, "summary": "fine", "notes": None}


def test_an_answer_within_every_constraint_fits_and_each_broken_one_is_named():
    assert output_problems(GOOD, FIELDS) == []
    bad = {"verdict": "maybe", "ticket": "42", "score": 11, "summary": "no", "notes": 3, "extra": None}
    assert output_problems(bad, FIELDS) == [
        "output.verdict must be one of ['approve', 'reject'], not 'maybe'",
        "output.ticket does not match the pattern '^T-\\\\d+$'",
        "output.score must be at most 10, not 11",
        "output.summary must be at least 3 characters, not 2",
        "output.notes must be a string, not an integer",
    ]


def test_a_pattern_that_backtracks_for_ever_costs_a_second_not_a_worker():
    fields = {"x": {"type": "string", "pattern": r"^(a|aa)+$"}}
    [problem] = output_problems({"x": "a" * 60 + "b"}, fields)
    assert problem == "output.x could not be matched against the pattern '^(a|aa)+$' within 1 s"


def test_the_schema_sent_to_a_model_has_the_enum_and_says_the_rest():
    schema = json_schema(FIELDS)
    assert schema["required"] == list(FIELDS)
    assert schema["properties"]["verdict"] == {"type": "string", "enum": ["approve", "reject"]}
    assert schema["properties"]["notes"]["type"] == ["string", "null"]
    assert schema["properties"]["extra"]["type"] == ["string", "null"]
    assert schema["properties"]["ticket"]["description"] == "pattern '^T-\\\\d+$'"


@pytest.mark.parametrize(
    ("field", "key", "message"),
    [
        ({"type": "number", "pattern": "x"}, "pattern", "string field only"),
        ({"type": "string", "minimum": 1}, "minimum", "number field only"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength", "above maxLength"),
        ({"type": "string", "enum": []}, "enum", "at least one"),
        ({"type": "string", "enum": ["a", None]}, "enum", "nullable"),
        ({"type": "object", "enum": ["a"]}, "enum", "string, number or boolean"),
        ({"type": "string", "pattern": "("}, "pattern", "not a regular expression"),
        ({"type": "string", "nullable": "yes"}, "nullable", "true or false"),
    ],
)
def test_a_constraint_conductor_would_refuse_is_refused_at_upload(field, key, message):
    definition = {
        "workflow": {"name": "w", "entry_point": "a", "runtime": {"provider": "fake", "default_model": "m"}},
        "agents": [{"name": "a", "prompt": "hi", "output": {"x": field}}],
    }
    with pytest.raises(DefinitionError) as refused:
        load_definition(definition)
    assert [(p.path, message in p.message) for p in refused.value.problems] == [(f"agents[0].output.x.{key}", True)]
