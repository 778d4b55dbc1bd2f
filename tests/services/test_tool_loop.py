"""An agent's tool loop, driven step by step in this thread as a worker would run it, against a real
MCP server on 127.0.0.1: each model call and each tool call is a step, gated, charged and
checkpointed; a budget stops the loop at the call that would cross it, and a resume goes on from
the loop so far, making no call again.

Prices: input $10 and output $1,000 per million tokens, a cap of 100 output tokens: each model call
reserves $0.10 for its output plus its input, which grows with each turn."""

from decimal import Decimal

import pytest
import yaml
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from tests.factories import workflow_version
from tests.invariants import assert_invariants
from tests.mcp_servers import http_server
from workflows.errors import ValidationFailed
from workflows.models import Event, EventType, LedgerEntry, Run, Step, StepStatus
from workflows.services.runs import run_resume, run_start
from workflows.services.steps import step_begin, step_execute
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db


class Tools:
    """A server whose tools count their calls: `lookup` (read-only, so safe to repeat), `book`
    (not), and `fail`."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.server = MCPServer("counted")

        @self.server.tool(annotations=ToolAnnotations(read_only_hint=True))
        def lookup(city: str) -> str:
            """The weather in a city."""
            self.calls.append(("lookup", {"city": city}))
            return f"{city}: 12 degrees and rain " + "." * 40

        @self.server.tool()
        def book(city: str) -> str:
            """Book a trip."""
            self.calls.append(("book", {"city": city}))
            return f"booked {city}"

        @self.server.tool()
        def fail(reason: str) -> str:
            """Fail, saying why."""
            self.calls.append(("fail", {"reason": reason}))
            raise ToolError(reason)


@pytest.fixture
def tools():
    counted = Tools()
    with http_server(server=counted.server) as url:
        counted.url = url
        yield counted


def to_tool_call(run: Run) -> Step:
    """Run the listing and the first model call: the run's first tool call is pending."""
    for _ in range(2):
        step_execute(step_id=run.steps.get(status="pending").pk)
    return run.steps.get(role="tool_call")


def source(url: str, *, tool_calls, output=None, **agent) -> str:
    document = {
        "workflow": {
            "name": "trip",
            "entry_point": "planner",
            "runtime": {
                "provider": "fake",
                "default_model": "sim",
                "max_tokens": 100,
                "mcp_servers": {"travel": {"type": "http", "url": url}},
            },
            "cost": {"pricing": {"sim": {"input_per_mtok": 10, "output_per_mtok": 1000}}},
        },
        "agents": [
            {
                "name": "planner",
                "prompt": "Plan a trip to Oslo.",
                "output": {"plan": {"type": "string"}},
                "mock": {"tool_calls": tool_calls, "output": output or {"plan": "Go in May."}},
                "routes": [{"to": "$end"}],
                **agent,
            }
        ],
        "output": {"plan": "{{ planner.output.plan }}"},
    }
    return yaml.safe_dump(document)


LOOKUP = {"name": "travel__lookup", "arguments": {"city": "Oslo"}}
BOOK = {"name": "travel__book", "arguments": {"city": "Oslo"}}


def start(team, text: str, **limits) -> Run:
    version = workflow_version(team=team, source=text)
    return run_start(team=team, workflow=version.workflow_id, inputs={}, limits=limits or None)


def drive(run: Run, *, max_steps: int = 50) -> Run:
    for _ in range(max_steps):
        step = run.steps.filter(status=StepStatus.PENDING).order_by("sequence").first()
        if step is None:
            break
        step_execute(step_id=step.pk)
    run.refresh_from_db()
    return run


def loop(run: Run) -> list[tuple[str, str]]:
    return list(run.steps.order_by("sequence").values_list("role", "status"))


def events(run: Run, *types) -> list[dict]:
    return list(Event.objects.filter(run=run, type__in=types).order_by("id").values_list("type", "payload"))


