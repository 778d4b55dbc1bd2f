"""The tool loop at its edges, found by review: a tool call whose earlier attempt may have been made
(a crash, then the redelivery bound or a stop) is not made again; a loop step settling in a cancelled
run is charged; a call without reported usage is billed at least what it sent; the names a model is
shown are distinct; a resume cannot move a loop onto another provider; a listing of slow servers
ends within its time; a duplicate settlement of a step that charges nothing records nothing."""

import time
from dataclasses import asdict
from datetime import date
from decimal import Decimal

import pytest
import yaml

from tests.factories import workflow_version
from tests.invariants import assert_invariants
from tests.mcp_servers import http_server
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, wire  # noqa: F401 - the fixture
from tests.providers.wire import openai_stream, openai_usage
from tests.services.test_tool_loop import BOOK, LOOKUP, Tools, drive, source, start, to_tool_call, tools  # noqa: F401 - tools, the fixture
from workflows.definition import count_tokens, model_tool_name, tool_server_key, transcript_text
from workflows.errors import ValidationFailed
from workflows.models import Event, EventType, LedgerEntry, Price, StepStatus, ToolPrice
from workflows.providers import AssistantTurn, CompletionRequest, Credentials, ToolCall, ToolResult, ToolSpec
from workflows.providers.openai import OpenAIProvider
from workflows.services.credentials import credential_set
from workflows.services.runs import run_cancel, run_resume, run_start
from workflows.services.steps import step_begin, step_execute
from workflows.services.steps.execute import step_settle
from workflows.services.steps.kinds import kind_named
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

BOOK_PRICE = Decimal("0.500000")


def test_a_crashed_booking_failed_at_the_redelivery_bound_is_not_made_again_on_resume(team, tools, settings):
    settings.STEP_MAX_REDELIVERIES = 1
    ToolPrice.objects.create(server=tool_server_key(tools.url), tool="book", usd_per_call=BOOK_PRICE)
    run = start(team, source(tools.url, tool_calls=[[BOOK]]))
    step = to_tool_call(run)
    # Its worker dies with the call perhaps made, twice: the second delivery finds the bound reached.
    assert step_begin(step_id=step.pk, worker="host:1") is not None
    assert step_begin(step_id=step.pk, worker="host:2") is not None
    step_execute(step_id=step.pk)
    run.refresh_from_db()
    assert run.status == "failed" and run.error["type"] == "StepCrashedError"

    run_resume(run=run, reason="worker fixed")
    run = drive(run)

    assert run.status == "completed", run.error
    # Any of the dead attempts may have booked: the booking is not made again...
    assert tools.calls == []
    # ...each dead attempt, which may have booked, is charged the price as an estimate, and the
    # attempt after the resume, which did not call, nothing.
    assert list(LedgerEntry.objects.filter(run=run, kind="tool").values_list("attempt", "basis", "cost_usd")) == [
        (1, "estimated", BOOK_PRICE),
        (2, "estimated", BOOK_PRICE),
    ]
    assert_invariants(run)


def _for_each(url: str) -> str:
    text = yaml.safe_load(source(url, tool_calls=[[BOOK]]))
    agent = text["agents"].pop()
    agent["prompt"] = "Plan {{ city }}."
    agent.pop("routes")
    text["workflow"]["entry_point"] = "cities"
    text["workflow"]["input"] = {"cities": {"type": "array"}}
    text["for_each"] = [
        {"name": "cities", "source": "workflow.input.cities", "as": "city", "max_concurrent": 2, "agent": agent,
         "routes": [{"to": "$end"}]}
    ]
    text["agents"] = [{"name": "unused", "prompt": "x", "routes": [{"to": "$end"}]}]
    text["output"] = {"plans": "{{ cities.outputs }}"}
    return yaml.safe_dump(text)


