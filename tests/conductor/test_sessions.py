"""Conductor's `session_key` on a real worker: each call of a keyed agent is sent, as real user and
assistant messages, the prompt and answer of every earlier execution of its session; the gate's
estimate counts them, an enforce budget stops at the call they push over, and a resume keeps them."""

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.conductor.test_tools import anthropic_server, openai_server, weather  # noqa: F401 - fixtures
from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from tests.providers.wire import (
    anthropic_message,
    anthropic_usage,
    openai_completion,
    openai_error,
    openai_message,
    openai_usage,
)
from workflows.definition import count_tokens, fake_token_count, history_text
from workflows.models import EventType, Price
from workflows.services.provider_routes import provider_routes_set

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")
# Our workflow with the features of conductor's examples/claude-agent-sdk-session-key.yaml: a keyed
# agent looping back through a script check, and a later agent with the same key.
INVESTIGATION = (Path(__file__).parent / "ticket_investigation.yaml").read_text()
TICKET = "Since Tuesday my invoices download as empty PDFs."


def upload(api, source: str) -> None:
    response = api.post("/api/v1/workflows", {"definition": source}, format="json")
    assert response.status_code == 201, response.json()


def start(api, workflow: str, inputs: dict | None = None, **limits):
    body = {"workflow": workflow, "inputs": inputs or {}}
    response = api.post("/api/v1/runs", {**body, "limits": limits} if limits else body, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *TERMINAL)


def sessions_said(run) -> list:
    """What each agent_completed event says of the session its call continued."""
    events = run.events.filter(type=EventType.AGENT_COMPLETED).order_by("id")
    return [(event.payload["agent"], event.payload.get("session")) for event in events]


def output_tool(answer: dict) -> list[dict]:
    return [{"type": "tool_use", "id": "toolu_1", "name": "output", "input": answer}]


def test_a_keyed_loop_replays_the_diagnosis_to_each_pass_and_to_the_reply(
    api, team, settings, anthropic_server, celery_worker  # noqa: F811 - fixtures
):
    settings.SCRIPT_STEPS_ENABLED = True
    team.may_run_scripts = True
    team.save(update_fields=["may_run_scripts"])
    provider_routes_set(team=team, routes={"claude-agent-sdk": "anthropic"})
    Price.objects.create(model="claude-sonnet-4-5", input_per_mtok="3", output_per_mtok="15", valid_from=date(2024, 1, 1))
    first = {"cause": "The PDF renderer times out.", "confident": False}
    second = {"cause": "Tuesday's font update broke the invoice template.", "confident": True}
    reply = {"reply": "Sorry: a font update broke your invoices; we are restoring the old one today."}
    anthropic_server.script(
        anthropic_message(output_tool(first), anthropic_usage(300, 40)),
        anthropic_message(output_tool(second), anthropic_usage(400, 40)),
        anthropic_message(output_tool(reply), anthropic_usage(500, 20)),
    )
    upload(api, INVESTIGATION)

    run = start(api, "ticket-investigation", {"ticket": TICKET})

    assert run.status == "completed", run.error
    assert run.output == {"cause": second["cause"], "reply": reply["reply"]}
    assert list(run.steps.values_list("agent", flat=True)) == ["diagnose", "check", "diagnose", "check", "respond"]
    diagnose = run.steps.filter(agent="diagnose").first().session["prompt"]
    assert diagnose.startswith(f"Ticket: {TICKET}\n")
    respond = run.steps.get(agent="respond").session["prompt"]
    assert respond.startswith("Draft the reply to the customer who raised this ticket")
    asked = [request.body["messages"] for request in anthropic_server.received]
    exchange_1 = [{"role": "user", "content": diagnose}, {"role": "assistant", "content": json.dumps(first)}]
    exchange_2 = [{"role": "user", "content": diagnose}, {"role": "assistant", "content": json.dumps(second)}]
    assert asked == [
        [{"role": "user", "content": diagnose}],
        [*exchange_1, {"role": "user", "content": diagnose}],
        [*exchange_1, *exchange_2, {"role": "user", "content": respond}],
    ]
    assert sessions_said(run) == [
        ("diagnose", {"key": "ticket-thread", "exchanges": 0}),
        ("check", None),
        ("diagnose", {"key": "ticket-thread", "exchanges": 1}),
        ("check", None),
        ("respond", {"key": "ticket-thread", "exchanges": 2}),
    ]
    assert_invariants(run)


