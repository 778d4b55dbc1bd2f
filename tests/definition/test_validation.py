"""Conductor's `validator:` on an agent: read and checked at upload, and its pure rules (the prompts,
the verdict, what follows each of the steps an agent with a validator takes)."""

import json
from pathlib import Path

import pytest

from workflows.definition import (
    PROMPT_CHARS,
    RERUN_ROLE,
    VALIDATOR_ROLE,
    DefinitionError,
    Proceed,
    Rerun,
    Validate,
    ValidatorSpec,
    Verdict,
    WorkflowDefinition,
    after_step,
    counts_as_iteration,
    load_definition,
    usage_label,
    validation_feedback,
    validator_prompt,
    validator_system_prompt,
)
from workflows.definition.validation import verdict_of

RELEASE_NOTES = (Path(__file__).parent.parent / "conductor" / "release_notes.yaml").read_text()
PRICED = {"copilot": "openai"}


def document(**validator) -> dict:
    """A one-agent workflow on the fake provider whose agent has `validator`."""
    return {
        "workflow": {
            "name": "w",
            "entry_point": "a",
            "runtime": {"provider": "fake", "default_model": "writer"},
            "cost": {"pricing": {"writer": {"input_per_mtok": 1, "output_per_mtok": 2}}},
        },
        "agents": [{"name": "a", "prompt": "hi", "validator": validator}],
    }


def problems(source) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(source)
    return [(problem.path, problem.message) for problem in caught.value.problems]


def test_a_validator_is_read_with_conductor_s_defaults_and_stored_as_it_was_read():
    definition = load_definition(RELEASE_NOTES)
    drafter = definition.agent("drafter")

    assert drafter.validator.model == "sim-grader"
    assert drafter.validator.max_retries == 1
    assert drafter.validator.criteria.startswith("1. Every note describes")
    assert drafter.mock.rerun_output == {"notes": ["Exports of files over 2 GB no longer time out"]}
    assert WorkflowDefinition.from_dict(json.loads(json.dumps(definition.to_dict()))) == definition
    assert definition.agent("announcer").validator is None
    assert definition.models() == {"sim-writer", "sim-grader"}

    defaults = load_definition(document(criteria="be right")).agent("a").validator
    assert defaults == ValidatorSpec(criteria="be right", model="writer", max_retries=1)


def test_a_version_stored_before_validators_reads_as_agents_without_one():
    stored = load_definition(RELEASE_NOTES).to_dict()
    for agent in stored["agents"]:
        del agent["validator"]
        del agent["mock"]["rerun_output"]

    restored = WorkflowDefinition.from_dict(stored)

    assert restored.agent("drafter").validator is None
    assert restored.agent("drafter").mock.rerun_output is None


@pytest.mark.parametrize(
    ("validator", "path", "message"),
    [
        ({}, "agents[0].validator.criteria", "is required"),
        ({"criteria": "  \n"}, "agents[0].validator.criteria", "must not be empty"),
        ({"criteria": ["be right"]}, "agents[0].validator.criteria", "must be a string, not a list"),
        ({"criteria": "x", "max_retries": 2}, "agents[0].validator.max_retries", "between 0 and 1, not 2"),
        ({"criteria": "x", "max_retries": -1}, "agents[0].validator.max_retries", "between 0 and 1, not -1"),
        ({"criteria": "x", "max_retries": True}, "agents[0].validator.max_retries", "whole number, not a boolean"),
        ({"criteria": "x", "model": ""}, "agents[0].validator.model", "must not be empty"),
        ({"criteria": "x", "retries": 1}, "agents[0].validator.retries", "unknown key 'retries'"),
        ({"criteria": "x", "mock": {"rerun_output": {}}}, "agents[0].validator.mock.rerun_output", "unknown key"),
    ],
)
def test_a_validator_with_a_mistake_is_refused_at_its_path(validator, path, message):
    found = problems(document(**validator))

    assert any(where == path and message in said for where, said in found), found


def test_a_validator_that_is_not_a_mapping_is_refused():
    source = document()
    source["agents"][0]["validator"] = "be right"

    assert problems(source) == [("agents[0].validator", "must be a mapping, not a string")]


def test_under_an_enforce_budget_a_validator_s_model_must_have_a_price():
    source = document(criteria="x", model="mystery-grader")
    source["workflow"]["limits"] = {"budget_usd": 1, "budget_mode": "enforce"}

    [(path, message)] = problems(source)

    assert path == "agents[0].validator.model"
    assert "model 'mystery-grader' has no price" in message


def grouped(**for_each_validator) -> dict:
    """A parallel group whose first agent has a validator, then a for_each group whose agent has
    `for_each_validator`."""
    source = document(criteria="x")
    source["agents"].append({"name": "b", "prompt": "hi", "routes": []})
    source["parallel"] = [{"name": "both", "agents": ["a", "b"], "routes": [{"to": "each"}]}]
    source["workflow"]["entry_point"] = "both"
    source["for_each"] = [
        {"name": "each", "source": "workflow.input.items", "agent": {"prompt": "{{ item }}", "validator": for_each_validator}}
    ]
    source["workflow"]["input"] = {"items": {"type": "array"}}
    return source


def test_a_validator_on_the_agent_of_a_parallel_or_a_for_each_group_is_read_as_any_agent_s():
    definition = load_definition(grouped(criteria="y", model="grader", max_retries=0))

    assert definition.agent("a").validator == ValidatorSpec(criteria="x", model="writer", max_retries=1)
    assert definition.agent("each").validator == ValidatorSpec(criteria="y", model="grader", max_retries=0)
    assert ("grader", "fake") in definition.model_calls()