def test_a_booking_in_flight_when_another_branch_stops_the_run_is_not_made_again_on_resume(team, tools):
    version = workflow_version(team=team, source=_for_each(tools.url))
    free = run_start(team=team, workflow=version.workflow_id, inputs={"cities": ["Oslo"]})
    drive(free)
    first = free.steps.filter(role="model_call").order_by("sequence").first()
    cost, estimate = first.ledger_entries.get().cost_usd, first.estimate_usd
    tools.calls.clear()

    budget = cost + estimate - Decimal("0.000001")
    run = run_start(
        team=team, workflow=version.workflow_id, inputs={"cities": ["Oslo", "Bergen"]},
        limits={"budget_usd": str(budget), "budget_mode": "enforce"},
    )

    def pending(**filters):
        return run.steps.filter(status=StepStatus.PENDING, **filters).order_by("sequence").first()

    step_execute(step_id=pending(role="").pk)
    step_execute(step_id=pending(role="").pk)
    step_execute(step_id=pending(role="model_call", branch_index=0).pk)
    booking = pending(role="tool_call", branch_index=0)
    assert step_begin(step_id=booking.pk, worker="host:1") is not None  # its worker dies mid-call
    step_execute(step_id=pending(role="model_call", branch_index=1).pk)  # the gate stops the run
    run.refresh_from_db()
    assert run.status == "budget_exceeded"
    step_execute(step_id=booking.pk)  # the redelivery finds the run stopped
    booking.refresh_from_db()
    assert booking.status == StepStatus.BLOCKED

    run_resume(run=run, limits={"budget_usd": "5"}, reason="more")
    run = drive(run)

    assert run.status == "completed", run.error
    # Branch 0's booking may have been made by the dead attempt: only branch 1's is made now.
    assert len(tools.calls) == 1, tools.calls
    assert_invariants(run)


# --- a loop's model call billed at its "worst case" --------------------------------------------------


def test_a_loop_call_without_reported_usage_is_billed_at_least_the_input_it_sent(wire):  # noqa: F811
    tool = ToolSpec(name="lookup", description="Look up.", input_schema={"type": "object", "properties": {}})
    transcript = (
        AssistantTurn(calls=(ToolCall(id="c1", name="lookup", arguments={}),), replay=None),
        ToolResult(call_id="c1", name="lookup", content="rain " * 20_000, is_error=False),
    )
    request = CompletionRequest(
        model="gpt-4o", system_prompt="Be brief.", prompt="Plan.", max_tokens=100, tools=(tool,),
        transcript=transcript, stream=True,
    )
    answer = openai_stream(["done"], openai_usage(1, 1))
    answer.events = [event for event in answer.events if not (isinstance(event[1], dict) and event[1].get("usage"))]
    wire.script(answer)

    result = OpenAIProvider().complete(request, credentials=Credentials(api_key=SECRET_KEY_FOR_TESTS, base_url=f"{wire.url}/v1"))

    sent = count_tokens(
        request.system_prompt + request.prompt
        + transcript_text(tools=[asdict(tool)], transcript=[asdict(entry) for entry in transcript])
    )
    assert result.input_tokens >= sent, (result.input_tokens, sent)


# --- what held (passing checks) -----------------------------------------------------------------------


# Was a bug (step_succeeded read move.output of CallModel/CallTool in a cancelled run): fixed in progression.py.
@pytest.mark.parametrize("role", ["model_call", "tool_call", ""])
def test_a_loop_step_in_flight_when_the_run_is_cancelled_settles_and_is_charged(team, tools, role):
    run = start(team, source(tools.url, tool_calls=[[LOOKUP, BOOK], [LOOKUP]]))
    while not run.steps.filter(role=role, status="pending").exists():
        step_execute(step_id=run.steps.get(status="pending").pk)
    step = run.steps.get(role=role, status="pending")
    attempt = step_begin(step_id=step.pk, worker="host:1")
    run_cancel(run=run, reason="stop")
    result = kind_named(attempt.prepared.kind).run(attempt)  # the call returns after the cancel

    step_settle(attempt=attempt, result=result)

    run.refresh_from_db()
    step.refresh_from_db()
    assert run.status == "cancelled"
    assert step.status == "succeeded"
    assert not run.steps.filter(status__in=["pending", "waiting", "running"]).exists()
    if role == "model_call":
        # Every provider call that returned has its ledger row.
        assert step.ledger_entries.count() == 1
    assert_invariants(run)


def test_every_loop_model_call_of_the_fake_costs_at_most_its_estimate_with_large_results(team):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("big")

    @server.tool()
    def big(n: int) -> str:
        """A large answer."""
        return "\u00e9\u4e2d\U0001f600 x" * n

    with http_server(server=server) as url:
        text = yaml.safe_load(source(url, tool_calls=[[{"name": "travel__big", "arguments": {"n": 5000}}]] * 4))
        text["workflow"]["runtime"]["tool_output"] = {"enabled": False}
        run = drive(start(team, yaml.safe_dump(text)))

    assert run.status == "completed", run.error
    for step in run.steps.filter(role="model_call"):
        assert step.ledger_entries.get().cost_usd <= step.estimate_usd
    assert_invariants(run)