TRIP = """
workflow:
  name: trip-session
  entry_point: scout
  runtime:
    provider: openai
    default_model: gpt-4o
    max_tokens: 100
    mcp_servers:
      weather: {type: http, url: URL, tools: [forecast]}
agents:
  - name: scout
    session_key: trip
    tools: []
    prompt: Which city?
    output: {city: {type: string}}
    routes: [{to: planner}]
  - name: planner
    session_key: trip
    prompt: "Plan a weekend in {{ scout.output.city }}."
    output: {plan: {type: string}}
    routes: [{to: writer}]
  - name: writer
    session_key: trip
    tools: []
    prompt: Sum it up.
    output: {summary: {type: string}}
"""


def test_each_model_call_of_a_tool_loop_carries_the_session_and_later_calls_get_its_answer_not_its_tool_turns(
    api, team, weather, openai_server, celery_worker  # noqa: F811 - fixtures
):
    Price.objects.create(model="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", valid_from=date(2024, 1, 1))
    call = {"id": "call_7", "type": "function", "function": {"name": "weather__forecast", "arguments": '{"city": "Oslo"}'}}
    openai_server.script(
        openai_completion(json.dumps({"city": "Oslo"}), openai_usage(prompt=50, completion=5)),
        openai_message({"role": "assistant", "content": None, "tool_calls": [call]}, openai_usage(prompt=80, completion=20)),
        openai_completion(json.dumps({"plan": "Pack a raincoat."}), openai_usage(prompt=120, completion=10)),
        openai_completion(json.dumps({"summary": "Rain."}), openai_usage(prompt=90, completion=5)),
    )
    upload(api, TRIP.replace("URL", weather))

    run = start(api, "trip-session")

    assert run.status == "completed", run.error
    scout, loop_1, loop_2, writer = (request.body["messages"] for request in openai_server.received)
    assert scout == [{"role": "user", "content": "Which city?"}]
    scouted = [{"role": "user", "content": "Which city?"}, {"role": "assistant", "content": '{"city": "Oslo"}'}]
    planned = {"role": "user", "content": "Plan a weekend in Oslo."}
    assert loop_1 == [*scouted, planned]
    assert loop_2 == [
        *scouted,
        planned,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_7", "content": "Oslo: rain all week, 9 degrees"},
    ]
    assert writer == [
        *scouted,
        planned,
        {"role": "assistant", "content": '{"plan": "Pack a raincoat."}'},
        {"role": "user", "content": "Sum it up."},
    ]
    calls = run.events.filter(type__in=[EventType.MODEL_CALL_COMPLETED, EventType.AGENT_COMPLETED]).order_by("id")
    assert [(event.payload["agent"], event.payload["session"]["exchanges"]) for event in calls] == [
        ("scout", 0),
        ("planner", 1),
        ("planner", 1),
        ("writer", 2),
    ]
    assert_invariants(run)


PROMPT = "Look again at the budget, line by line, and say what is left. " * 6
NOTE = "Everything adds up; the reserve is untouched and nothing is owed. " * 6
LOOP = f"""
workflow:
  name: session-loop
  entry_point: ask
  runtime: {{provider: fake, default_model: sim, max_tokens: 100}}
  cost: {{pricing: {{sim: {{input_per_mtok: 1000, output_per_mtok: 10}}}}}}
agents:
  - name: ask
    session_key: talk
    prompt: "{PROMPT}"
    output: {{note: {{type: string}}}}
    mock: {{output: {{note: "{NOTE}"}}, output_tokens: 10}}
    routes:
      - {{to: ask, when: "{{{{ context.iteration < 3 }}}}"}}
      - {{to: $end}}
"""
ANSWER = json.dumps({"note": NOTE})


def history(passes: int) -> str:
    return history_text([(PROMPT, ANSWER)] * passes)


def estimate(passes: int) -> Decimal:
    """The gate's worst case for the call after `passes` earlier ones: input at $1,000 and the
    100-token output cap at $10 per 1M."""
    return (Decimal(count_tokens(history(passes) + PROMPT)) * Decimal("0.001") + Decimal("0.001")).quantize(Decimal("0.000001"))


def cost(passes: int) -> Decimal:
    """What the fake charges for that call: its count of the same input, 10 tokens out."""
    return (Decimal(fake_token_count(history(passes) + PROMPT)) * Decimal("0.001") + Decimal("0.0001")).quantize(Decimal("0.000001"))