def test_an_unpriced_validator_model_on_a_for_each_agent_is_refused_under_an_enforce_budget():
    source = grouped(criteria="y", model="mystery-grader")
    source["workflow"]["limits"] = {"budget_usd": 1, "budget_mode": "enforce"}

    [(path, message)] = problems(source)

    assert path == "for_each[0].agent.validator.model"
    assert "model 'mystery-grader' has no price" in message


def test_criteria_are_plain_text_wrapped_in_the_validator_s_system_prompt_never_rendered():
    criteria = "Mention {{ workflow.input.x }} literally, and {braces}."
    definition = load_definition(document(criteria=criteria))

    assert definition.agent("a").validator.criteria == criteria
    assert criteria in validator_system_prompt(criteria)
    assert '{"passed": true or false, "issues": ["..."]}' in validator_system_prompt(criteria)


def test_the_validator_is_shown_the_agent_s_prompt_and_output_each_bounded():
    prompt = validator_prompt(agent="drafter", prompt="p" * (PROMPT_CHARS + 50), output={"notes": ["é" * 9000]})

    assert prompt.startswith("Agent: drafter\n")
    assert "p" * (PROMPT_CHARS - 20) in prompt and "p" * (PROMPT_CHARS + 1) not in prompt
    assert prompt.count("…[truncated]") == 2
    assert "é" * 100 in prompt  # shown as written, not as \\u escapes
    assert "What the agent answered (check this):\n<<<\nplain text\n>>>" in validator_prompt(
        agent="a", prompt="q", output="plain text"
    )


def test_the_feedback_lists_each_issue_under_conductor_s_heading():
    feedback = validation_feedback(["say what was fixed", "drop the refactoring"])

    assert feedback.startswith("\n\n## Validation feedback\n")
    assert feedback.endswith("- say what was fixed\n- drop the refactoring\n")
    assert "- The output does not meet the acceptance criteria." in validation_feedback([])


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ({"passed": True, "issues": []}, Verdict(passed=True)),
        ({"passed": True, "issues": ["ignored"]}, Verdict(passed=True)),
        ({"passed": False, "issues": ["a", "b"]}, Verdict(passed=False, issues=("a", "b"))),
        ({"passed": False, "issues": "one"}, Verdict(passed=False, issues=("one",))),
        ({"passed": False}, Verdict(passed=False)),
        ({"passed": False, "issues": [{"field": "x"}]}, Verdict(passed=False, issues=('{"field": "x"}',))),
        ({"passed": " False "}, Verdict(passed=False)),
        ({"passed": "true"}, Verdict(passed=True)),
        # no verdict to be had: conductor's fail-open
        ({"passed": "nope"}, Verdict(passed=True, errored=True)),
        ({"passed": 0}, Verdict(passed=True, errored=True)),
        ({"issues": ["a"]}, Verdict(passed=True, errored=True)),
        ("passed", Verdict(passed=True, errored=True)),
        (None, Verdict(passed=True, errored=True)),
    ],
)
def test_a_verdict_is_read_as_conductor_reads_it(answer, verdict):
    assert verdict_of(answer) == verdict


RETRY = ValidatorSpec(criteria="x", model="m", max_retries=1)
REPORT_ONLY = ValidatorSpec(criteria="x", model="m", max_retries=0)
GRADED = {"prompt": "p", "output": {"notes": ["first"]}}
FAILED = {"passed": False, "issues": ["vague"]}


def test_an_agent_s_own_step_is_graded_when_it_has_a_validator_and_routed_when_not():
    assert after_step(validator=RETRY, role="", given=None, output={"n": 1}) == Validate({"n": 1})
    assert after_step(validator=None, role="", given=None, output={"n": 1}) == Proceed({"n": 1})
    assert after_step(validator=RETRY, role="", given=None, failed=True) is None  # fails the run, as any step


def test_after_the_validator_the_graded_output_goes_on_unless_a_retry_is_left():
    passed = after_step(validator=RETRY, role=VALIDATOR_ROLE, given=GRADED, output={"passed": True})
    retried = after_step(validator=RETRY, role=VALIDATOR_ROLE, given=GRADED, output=FAILED)
    reported = after_step(validator=REPORT_ONLY, role=VALIDATOR_ROLE, given=GRADED, output=FAILED)

    assert passed == Proceed({"notes": ["first"]}, Verdict(passed=True))
    assert retried == Rerun({"notes": ["first"]}, Verdict(passed=False, issues=("vague",)))
    assert reported == Proceed({"notes": ["first"]}, Verdict(passed=False, issues=("vague",)))


def test_a_validator_or_re_run_that_fails_leaves_the_graded_output_standing():
    assert after_step(validator=RETRY, role=VALIDATOR_ROLE, given=GRADED, failed=True) == Proceed(
        {"notes": ["first"]}, Verdict(passed=True, errored=True)
    )
    given = {"issues": ["vague"], "output": {"notes": ["first"]}}
    assert after_step(validator=RETRY, role=RERUN_ROLE, given=given, failed=True) == Proceed({"notes": ["first"]})
    # A re-run that succeeded is final: it is not graded again.
    assert after_step(validator=RETRY, role=RERUN_ROLE, given=given, output={"notes": ["second"]}) == Proceed(
        {"notes": ["second"]}
    )


def test_the_validation_steps_count_as_their_agent_s_one_iteration_and_the_ledger_names_the_validator_s_call():
    assert counts_as_iteration("")
    assert not counts_as_iteration(VALIDATOR_ROLE) and not counts_as_iteration(RERUN_ROLE)
    assert usage_label("drafter", VALIDATOR_ROLE) == "drafter (validator)"
    assert usage_label("drafter", RERUN_ROLE) == usage_label("drafter", "") == "drafter"