# --- hostile or odd input -----------------------------------------------------------------------------


@pytest.mark.parametrize("listed", [["x", "x", "x"], ["a_b_407e8e5c", "a_b", "a.b"]])
def test_the_names_a_model_is_shown_are_distinct_whatever_a_server_lists(listed):
    taken: set[str] = set()
    names = []
    for tool in listed:  # as ToolListKind.run names them
        name = model_tool_name("s", tool, taken)
        taken.add(name)
        names.append(name)
    assert len(set(names)) == len(names), names


# --- resume onto another version mid-loop -------------------------------------------------------------


def test_a_resume_mid_loop_onto_a_version_with_another_provider_is_refused(team, tools, wire):  # noqa: F811
    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP], [LOOKUP]], max_agent_iterations=2)))
    assert run.error["type"] == "MaxAgentIterationsError"
    Price.objects.create(
        model="claude-wire-test", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"), valid_from=date(2025, 1, 1)
    )
    credential_set(team=team, provider="anthropic", api_key=SECRET_KEY_FOR_TESTS, base_url=wire.url)
    moved = yaml.safe_load(source(tools.url, tool_calls=[[LOOKUP], [LOOKUP]], max_agent_iterations=3))
    moved["workflow"]["runtime"] |= {"provider": "anthropic", "default_model": "claude-wire-test"}
    del moved["workflow"]["cost"]
    version = workflow_create(team=team, definition=moved)

    with pytest.raises(ValidationFailed) as refused:
        run_resume(run=run, reason="a better model", workflow_version=version.version)

    assert refused.value.details == [
        {"path": "workflow_version", "message": "lacks 'planner' with its provider as it was (the run goes on inside its tool loop)"}
    ]


def test_a_listing_of_slow_servers_ends_within_the_steps_soft_time_limit(team, settings):
    import anyio
    from tests.mcp_servers import _serving, tool_server

    settings.MCP_TIMEOUT_SECONDS = 1.0
    settings.STEP_SOFT_TIME_LIMIT_SECONDS = 2
    app = tool_server().streamable_http_app(stateless_http=True, json_response=True)

    async def slow(scope, receive, send):  # each request answered after a while, within the timeout
        if scope["type"] == "http":
            await anyio.sleep(0.2)
        await app(scope, receive, send)

    with _serving(slow) as base:
        url = base + "/mcp"
        text = yaml.safe_load(source(url, tool_calls=[[LOOKUP]]))
        text["workflow"]["runtime"]["mcp_servers"] = {f"s{i}": {"type": "http", "url": url} for i in range(4)}
        run = start(team, yaml.safe_dump(text))
        began = time.monotonic()
        step_execute(step_id=run.steps.get(status="pending").pk)
        elapsed = time.monotonic() - began
    run.refresh_from_db()
    assert elapsed < settings.STEP_SOFT_TIME_LIMIT_SECONDS, (elapsed, run.status, run.error)


def _run_admitted(run):
    """The run's pending step, admitted by the gate and its work done, as a worker would, but not settled."""
    attempt = step_begin(step_id=run.steps.get(status=StepStatus.PENDING).pk, worker="host:1")
    return attempt, kind_named(attempt.prepared.kind).run(attempt)


def test_a_duplicate_settlement_of_a_step_that_charges_nothing_records_nothing(team, tools):
    """Found by the state machine: a settlement delivered twice is recognised by its ledger entry; a
    listing or tool call has none, so the duplicate was taken for a superseded attempt finishing late
    and recorded the threshold alerts due at that moment, which belong to the next settlement."""
    run = start(team, source(tools.url, tool_calls=[[LOOKUP]]), budget_usd="10", budget_mode="audit")
    attempt, result = _run_admitted(run)
    step_settle(attempt=attempt, result=result)
    # The run's spend is now at 100% of a budget lowered to it: the next settlement alerts.
    attempt_2, result_2 = _run_admitted(run)
    step_settle(attempt=attempt_2, result=result_2)
    run.refresh_from_db()
    run.budget_usd = run.spent_usd
    run.save(update_fields=["budget_usd"])
    events = Event.objects.filter(run=run).count()

    step_settle(attempt=attempt, result=result)  # the listing's settlement, delivered again

    assert Event.objects.filter(run=run).count() == events
    assert drive(run).status == "completed"
    assert Event.objects.filter(run=run, type=EventType.BUDGET_THRESHOLD_CROSSED).exists()
    assert_invariants(run)
