"""Conductor's `dialog:` on an agent: read and checked at upload, and its pure rules (the evaluator's
prompts and answer, a person's reply, what follows each of the steps an agent with a dialog takes)."""

from pathlib import Path

import pytest

from workflows.definition import (
    DIALOG_ROLE,
    RERUN_ROLE,
    REPLY_ROLE,
    Converse,
    DefinitionError,
    DialogSpec,
    Evaluate,
    Evaluation,
    Proceed,
    Redo,
    ReplyInvalid,
    WorkflowDefinition,
    after_step,
    counts_as_iteration,
    dialog_guidance,
    evaluator_prompt,
    evaluator_system_prompt,
    load_definition,
    reply_of,
    usage_label,
)
from workflows.definition.dialog import OUTPUT_CHARS, evaluation_of

REFUND_DESK = (Path(__file__).parent.parent / "conductor" / "refund_desk.yaml").read_text()


def document(dialog, **agent) -> dict:
    """A one-agent workflow on the fake provider whose agent has `dialog`."""
    return {
        "workflow": {
            "name": "w",
            "entry_point": "a",
            "runtime": {"provider": "fake", "default_model": "writer"},
            "cost": {"pricing": {"writer": {"input_per_mtok": 1, "output_per_mtok": 2}}},
        },
        "agents": [{"name": "a", "prompt": "hi", "dialog": dialog, **agent}],
    }


def problems(source) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(source)
    return [(problem.path, problem.message) for problem in caught.value.problems]


def test_a_dialog_is_read_and_stored_as_it_was_read():
    definition = load_definition(REFUND_DESK)
    dialog = definition.agent("assessor").dialog

    assert dialog.trigger_prompt.startswith("Ask the supervisor when the proposed refund is above $500")
    assert dialog.mock.output["trigger"] is True
    assert definition.agent("writer").dialog is None
    assert WorkflowDefinition.from_dict(definition.to_dict()) == definition


def test_a_version_stored_before_dialogs_reads_as_an_agent_without_one():
    stored = load_definition(document({"trigger_prompt": "unsure"})).to_dict()
    del stored["agents"][0]["dialog"]

    assert WorkflowDefinition.from_dict(stored).agent("a").dialog is None


@pytest.mark.parametrize(
    ("dialog", "path", "message"),
    [
        ({}, "agents[0].dialog.trigger_prompt", "required"),
        ({"trigger_prompt": "  "}, "agents[0].dialog.trigger_prompt", "must not be empty"),
        ({"trigger_prompt": 3}, "agents[0].dialog.trigger_prompt", "must be a string"),
        ({"trigger_prompt": "x", "max_turns": 3}, "agents[0].dialog.max_turns", ""),
        ({"trigger_prompt": "x", "mock": {"output": {"trigger": True}, "rerun_output": 1}}, "agents[0].dialog.mock.rerun_output", ""),
        ({"trigger_prompt": "x", "mock": {"output_tokens": -1}}, "agents[0].dialog.mock.output_tokens", ""),
        ("ask", "agents[0].dialog", ""),
    ],
)
def test_a_bad_dialog_field_is_reported_at_its_path(dialog, path, message):
    found = problems(document(dialog))

    assert [p for p, m in found if p == path and message in m], found


def test_an_agent_with_both_a_validator_and_a_dialog_is_refused_with_the_reason():
    found = problems(document({"trigger_prompt": "unsure"}, validator={"criteria": "good"}))

    assert [path for path, _ in found] == ["agents[0].dialog"]
    assert "both a validator and a dialog" in found[0][1]


def test_a_dialog_on_a_group_s_agent_is_refused():
    parallel = document({"trigger_prompt": "unsure"})
    parallel["agents"].append({"name": "b", "prompt": "hi"})
    parallel["workflow"]["entry_point"] = "g"
    parallel["parallel"] = [{"name": "g", "agents": ["a", "b"], "routes": [{"to": "$end"}]}]
    for_each = document({"trigger_prompt": "unsure"})
    for_each["workflow"]["input"] = {"items": {"type": "array"}}
    for_each["workflow"]["entry_point"] = "each"
    for_each["for_each"] = [
        {
            "name": "each",
            "type": "for_each",
            "source": "workflow.input.items",
            "as": "item",
            "agent": {"name": "inline", "prompt": "{{ item }}", "dialog": {"trigger_prompt": "unsure"}},
            "routes": [{"to": "$end"}],
        }
    ]

    assert [m for p, m in problems(parallel) if p == "parallel[0].agents[0]" and "has a dialog" in m]
    assert [p for p, m in problems(for_each) if p.endswith(".agent.dialog") and "group" in m]