def test_a_tool_loop_runs_each_call_as_a_step_and_charges_each_model_call(team, tools):
    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP, BOOK], [LOOKUP]])))

    assert run.status == "completed", run.error
    assert run.output == {"plan": "Go in May."}
    assert loop(run) == [
        ("", "succeeded"),  # the tools listed
        ("model_call", "succeeded"),
        ("tool_call", "succeeded"),
        ("tool_call", "succeeded"),
        ("model_call", "succeeded"),
        ("tool_call", "succeeded"),
        ("model_call", "succeeded"),  # the answer
    ]
    assert tools.calls == [("lookup", {"city": "Oslo"}), ("book", {"city": "Oslo"}), ("lookup", {"city": "Oslo"})]
    # One ledger entry per model call, under the agent's name; the tools cost nothing here.
    entries = list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", "cost_usd"))
    assert [agent for agent, _ in entries] == ["planner"] * 3
    assert run.spent_usd == sum(cost for _, cost in entries)
    assert run.iterations == 1  # the agent's execution, counted once, as in conductor
    # Each model call is sent the loop so far, so its estimate grows with each turn.
    estimates = list(run.steps.filter(role="model_call").order_by("sequence").values_list("estimate_usd", flat=True))
    assert estimates[0] < estimates[1] < estimates[2]
    listed = run.steps.get(role="")
    assert [tool["name"] for tool in listed.output["tools"]] == ["travel__lookup", "travel__book", "travel__fail"]
    assert [kind for kind, _ in events(run, *LOOP_EVENTS)] == [
        "tools_listed",
        "model_call_completed",
        "tool_call_completed",
        "tool_call_completed",
        "model_call_completed",
        "tool_call_completed",
        "agent_completed",
    ]
    assert_invariants(run)


LOOP_EVENTS = (
    EventType.TOOLS_LISTED,
    EventType.MODEL_CALL_COMPLETED,
    EventType.TOOL_CALL_COMPLETED,
    EventType.AGENT_COMPLETED,
)


def test_each_call_is_an_event_with_its_cost(team, tools):
    run = drive(start(team, source(tools.url, tool_calls=[[BOOK]])))

    (_, asked), (_, called), (_, answered) = events(
        run, EventType.MODEL_CALL_COMPLETED, EventType.TOOL_CALL_COMPLETED, EventType.AGENT_COMPLETED
    )
    first, last = run.steps.filter(role="model_call").order_by("sequence")
    assert (asked["turn"], asked["tool_calls"], asked["cost_usd"]) == (1, ["travel__book"], str(first.ledger_entries.get().cost_usd))
    assert (called["tool"], called["is_error"], called["cost_usd"], called["role"]) == ("travel__book", False, "0.000000", "tool_call")
    assert (answered["turn"], answered["cost_usd"]) == (2, str(last.ledger_entries.get().cost_usd))


def test_an_enforce_budget_stops_the_loop_at_the_call_that_would_cross_it_and_a_resume_repeats_nothing(team, tools):
    text = source(tools.url, tool_calls=[[LOOKUP, BOOK], [LOOKUP]])
    # What the whole loop would cost, measured on a run without a budget.
    free = drive(start(team, text))
    spent = list(free.steps.filter(role="model_call").order_by("sequence").values_list("estimate_usd", flat=True))
    tools.calls.clear()
    # Room for the first model call's reservation, not the second's on top of what the first cost.
    first_cost = free.steps.filter(role="model_call").order_by("sequence").first().ledger_entries.get().cost_usd
    budget = first_cost + spent[1] - Decimal("0.000001")

    run = drive(start(team, text, budget_usd=str(budget), budget_mode="enforce"))

    assert run.status == "budget_exceeded"
    assert run.spent_usd == first_cost <= budget
    stopped = run.steps.order_by("-sequence").first()
    assert (stopped.role, stopped.status, stopped.validation["turn"]) == ("model_call", "blocked", 2)
    assert run.checkpoints.order_by("-id").first().next_step_id == stopped.pk
    assert tools.calls == [("lookup", {"city": "Oslo"}), ("book", {"city": "Oslo"})]

    run_resume(run=run, limits={"budget_usd": "1"}, reason="more")
    run = drive(run)

    assert run.status == "completed", run.error
    # The calls that returned before the stop were not made again: only the second turn's lookup is new.
    assert tools.calls == [("lookup", {"city": "Oslo"}), ("book", {"city": "Oslo"}), ("lookup", {"city": "Oslo"})]
    assert LedgerEntry.objects.filter(run=run).count() == 3
    assert run.spent_usd == free.spent_usd
    assert_invariants(run)


