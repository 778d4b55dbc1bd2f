"""Tools that cost money: an operator's price per call of a tool (ToolPrice) is reserved by the gate
before the call, as a model call's estimate is, and a call that may have been made is charged it, a
ledger entry of kind tool. Driven step by step in this thread against a real MCP server on 127.0.0.1,
as tests/services/test_tool_loop.py drives its loops.

The model calls cost as there (input $10 and output $1,000 per million tokens, 100 output tokens at
most: at most about $0.10 each); `book` is priced at $0.50 a call, far above any model call."""

from decimal import Decimal

import anyio
import pytest
import yaml
from mcp.server.mcpserver import MCPServer

from tests.conftest import client_for
from tests.factories import TeamFactory
from tests.invariants import assert_invariants
from tests.mcp_servers import http_server
from tests.services.test_tool_loop import BOOK, LOOKUP, Tools, drive, events, source, start, to_tool_call, tools  # noqa: F401 - tools, the fixture
from workflows.definition import tool_server_key
from workflows.models import EventType, LedgerEntry, ToolPrice
from workflows.services.runs import run_resume
from workflows.services.steps import step_begin, step_execute

pytestmark = pytest.mark.django_db

BOOK_PRICE = Decimal("0.500000")


@pytest.fixture
def priced(tools):
    """`book` priced for every team, at the server's URL as a workflow gives it."""
    return ToolPrice.objects.create(server=tool_server_key(tools.url), tool="book", usd_per_call=BOOK_PRICE)


def tool_rows(run) -> list[tuple]:
    return list(
        LedgerEntry.objects.filter(run=run, kind="tool")
        .order_by("id")
        .values_list("agent", "provider", "model", "tool_server", "tool", "input_tokens", "price_source", "cost_usd")
    )


def model_cost(run, turn: int) -> Decimal:
    step = run.steps.filter(role="model_call").order_by("sequence")[turn - 1]
    return step.ledger_entries.get().cost_usd


def test_a_priced_tool_is_charged_its_price_per_call_as_a_tool_entry_and_an_unpriced_one_costs_nothing(team, tools, priced):
    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP, BOOK], [BOOK]])))

    assert run.status == "completed", run.error
    assert tools.calls == [("lookup", {"city": "Oslo"}), ("book", {"city": "Oslo"}), ("book", {"city": "Oslo"})]
    key = tool_server_key(tools.url)
    # One entry per call of the priced tool, under the agent's name; none for the unpriced lookup.
    assert tool_rows(run) == [("planner", "mcp", "", key, "book", 0, "table", BOOK_PRICE)] * 2
    assert LedgerEntry.objects.filter(run=run, kind="model").count() == 3
    model_spend = sum(LedgerEntry.objects.filter(run=run, kind="model").values_list("cost_usd", flat=True))
    assert run.spent_usd == model_spend + 2 * BOOK_PRICE
    # The gate reserved each call's price before it; the event of each call says what it cost.
    calls = run.steps.filter(role="tool_call").order_by("sequence")
    assert [step.estimate_usd for step in calls] == [Decimal("0"), BOOK_PRICE, BOOK_PRICE]
    called = [payload for _, payload in events(run, EventType.TOOL_CALL_COMPLETED)]
    assert [(each["tool"], each["cost_usd"]) for each in called] == [
        ("travel__lookup", "0.000000"),
        ("travel__book", "0.500000"),
        ("travel__book", "0.500000"),
    ]
    assert_invariants(run)


def test_a_teams_own_price_wins_over_the_price_for_every_team_and_applies_to_that_team_alone(team, tools, priced):
    ToolPrice.objects.create(team=team, server=priced.server, tool="book", usd_per_call=Decimal("0.2"))
    other = TeamFactory(name="globex")
    ToolPrice.objects.create(team=other, server=priced.server, tool="lookup", usd_per_call=Decimal("9"))

    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP, BOOK]])))

    assert run.status == "completed", run.error
    assert [(row[4], row[6], row[7]) for row in tool_rows(run)] == [("book", "team", Decimal("0.200000"))]
    other_run = drive(start(other, source(tools.url, tool_calls=[[BOOK]])))
    assert [(row[4], row[6], row[7]) for row in tool_rows(other_run)] == [("book", "table", BOOK_PRICE)]
    assert_invariants(run, other_run)


