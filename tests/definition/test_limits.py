from decimal import Decimal

import pytest

from workflows.definition import LIMIT_FIELDS, SYSTEM_DEFAULTS, Problem, check_limits, resolve_limits


def test_the_documented_fields_and_defaults():
    assert LIMIT_FIELDS == ("budget_usd", "budget_mode", "max_iterations", "timeout_seconds")
    assert dict(SYSTEM_DEFAULTS) == {
        "budget_usd": None,
        "budget_mode": "audit",
        "max_iterations": 10,
        "timeout_seconds": None,
    }


def test_the_largest_limits_are_accepted():
    raw = {"budget_usd": "1000000000", "max_iterations": 500, "timeout_seconds": 366 * 24 * 3600}

    cleaned, problems = check_limits(raw, path="limits")

    assert problems == []
    assert cleaned == {"budget_usd": Decimal("1000000000"), "max_iterations": 500, "timeout_seconds": 31622400}


def test_valid_limits_are_cleaned():
    raw = {"budget_usd": "2.5", "budget_mode": "enforce", "max_iterations": 500, "timeout_seconds": 1}

    assert check_limits(raw, path="limits") == (
        {"budget_usd": Decimal("2.500000"), "budget_mode": "enforce", "max_iterations": 500, "timeout_seconds": 1},
        [],
    )


@pytest.mark.parametrize("budget", [3, 0.25, "0.000001", Decimal("7.5"), "1000000000"])
def test_budget_accepts_numbers_and_numeric_strings(budget):
    cleaned, problems = check_limits({"budget_usd": budget}, path="limits")

    assert problems == []
    assert cleaned["budget_usd"] == Decimal(str(budget))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("budget_usd", 0, "greater than 0"),
        ("budget_usd", "-1", "greater than 0"),
        ("budget_usd", "NaN", "finite"),
        ("budget_usd", float("inf"), "finite"),
        ("budget_usd", True, "must be a number"),
        ("budget_usd", "five", "must be a number"),
        ("budget_usd", "0.0000001", "more than 6 decimal places"),
        ("budget_mode", "strict", "'audit' or 'enforce'"),
        ("budget_mode", ["audit"], "'audit' or 'enforce'"),
        ("max_iterations", 0, "between 1 and 500"),
        ("max_iterations", 501, "between 1 and 500"),
        ("max_iterations", True, "whole number"),
        ("max_iterations", 1.5, "whole number"),
        ("max_iterations", "10", "whole number"),
        ("budget_usd", "1000000000.000001", "at most 1000000000"),
        ("budget_usd", 10**12, "at most 1000000000"),
        ("timeout_seconds", 0, "between 1 and 31622400"),
        ("timeout_seconds", 31622401, "between 1 and 31622400"),
        ("timeout_seconds", 2**63, "between 1 and 31622400"),
        ("timeout_seconds", 2.5, "whole number"),
    ],
)
def test_invalid_limits_are_problems_at_their_path(key, value, message):
    cleaned, problems = check_limits({key: value}, path="workflow.limits")

    assert cleaned == {}
    assert [problem.path for problem in problems] == [f"workflow.limits.{key}"]
    assert message in problems[0].message


def test_none_means_not_set_and_unknown_keys_are_reported_with_the_rest():
    raw = {"budget_usd": None, "max_iterations": 0, "budget": 5, "timeout_seconds": 30}

    cleaned, problems = check_limits(raw, path="limits")

    assert cleaned == {"timeout_seconds": 30}
    assert [problem.path for problem in problems] == ["limits.max_iterations", "limits.budget"]
    assert problems[1].message.startswith("unknown key 'budget'")


def test_limits_must_be_a_mapping():
    assert check_limits(["budget_usd"], path="limits") == ({}, [Problem("limits", "must be a mapping")])


@pytest.mark.parametrize(
    ("run", "workflow", "team", "budget", "source"),
    [
        ({"budget_usd": Decimal("1")}, {"budget_usd": Decimal("2")}, {"budget_usd": Decimal("3")}, Decimal("1"), "run"),
        ({"budget_usd": None}, {"budget_usd": Decimal("2")}, {"budget_usd": Decimal("3")}, Decimal("2"), "workflow"),
        ({}, {}, {"budget_usd": Decimal("3")}, Decimal("3"), "team"),
        ({}, {"budget_usd": None}, {}, None, "system"),
    ],
)
def test_each_limit_comes_from_the_first_layer_that_sets_it(run, workflow, team, budget, source):
    resolved = resolve_limits(run=run, workflow=workflow, team=team)

    assert (resolved.budget_usd, resolved.sources["budget_usd"]) == (budget, source)


def test_fields_resolve_independently():
    resolved = resolve_limits(
        run={"max_iterations": 3},
        workflow={"budget_mode": "enforce", "max_iterations": 20},
        team={"timeout_seconds": 60, "budget_mode": "audit"},
    )

    assert (resolved.budget_usd, resolved.budget_mode, resolved.max_iterations, resolved.timeout_seconds) == (
        None,
        "enforce",
        3,
        60,
    )
    assert resolved.sources == {
        "budget_usd": "system",
        "budget_mode": "workflow",
        "max_iterations": "run",
        "timeout_seconds": "team",
    }


def test_the_operators_workflow_setting_ranks_between_the_run_and_the_definition():
    setting = {"budget_usd": Decimal("0.5"), "budget_mode": "enforce"}
    definition = {"budget_usd": Decimal("9"), "budget_mode": "audit", "max_iterations": 7}

    resolved = resolve_limits(run={}, workflow_setting=setting, workflow=definition, team={"max_iterations": 3})
    assert (resolved.budget_usd, resolved.budget_mode, resolved.max_iterations) == (Decimal("0.5"), "enforce", 7)
    assert resolved.sources == {
        "budget_usd": "workflow_setting",
        "budget_mode": "workflow_setting",
        "max_iterations": "workflow",
        "timeout_seconds": "system",
    }
    overridden = resolve_limits(run={"budget_usd": Decimal("2")}, workflow_setting=setting, workflow=definition, team={})
    assert (overridden.budget_usd, overridden.sources["budget_usd"]) == (Decimal("2"), "run")
    unset = resolve_limits(run={}, workflow_setting={"budget_usd": None, "budget_mode": None}, workflow=definition, team={})
    assert (unset.budget_usd, unset.sources["budget_usd"]) == (Decimal("9"), "workflow")


def test_a_run_request_replaces_the_operators_budget_and_mode_only_together():
    setting = {"budget_usd": Decimal("0.4"), "budget_mode": "enforce"}

    mode_only = resolve_limits(run={"budget_mode": "audit"}, workflow_setting=setting, workflow={}, team={})
    assert (mode_only.budget_usd, mode_only.budget_mode) == (Decimal("0.4"), "enforce")
    assert (mode_only.sources["budget_usd"], mode_only.sources["budget_mode"]) == ("workflow_setting", "workflow_setting")

    both = resolve_limits(
        run={"budget_usd": Decimal("2"), "budget_mode": "audit"}, workflow_setting=setting, workflow={}, team={}
    )
    assert (both.budget_usd, both.budget_mode, both.sources["budget_mode"]) == (Decimal("2"), "audit", "run")
    # Without an operator's budget a request's mode applies on its own, as before.
    unset = resolve_limits(run={"budget_mode": "enforce"}, workflow_setting={}, workflow={"budget_usd": Decimal("9")}, team={})
    assert (unset.budget_mode, unset.sources["budget_mode"]) == ("enforce", "run")