def test_audit_mode_reports_at_the_call_where_enforce_would_stop_and_goes_on(team, tools):
    text = source(tools.url, tool_calls=[[LOOKUP], [LOOKUP]])
    free = drive(start(team, text))
    first, second, _ = free.steps.filter(role="model_call").order_by("sequence")
    budget = first.ledger_entries.get().cost_usd + second.estimate_usd - Decimal("0.000001")

    run = drive(start(team, text, budget_usd=str(budget), budget_mode="audit"))

    assert run.status == "completed"
    [(_, exceeded)] = events(run, EventType.BUDGET_EXCEEDED)
    reported_at = run.steps.filter(role="model_call").order_by("sequence")[1]
    assert exceeded["current_agent"] == "planner"
    assert Decimal(exceeded["projected_usd"]) == first.ledger_entries.get().cost_usd + reported_at.estimate_usd
    assert_invariants(run)


def test_a_model_that_asks_for_tools_past_max_agent_iterations_fails_the_run_charged(team, tools):
    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP], [LOOKUP], [LOOKUP]], max_agent_iterations=2)))

    assert run.status == "failed"
    assert run.error["type"] == "MaxAgentIterationsError"
    assert "model call 2 of at most 2" in run.error["message"]
    # Both calls were made and billed, the one that asked past the bound too.
    assert LedgerEntry.objects.filter(run=run).count() == 2
    assert tools.calls == [("lookup", {"city": "Oslo"})]
    assert_invariants(run)


def test_a_tool_that_fails_or_does_not_exist_is_an_error_the_model_reads(team, tools):
    fail = {"name": "travel__fail", "arguments": {"reason": "closed"}}
    ghost = {"name": "travel__teleport", "arguments": {}}

    run = drive(start(team, source(tools.url, tool_calls=[[fail, ghost]])))

    assert run.status == "completed", run.error
    failed, missing = (step.output for step in run.steps.filter(role="tool_call").order_by("sequence"))
    assert failed["is_error"] and "closed" in failed["content"]
    assert missing == {"call_id": "call_1_2", "name": "travel__teleport", "content": "There is no tool named 'travel__teleport'.", "is_error": True}
    assert tools.calls == [("fail", {"reason": "closed"})]


def test_a_result_is_cut_to_the_workflows_tool_output_limit(team, tools):
    text = yaml.safe_load(source(tools.url, tool_calls=[[LOOKUP]]))
    text["workflow"]["runtime"]["tool_output"] = {"max_chars": 1000}
    server = MCPServer("long")

    @server.tool()
    def lookup(city: str) -> str:
        """A long report."""
        return "y" * 5000

    with http_server(server=server) as url:
        text["workflow"]["runtime"]["mcp_servers"]["travel"]["url"] = url
        run = drive(start(team, yaml.safe_dump(text)))

    content = run.steps.get(role="tool_call").output["content"]
    assert content.startswith("y" * 1000) and content.endswith("[tool output truncated: 1,000 of 5,000 characters shown]")


def test_an_agent_sees_only_the_tools_chosen_for_it_and_names_no_server_offers_are_reported(team, tools):
    text = yaml.safe_load(source(tools.url, tool_calls=[[LOOKUP]]))
    text["tools"] = ["lookup", "travel__book", "web_search"]
    text["agents"][0]["tools"] = ["lookup", "web_search"]

    run = drive(start(team, yaml.safe_dump(text)))

    assert [tool["name"] for tool in run.steps.get(role="").output["tools"]] == ["travel__lookup"]
    [(_, listed)] = events(run, EventType.TOOLS_LISTED)
    assert (listed["tools"], listed["unmatched"]) == (["travel__lookup"], ["web_search"])