def test_a_price_names_the_server_whatever_case_or_query_its_url_is_written_with(team, tools, priced):
    written = tools.url.replace("http://127.0.0.1", "HTTP://127.0.0.1") + "?session=s3cret"

    run = drive(start(team, source(written, tool_calls=[[BOOK]])))

    assert run.status == "completed", run.error
    [row] = tool_rows(run)
    assert (row[3], row[7]) == (priced.server, BOOK_PRICE)
    assert "s3cret" not in row[3]  # a query's token is never kept in the ledger


def test_an_enforce_budget_stops_the_run_before_a_paid_call_and_a_resume_makes_it_once(team, tools, priced):
    text = source(tools.url, tool_calls=[[BOOK]])
    free = drive(start(team, text))
    tools.calls.clear()
    # Room for the first model call, and for all but a micro-dollar of the paid call after it.
    budget = model_cost(free, 1) + BOOK_PRICE - Decimal("0.000001")

    run = drive(start(team, text, budget_usd=str(budget), budget_mode="enforce"))

    assert run.status == "budget_exceeded"
    assert tools.calls == []  # stopped before the call, not after
    assert run.spent_usd == model_cost(run, 1) and not tool_rows(run)
    stopped = run.steps.order_by("-sequence").first()
    assert (stopped.role, stopped.status) == ("tool_call", "blocked")
    assert run.checkpoints.order_by("-id").first().next_step_id == stopped.pk
    [(_, exceeded)] = events(run, EventType.BUDGET_EXCEEDED)
    assert Decimal(exceeded["projected_usd"]) == model_cost(run, 1) + BOOK_PRICE
    assert run.error["type"] == "BudgetExceededError"

    run_resume(run=run, limits={"budget_usd": "5"}, reason="the booking is worth it")
    run = drive(run)

    assert run.status == "completed", run.error
    assert tools.calls == [("book", {"city": "Oslo"})]
    assert [row[7] for row in tool_rows(run)] == [BOOK_PRICE]
    assert run.spent_usd == free.spent_usd
    assert_invariants(run)


def test_audit_mode_reports_at_the_paid_call_where_enforce_would_stop_and_makes_it(team, tools, priced):
    text = source(tools.url, tool_calls=[[BOOK]])
    free = drive(start(team, text))
    tools.calls.clear()
    budget = model_cost(free, 1) + BOOK_PRICE - Decimal("0.000001")

    run = drive(start(team, text, budget_usd=str(budget), budget_mode="audit"))

    assert run.status == "completed", run.error
    assert tools.calls == [("book", {"city": "Oslo"})]
    [(_, exceeded)] = events(run, EventType.BUDGET_EXCEEDED)
    assert Decimal(exceeded["projected_usd"]) == model_cost(run, 1) + BOOK_PRICE
    assert (exceeded["current_agent"], exceeded["budget_mode"]) == ("planner", "audit")
    assert run.spent_usd == free.spent_usd > Decimal(budget)
    assert_invariants(run)


def test_a_priced_call_never_made_is_not_charged(team, tools, priced, settings):
    # The server refused before connecting: the loop goes on with the error, nothing is charged.
    run = start(team, source(tools.url, tool_calls=[[BOOK]]))
    to_tool_call(run)
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    run = drive(run)

    assert run.status == "completed", run.error
    call = run.steps.get(role="tool_call")
    assert call.output["is_error"] and "was not called" in call.output["content"]
    assert tools.calls == [] and not tool_rows(run)
    assert_invariants(run)


def test_a_priced_call_whose_worker_died_is_not_made_again_but_charged_as_its_outcome_is_unknown(team, tools, priced):
    run = start(team, source(tools.url, tool_calls=[[BOOK]]))
    step = to_tool_call(run)
    assert step_begin(step_id=step.pk, worker="host:1") is not None  # its worker dies with the call unmade

    step_execute(step_id=step.pk)  # the redelivery
    run = drive(run)

    assert run.status == "completed", run.error
    step.refresh_from_db()
    assert "outcome is unknown" in step.output["content"]
    assert tools.calls == []
    # The attempt whose worker died may have made the call: a guard never counts less than is billed.
    # It is charged the price as an estimate; the attempt that did not call, nothing.
    assert [(row[4], row[-1]) for row in tool_rows(run)] == [("book", BOOK_PRICE)]
    entry = LedgerEntry.objects.get(kind="tool")
    assert (entry.attempt, entry.basis, entry.tool) == (1, "estimated", "book")
    assert_invariants(run)