def test_the_estimate_of_each_call_grows_by_its_history_and_the_fake_charges_for_it(api, team, celery_worker):
    upload(api, LOOP)

    run = start(api, "session-loop")

    assert run.status == "completed", run.error
    steps = list(run.steps.order_by("sequence"))
    assert [step.estimate_usd for step in steps] == [estimate(0), estimate(1), estimate(2)]
    assert estimate(0) < estimate(1) < estimate(2)
    assert [entry.input_tokens for entry in run.ledger_entries.order_by("id")] == [
        fake_token_count(history(passes) + PROMPT) for passes in range(3)
    ]
    assert run.spent_usd == cost(0) + cost(1) + cost(2)
    assert sessions_said(run) == [("ask", {"key": "talk", "exchanges": passes}) for passes in range(3)]
    assert_invariants(run)


def test_an_enforce_budget_stops_at_the_call_its_history_pushes_over_and_a_resume_keeps_the_session(api, team, celery_worker):
    upload(api, LOOP)
    spent = cost(0) + cost(1)
    budget = spent + estimate(2) - Decimal("0.000001")
    # Without its history the third call would fit: it is the history that crosses the budget.
    assert spent + estimate(0) <= budget

    run = start(api, "session-loop", budget_usd=str(budget), budget_mode="enforce")

    assert run.status == "budget_exceeded", run.error
    assert run.spent_usd == spent
    blocked = run.steps.order_by("sequence").last()
    assert (blocked.sequence, blocked.status, blocked.estimate_usd) == (3, "blocked", estimate(2))
    stop = run.events.get(type=EventType.BUDGET_EXCEEDED).payload
    assert Decimal(stop["projected_usd"]) == spent + estimate(2)

    response = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "5", "reason": "one more pass"}, format="json")
    assert response.status_code == 202, response.json()
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    # The two calls made before the stop were not made again, and the third replayed both.
    assert run.ledger_entries.count() == 3
    assert run.ledger_entries.order_by("id").last().input_tokens == fake_token_count(history(2) + PROMPT)
    assert sessions_said(run)[-1] == ("ask", {"key": "talk", "exchanges": 2})
    assert run.spent_usd == spent + cost(2)
    assert_invariants(run)


def test_a_session_past_its_bound_fails_the_call_before_it_is_made_or_charged(api, team, monkeypatch, celery_worker):
    # The bound, lowered to between one exchange and two: the third call would replay two.
    monkeypatch.setattr("workflows.services.steps.sessions.MAX_SESSION_HISTORY_CHARS", len(PROMPT + ANSWER) * 3 // 2)
    upload(api, LOOP)

    run = start(api, "session-loop")

    assert run.status == "failed"
    assert run.error["type"] == "SessionTooLongError"
    assert run.error["message"].startswith(
        f"The session 'talk' of agent 'ask' holds more than {len(PROMPT + ANSWER) * 3 // 2:,} characters of earlier "
        "prompts and answers"
    )
    assert run.ledger_entries.count() == 2 and run.spent_usd == cost(0) + cost(1)
    assert_invariants(run)


PAIR = """
workflow:
  name: pair
  entry_point: first
  runtime: {provider: openai, default_model: gpt-4o, max_tokens: 100}
agents:
  - name: first
    session_key: pair
    prompt: Name a colour.
    routes: [{to: second}]
  - name: second
    session_key: pair
    prompt: Name another.
"""


def test_a_call_retried_after_a_provider_error_sends_the_same_history(
    api, team, openai_server, celery_worker  # noqa: F811 - fixtures
):
    Price.objects.create(model="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", valid_from=date(2024, 1, 1))
    openai_server.script(
        openai_completion("Red.", openai_usage(prompt=10, completion=2)),
        openai_error(500, "The server had an error", usage=openai_usage(prompt=20, completion=0)),
        openai_completion("Blue.", openai_usage(prompt=20, completion=2)),
    )
    upload(api, PAIR)

    run = start(api, "pair")

    assert run.status == "completed", run.error
    _, failed, retried = (request.body["messages"] for request in openai_server.received)
    assert failed == retried == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Name another."},
    ]
    assert run.steps.get(agent="second").attempts == 2
    assert_invariants(run)