@pytest.mark.parametrize(("call", "repeated"), [(LOOKUP, True), (BOOK, False)])
def test_a_tool_call_whose_worker_died_is_made_again_only_when_the_tool_says_that_is_harmless(team, tools, call, repeated):
    run = start(team, source(tools.url, tool_calls=[[call]]))
    step = to_tool_call(run)
    assert step_begin(step_id=step.pk, worker="host:1") is not None  # its worker dies with the call unmade

    step_execute(step_id=step.pk)  # the redelivery
    run = drive(run)

    assert run.status == "completed", run.error
    step.refresh_from_db()
    assert step.redeliveries == 1
    if repeated:
        assert tools.calls == [("lookup", {"city": "Oslo"})] and not step.output["is_error"]
    else:
        assert tools.calls == [] and step.output["is_error"]
        assert "outcome is unknown" in step.output["content"]
    assert_invariants(run)


def test_a_tool_server_that_cannot_be_reached_fails_the_listing_resumably(team, tools, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []  # 127.0.0.1 is refused, as any private address is by default

    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP]])))

    assert run.status == "failed"
    assert run.error["type"] == "ToolServerError"
    assert "'travel' could not list its tools" in run.error["message"]

    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    run_resume(run=run, reason="allowed")
    assert drive(run).status == "completed"
    assert_invariants(run)


def test_a_tool_loop_in_a_for_each_group_runs_per_branch(team, tools):
    text = yaml.safe_load(source(tools.url, tool_calls=[[LOOKUP]]))
    agent = text["agents"].pop()
    agent["prompt"] = "Plan {{ city }}."
    agent.pop("routes")
    text["workflow"]["entry_point"] = "cities"
    text["workflow"]["input"] = {"cities": {"type": "array"}}
    text["for_each"] = [
        {"name": "cities", "source": "workflow.input.cities", "as": "city", "max_concurrent": 2, "agent": agent, "routes": [{"to": "$end"}]}
    ]
    text["agents"] = [{"name": "unused", "prompt": "x", "routes": [{"to": "$end"}]}]
    text["output"] = {"plans": "{{ cities.outputs }}"}
    version = workflow_version(team=team, source=yaml.safe_dump(text))
    run = run_start(team=team, workflow=version.workflow_id, inputs={"cities": ["Oslo", "Bergen"]})

    run = drive(run)

    assert run.status == "completed", run.error
    assert run.output == {"plans": [{"plan": "Go in May."}, {"plan": "Go in May."}]}
    assert Step.objects.filter(run=run, role="tool_call").count() == 2
    assert_invariants(run)


def test_a_loop_stopped_by_max_agent_iterations_resumes_onto_a_version_that_allows_more(team, tools):
    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP], [LOOKUP]], max_agent_iterations=2)))
    assert run.error["type"] == "MaxAgentIterationsError"
    raised = workflow_create(team=team, definition=source(tools.url, tool_calls=[[LOOKUP], [LOOKUP]], max_agent_iterations=3))

    run_resume(run=run, reason="the agent needs one more round", workflow_version=raised.version)
    run = drive(run)

    assert run.status == "completed", run.error
    # The call that asked past the bound is made again on the new version, and charged again.
    assert LedgerEntry.objects.filter(run=run).count() == 4
    assert_invariants(run)


def test_a_resume_inside_a_loop_onto_a_version_whose_agent_has_no_tools_is_refused(team, tools):
    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP], [LOOKUP]], max_agent_iterations=2)))
    without = yaml.safe_load(source(tools.url, tool_calls=[]))
    without["agents"][0]["tools"] = []
    version = workflow_create(team=team, definition=without)

    with pytest.raises(ValidationFailed) as refused:
        run_resume(run=run, reason="no tools now", workflow_version=version.version)

    assert refused.value.details == [
        {"path": "workflow_version", "message": "lacks 'planner' with tools (the run goes on inside its tool loop)"}
    ]