def test_the_evaluator_sees_the_trigger_prompt_and_the_output_bounded_as_conductor_bounds_it():
    assert "refund is above $500" in evaluator_system_prompt("refund is above $500")
    prompt = evaluator_prompt(agent="assessor", output={"note": "x" * 10_000})

    assert "Agent: assessor" in prompt
    assert len(prompt) < OUTPUT_CHARS + 100
    assert "…[truncated]" in prompt
    assert "plain answer" in evaluator_prompt(agent="a", output="plain answer")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"trigger": True, "reason": "big", "question": "Sure?"}, Evaluation(True, "big", "Sure?")),
        ({"trigger": "TRUE", "question": "Sure?"}, Evaluation(True, "", "Sure?")),
        ({"trigger": False, "reason": "fine", "question": "ignored"}, Evaluation(False, "fine", "")),
        ({"trigger": True, "question": "  "}, Evaluation(False, "", "", errored=True)),
        ({"reason": "no verdict"}, Evaluation(False, errored=True)),
        ({"trigger": "maybe"}, Evaluation(False, errored=True)),
        ("yes", Evaluation(False, errored=True)),
    ],
)
def test_an_evaluator_s_answer_is_read_and_anything_unreadable_does_not_trigger(answer, expected):
    assert evaluation_of(answer) == expected


@pytest.mark.parametrize(
    ("given", "output"),
    [
        ({"text": "Refund one."}, {"declined": False, "text": "Refund one."}),
        ({"decline": True}, {"declined": True}),
        ({"decline": False, "text": "ok"}, {"declined": False, "text": "ok"}),
    ],
)
def test_a_reply_is_a_text_or_declined(given, output):
    assert reply_of(given).to_output() == output


@pytest.mark.parametrize(
    ("given", "field"),
    [({}, "text"), ({"text": " "}, "text"), ({"decline": True, "text": "x"}, "text"), ({"decline": "yes"}, "decline"),
     ({"text": "x" * 10_001}, "text"), ({"decline": False}, "text")],
)
def test_a_reply_that_is_neither_is_refused_at_its_field(given, field):
    with pytest.raises(ReplyInvalid) as caught:
        reply_of(given)
    assert caught.value.field == field


def test_what_follows_each_step_of_an_agent_with_a_dialog():
    dialog = DialogSpec(trigger_prompt="unsure")
    first = {"amount": 640}
    asked = {"question": "Sure?", "reason": "big", "output": first}

    assert after_step(validator=None, dialog=dialog, role="", given=None, output=first) == Evaluate(first)
    assert after_step(validator=None, dialog=dialog, role="", given=None, failed=True) is None
    triggered = after_step(
        validator=None, dialog=dialog, role=DIALOG_ROLE, given={"output": first},
        output={"trigger": True, "reason": "big", "question": "Sure?"},
    )  # fmt: skip
    assert triggered == Converse(first, Evaluation(True, "big", "Sure?"))
    # Fail-open: an evaluator that fails, or does not trigger, lets the output stand.
    failed = after_step(validator=None, dialog=dialog, role=DIALOG_ROLE, given={"output": first}, failed=True)
    assert failed == Proceed(first, evaluation=Evaluation(False, errored=True))
    reply = {"declined": False, "text": "Refund one."}
    assert after_step(validator=None, dialog=dialog, role=REPLY_ROLE, given=asked, output=reply) == Redo(first, "Sure?", "Refund one.")
    assert after_step(validator=None, dialog=dialog, role=REPLY_ROLE, given=asked, output={"declined": True}) == Proceed(first)
    rerun = {**asked, "reply": "Refund one."}
    assert after_step(validator=None, dialog=dialog, role=RERUN_ROLE, given=rerun, output={"amount": 320}) == Proceed({"amount": 320})
    assert after_step(validator=None, dialog=dialog, role=RERUN_ROLE, given=rerun, failed=True) == Proceed(first)


def test_the_dialog_s_steps_count_once_with_their_agent_and_the_evaluator_has_its_own_ledger_name():
    assert [counts_as_iteration(role) for role in ("", DIALOG_ROLE, REPLY_ROLE, RERUN_ROLE)] == [True, False, False, False]
    assert usage_label("assessor", DIALOG_ROLE) == "assessor (dialog)"
    assert usage_label("assessor", REPLY_ROLE) == "assessor"


def test_a_re_run_is_told_the_question_and_the_reply():
    guidance = dialog_guidance(question="Refund all $640?", reply="Only one blender.")

    assert "Refund all $640?" in guidance and "Only one blender." in guidance
