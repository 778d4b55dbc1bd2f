from decimal import Decimal

import pytest

from workflows.definition import InputSpec, Problem, check_inputs, render, template_context


def spec(type_: str, *, required: bool = False, default: object = None) -> InputSpec:
    return InputSpec("x", type_, required, default, default is not None, "")


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("string", "hi"),
        ("integer", 3),
        ("number", 3),
        ("number", 2.5),
        ("number", Decimal("2.5")),
        ("boolean", False),
        ("array", [1, "a"]),
        ("object", {"k": [1]}),
    ],
)
def test_values_of_the_declared_type_are_accepted(type_, value):
    assert check_inputs({"x": spec(type_)}, {"x": value}) == ({"x": value}, [])


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("string", 3, "must be a string, not an integer"),
        ("integer", True, "must be an integer, not a boolean"),
        ("integer", 1.5, "must be an integer, not a number"),
        ("number", True, "must be a number, not a boolean"),
        ("number", "1", "must be a number, not a string"),
        ("number", float("nan"), "must be a number, not a non-finite number"),
        ("boolean", 1, "must be a boolean, not an integer"),
        ("array", (1, 2), "must be an array (list), not tuple"),
        ("object", [], "must be an object (mapping), not a list"),
    ],
)
def test_values_of_another_type_are_problems(type_, value, message):
    assert check_inputs({"x": spec(type_)}, {"x": value}) == ({}, [Problem("inputs.x", message)])


def test_defaults_fill_gaps_and_are_never_shared_between_runs():
    declared = {"tags": InputSpec("tags", "array", False, ["a"], True, "")}

    values, problems = check_inputs(declared, {})
    values["tags"].append("b")

    assert problems == []
    assert check_inputs(declared, {"tags": None})[0] == {"tags": ["a"]}


@pytest.mark.parametrize(
    ("type_", "empty"),
    [("string", ""), ("number", 0), ("integer", 0), ("boolean", False), ("array", []), ("object", {})],
)
def test_optional_inputs_without_a_default_are_their_types_empty_value_as_in_conductor(type_, empty):
    values, problems = check_inputs({"x": spec(type_)}, {"x": None})

    assert (values, problems) == ({"x": empty}, [])
    assert type(values["x"]) is type(empty)


def test_an_optional_string_input_without_a_default_renders_as_nothing():
    values, _ = check_inputs({"x": spec("string")}, {})

    assert render("[{{ workflow.input.x }}]", template_context(inputs=values, outputs={}), where="p") == "[]"


def test_every_problem_is_reported():
    declared = {"topic": spec("string", required=True), "depth": spec("integer")}

    values, problems = check_inputs(declared, {"depth": "deep", "colour": "red"})

    assert values == {}
    assert problems == [
        Problem("inputs.colour", "unknown input 'colour' (declared: topic, depth)"),
        Problem("inputs.topic", "required input 'topic' is missing"),
        Problem("inputs.depth", "must be an integer, not a string"),
    ]


def test_inputs_must_be_a_mapping():
    assert check_inputs({}, ["x"]) == ({}, [Problem("inputs", "must be a mapping, not a list")])