FRAMED = """
workflow:
  name: framed
  entry_point: outer
  runtime: {provider: fake, default_model: sim, max_tokens: 10}
  cost: {pricing: {sim: {input_per_mtok: 1, output_per_mtok: 1}}}
agents:
  - name: outer
    session_key: k
    prompt: Outer.
    routes: [{to: inner}]
  - name: inner
    type: workflow
    workflow:
      workflow:
        name: inner
        entry_point: a
        runtime: {provider: fake, default_model: sim, max_tokens: 10}
        cost: {pricing: {sim: {input_per_mtok: 1, output_per_mtok: 1}}}
      agents:
        - {name: a, session_key: k, prompt: A., routes: [{to: b}]}
        - {name: b, session_key: k, prompt: B.}
    routes:
      - {to: inner, when: "{{ context.iteration < 5 }}"}
      - {to: last}
  - name: last
    session_key: k
    prompt: Last.
"""


def test_a_key_names_a_session_of_its_own_workflow_and_a_sub_workflow_entered_again_starts_afresh(
    api, team, celery_worker
):
    upload(api, FRAMED)

    run = start(api, "framed")

    assert run.status == "completed", run.error
    assert [(agent, session["exchanges"]) for agent, session in sessions_said(run) if session] == [
        ("outer", 0),
        ("inner/a", 0),
        ("inner/b", 1),
        ("inner/a", 0),
        ("inner/b", 1),
        ("last", 1),
    ]
    assert_invariants(run)


def test_a_validators_rerun_is_sent_the_exchange_it_redoes_and_the_validator_continues_no_session(
    api, team, celery_worker
):
    data = yaml.safe_load((Path(__file__).parent / "release_notes.yaml").read_text())
    for agent in data["agents"]:
        agent["session_key"] = "release"
    upload(api, yaml.safe_dump(data, sort_keys=False))

    run = start(api, "release-notes", {"changes": "#12 export timeout\n#13 cache refactor"})

    assert run.status == "completed", run.error
    assert sessions_said(run) == [
        ("drafter", {"key": "release", "exchanges": 0}),
        ("drafter", None),  # the validator's call
        ("drafter", {"key": "release", "exchanges": 1}),  # the re-run
        ("announcer", {"key": "release", "exchanges": 2}),
    ]
    first, rerun = run.steps.filter(agent="drafter", role__in=["", "rerun"]).order_by("sequence")
    # The re-run's prompt is the first one with the validator's issues appended.
    assert rerun.session["prompt"].startswith(first.session["prompt"]) and "'Fixed stuff' is vague" in rerun.session["prompt"]
    assert_invariants(run)


NUL = r"""
workflow:
  name: nul
  entry_point: first
  runtime: {provider: fake, default_model: sim, max_tokens: 10}
  cost: {pricing: {sim: {input_per_mtok: 1, output_per_mtok: 1}}}
agents:
  - name: first
    session_key: k
    prompt: '{{ "a\x00b" }}'
    routes: [{to: second}]
  - name: second
    session_key: k
    prompt: Again.
"""


def test_a_prompt_rendering_a_nul_is_kept_as_the_database_can_store_it_and_the_session_goes_on(api, team, celery_worker):
    upload(api, NUL)

    run = start(api, "nul")

    assert run.status == "completed", run.error
    assert run.steps.get(agent="first").session["prompt"] == "ab"
    assert sessions_said(run)[-1] == ("second", {"key": "k", "exchanges": 1})
    assert_invariants(run)


def test_a_run_failed_past_its_bound_goes_on_on_a_version_giving_the_agent_a_new_key_which_starts_afresh(
    api, team, monkeypatch, celery_worker
):
    # As SessionTooLongError advises: a new session_key, on a version the run resumes onto.
    monkeypatch.setattr("workflows.services.steps.sessions.MAX_SESSION_HISTORY_CHARS", len(PROMPT + ANSWER) * 3 // 2)
    upload(api, LOOP)
    run = start(api, "session-loop")
    assert run.error["type"] == "SessionTooLongError"
    response = api.post("/api/v1/workflows", {"definition": LOOP.replace("session_key: talk", "session_key: fresh")}, format="json")
    assert response.status_code == 201, response.json()

    resumed = api.post(
        f"/api/v1/runs/{run.pk}/resume", {"workflow_version": response.json()["version"], "reason": "new session"}, format="json"
    )
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    assert sessions_said(run)[-1] == ("ask", {"key": "fresh", "exchanges": 0})
    assert run.ledger_entries.order_by("id").last().input_tokens == fake_token_count(PROMPT)
    assert_invariants(run)
