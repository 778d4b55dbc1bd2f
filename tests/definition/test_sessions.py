"""Conductor's `session_key` at upload: a static label on an agent, of any provider; refused on steps
that make no model call and where executions sharing a key could run at once."""

from pathlib import Path

import pytest
import yaml

from workflows.definition import (
    MAX_SESSION_KEY_CHARS,
    DefinitionError,
    Problem,
    WorkflowDefinition,
    answer_text,
    history_text,
    load_definition,
)

# Our workflow with the features of conductor's examples/claude-agent-sdk-session-key.yaml.
INVESTIGATION = Path(__file__).resolve().parents[1] / "conductor" / "ticket_investigation.yaml"
ROUTES = {"claude-agent-sdk": "anthropic", "copilot": "openai"}


def load(document: dict) -> WorkflowDefinition:
    return load_definition(document, provider_routes=ROUTES)


def problems(document: dict) -> list[Problem]:
    with pytest.raises(DefinitionError) as caught:
        load(document)
    return caught.value.problems


def two_agents(**first) -> dict:
    return {
        "workflow": {"name": "w", "entry_point": "a", "runtime": {"provider": "openai", "default_model": "gpt-4o"}},
        "agents": [
            {"name": "a", "prompt": "hi", "routes": [{"to": "b"}], **first},
            {"name": "b", "prompt": "and?", "session_key": "talk"},
        ],
    }


def test_a_looping_agent_and_a_later_agent_with_one_key_upload_and_share_it():
    definition = load(yaml.safe_load(INVESTIGATION.read_text()))

    assert definition.agents["diagnose"].session_key == "ticket-thread"
    assert definition.agents["respond"].session_key == "ticket-thread"
    # Stored and read back, as a version is.
    assert WorkflowDefinition.from_dict(definition.to_dict()) == definition


@pytest.mark.parametrize("provider", ["openai", "claude", "copilot", "claude-agent-sdk", "fake"])
def test_any_provider_may_continue_a_session_as_the_service_replays_it(provider):
    document = two_agents(session_key="talk")
    document["workflow"]["runtime"]["provider"] = provider

    assert load(document).agents["a"].session_key == "talk"


def test_a_key_is_a_label_stripped_as_conductor_strips_it_and_an_agent_without_one_has_none():
    definition = load(two_agents(session_key="  talk  "))

    assert definition.agents["a"].session_key == "talk"
    assert load(two_agents()).agents["a"].session_key is None


def test_a_version_stored_before_sessions_reads_back_without_keys():
    stored = load(two_agents()).to_dict()
    for agent in stored["agents"].values() if isinstance(stored["agents"], dict) else stored["agents"]:
        agent.pop("session_key")

    assert WorkflowDefinition.from_dict(stored).agents["b"].session_key is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "item-{{ _key }}",
            "'item-{{ _key }}' looks like a template, but a session_key is never rendered: it would be one "
            "literal key shared by every execution; use a static label",
        ),
        (
            "{% if x %}a{% endif %}",
            "'{% if x %}a{% endif %}' looks like a template, but a session_key is never rendered: it would "
            "be one literal key shared by every execution; use a static label",
        ),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("k" * (MAX_SESSION_KEY_CHARS + 1), f"is 101 characters long; a session_key may have at most {MAX_SESSION_KEY_CHARS}"),
        (7, "must be a string, not an integer"),
        (["a"], "must be a string, not a list"),
    ],
)
def test_a_key_that_is_no_static_label_is_refused_at_its_path(value, message):
    assert problems(two_agents(session_key=value)) == [Problem("agents[0].session_key", message)]


STEPS = {
    "script": {"command": "true"},
    "set": {"value": "x"},
    "wait": {"duration": "1s"},
    "terminate": {"status": "success", "reason": "done"},
    "human_gate": {"prompt": "Go?", "options": [{"label": "Yes", "value": "yes", "route": "$end"}]},
    "questions": {"questions": [{"id": "why", "text": "Why?"}]},
    "workflow": {
        "workflow": {
            "workflow": {"name": "inner", "entry_point": "x", "runtime": {"provider": "openai", "default_model": "gpt-4o"}},
            "agents": [{"name": "x", "prompt": "hi"}],
        }
    },
}


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_a_step_that_makes_no_model_call_cannot_have_a_key(kind):
    document = two_agents()
    document["workflow"]["entry_point"] = "s"
    document["agents"].insert(0, {"name": "s", "type": kind, "session_key": "talk", **STEPS[kind]})

    assert problems(document) == [
        Problem(
            "agents[0].session_key",
            f"'session_key' is not supported: a '{kind}' step makes no model call, so it has no conversation "
            "to continue; only an agent's calls continue a session",
        )
    ]


def grouped(*, keys: tuple, for_each: dict | None = None) -> dict:
    document = {
        "workflow": {"name": "w", "entry_point": "both", "runtime": {"provider": "fake", "default_model": "sim"}},
        "agents": [
            {"name": name, "prompt": "hi", **({"session_key": key} if key else {})}
            for name, key in zip(("a", "b", "c"), keys, strict=True)
        ],
        "parallel": [{"name": "both", "agents": ["a", "b", "c"], "routes": [{"to": "items"}]}],
        "for_each": [
            {"name": "items", "source": "workflow.input.items", "as": "item", "agent": {"prompt": "{{ item }}"}, **(for_each or {})}
        ],
    }
    document["workflow"]["input"] = {"items": {"type": "array", "default": [1, 2]}}
    return document


def test_two_members_of_a_parallel_group_with_one_key_are_refused_at_the_second():
    assert problems(grouped(keys=("talk", None, "talk"))) == [
        Problem(
            "parallel[0].agents[2]",
            "agents 'a' and 'c' both have session_key 'talk' and this group runs them at once: executions "
            "that may run concurrently cannot continue one session; give them distinct keys, or move one out "
            "of the group",
        )
    ]


def test_members_of_a_parallel_group_with_distinct_keys_are_accepted():
    definition = load(grouped(keys=("one", "two", None)))

    assert [definition.agents[name].session_key for name in "abc"] == ["one", "two", None]


@pytest.mark.parametrize(("max_concurrent", "slots"), [(None, 10), (2, 2)])
def test_a_for_each_agent_with_a_key_is_refused_unless_its_items_run_one_at_a_time(max_concurrent, slots):
    settings = {"agent": {"prompt": "{{ item }}", "session_key": "talk"}}
    if max_concurrent is not None:
        settings["max_concurrent"] = max_concurrent

    assert problems(grouped(keys=(None, None, None), for_each=settings)) == [
        Problem(
            "for_each[0].agent.session_key",
            f"the group runs up to {slots} items at once (max_concurrent), and every item's execution would "
            "continue session 'talk': executions that may run concurrently cannot continue one session; set "
            "the group's max_concurrent: 1, or remove the session_key",
        )
    ]


def test_a_for_each_agent_with_a_key_running_its_items_one_at_a_time_is_accepted():
    settings = {"max_concurrent": 1, "agent": {"prompt": "{{ item }}", "session_key": "talk"}}

    definition = load(grouped(keys=(None, None, None), for_each=settings))

    assert definition.for_each["items"].agent.session_key == "talk"


def test_an_answer_is_replayed_as_text_and_the_history_counted_as_json_text():
    assert answer_text("plain words") == "plain words"
    assert answer_text({"finding": "slow fixture", "confident": False}) == '{"finding": "slow fixture", "confident": false}'
    assert answer_text({"note": "café"}) == '{"note": "café"}'
    assert history_text([]) == ""
    assert history_text([("Why?", "Because.")]) == '[{"user": "Why?", "assistant": "Because."}]'