def test_a_priced_call_is_charged_when_the_tool_answers_with_an_error(team, tools):
    ToolPrice.objects.create(server=tool_server_key(tools.url), tool="fail", usd_per_call=Decimal("0.03"))

    run = drive(start(team, source(tools.url, tool_calls=[[{"name": "travel__fail", "arguments": {"reason": "full"}}]])))

    assert run.status == "completed", run.error
    assert run.steps.get(role="tool_call").output["is_error"]
    assert [row[7] for row in tool_rows(run)] == [Decimal("0.030000")]
    assert_invariants(run)


def test_a_priced_call_abandoned_at_its_servers_timeout_is_charged_as_it_may_have_been_made(team):
    server = MCPServer("slow")
    started = []

    @server.tool()
    async def search(query: str) -> str:
        """A search that takes its time."""
        started.append(query)
        await anyio.sleep(3)
        return "found"

    with http_server(server=server) as url:
        ToolPrice.objects.create(server=tool_server_key(url), tool="search", usd_per_call=Decimal("0.25"))
        text = yaml.safe_load(source(url, tool_calls=[[{"name": "travel__search", "arguments": {"query": "fjords"}}]]))
        text["workflow"]["runtime"]["mcp_servers"]["travel"]["timeout"] = 1000  # ms
        run = drive(start(team, yaml.safe_dump(text)))

    assert run.status == "completed", run.error
    call = run.steps.get(role="tool_call")
    assert call.output["is_error"] and "did not answer within 1 seconds" in call.output["content"]
    assert started == ["fjords"]
    assert [row[7] for row in tool_rows(run)] == [Decimal("0.250000")]
    assert_invariants(run)


def test_spend_by_tool_in_the_api_and_the_ledger_naming_the_tool(team, tools, priced):
    run = drive(start(team, source(tools.url, tool_calls=[[LOOKUP, BOOK], [BOOK]])))
    api = client_for(team)

    report = api.get("/api/v1/spend?group_by=tool").json()

    model_spend = sum(LedgerEntry.objects.filter(run=run, kind="model").values_list("cost_usd", flat=True))
    assert [(group["key"], group["spent_usd"], group["steps"]) for group in report["groups"]] == [
        (f"book @ {priced.server}", "1.000000", 2),
        ("", f"{model_spend:.6f}", 3),  # the model calls, together
    ]
    assert report["total_usd"] == f"{run.spent_usd:.6f}"
    ledger = api.get(f"/api/v1/runs/{run.pk}/ledger").json()["results"]
    booked = [entry for entry in ledger if entry["kind"] == "tool"]
    assert [(entry["agent"], entry["provider"], entry["model"], entry["tool_server"], entry["tool"], entry["cost_usd"])
            for entry in booked] == [("planner", "mcp", "", priced.server, "book", "0.500000")] * 2  # fmt: skip
    assert {entry["kind"] for entry in ledger} == {"model", "tool"}


def test_the_admin_spend_page_breaks_spend_down_by_tool(admin_client, team, tools, priced):
    run = drive(start(team, source(tools.url, tool_calls=[[BOOK]])))

    response = admin_client.get("/admin/workflows/ledgerentry/spend/", {"since": "", "until": ""})

    by_tool = next(table for table in response.context["tables"] if table["by"] == "tool")
    assert by_tool["headings"] == ["Server", "Tool"]
    assert [(row["labels"], row["figures"][0]) for row in by_tool["rows"]] == [
        ([priced.server, "book"], "$0.500000"),  # a table's exact micro-dollars
        (["(model calls)", ""], f"${run.spent_usd - BOOK_PRICE:,.6f}"),
    ]
    by_model = next(table for table in response.context["tables"] if table["by"] == "model")
    assert ["(priced tool calls)"] in [row["labels"] for row in by_model["rows"]]
    csv = admin_client.get("/admin/workflows/ledgerentry/spend.csv", {"by": "tool", "since": "", "until": ""})
    assert csv.content.decode().splitlines()[:2] == [
        "server,tool,spend_usd,runs,steps,input_tokens,output_tokens,unpriced_steps",
        f"{priced.server},book,0.500000,1,1,0,0,0",
    ]
