"""Agents with tools on a real worker, as a conductor user runs them: `trip_planner.yaml` in this
folder names an MCP server (served by the test on 127.0.0.1) and its agent calls the server's tools
in a loop of steps, each model call gated and charged. Over the API: the steps show the loop, a
budget stop mid-loop is resumed, the real OpenAI and Anthropic SDKs carry the tool calls against
wire-compatible servers, a stdio server runs where local execution is enabled, and on PostgreSQL +
Redis a worker killed mid-loop loses no charged call."""

import json
import os
import signal
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from mcp.server.mcpserver import MCPServer

from tests.conftest import wait_for_run, wait_until
from tests.integration.test_worker_crash import worker_process  # noqa: F401 - a worker process to kill
from tests.invariants import assert_invariants
from tests.mcp_servers import STDIO_SERVER, http_server
from tests.providers.wire import (
    WireServer,
    anthropic_message,
    anthropic_usage,
    openai_completion,
    openai_message,
    openai_usage,
)
from workflows.models import LedgerEntry, Price, Step

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")
SOURCE = (Path(__file__).parent / "trip_planner.yaml").read_text()
FORECAST = {"name": "weather__forecast", "arguments": {"city": "Oslo"}}


def weather_server() -> MCPServer:
    server = MCPServer("weather")

    @server.tool()
    def forecast(city: str) -> str:
        """The week's forecast for a city."""
        return f"{city}: rain all week, 9 degrees"

    return server


@pytest.fixture
def weather():
    with http_server(server=weather_server()) as url:
        yield url


def definition(url: str, **runtime) -> dict:
    data = yaml.safe_load(SOURCE)
    data["workflow"]["runtime"]["mcp_servers"]["weather"]["url"] = url
    data["workflow"]["runtime"].update(runtime)
    return data


def upload(api, data: dict) -> None:
    response = api.post("/api/v1/workflows", {"definition": yaml.safe_dump(data, sort_keys=False)}, format="json")
    assert response.status_code == 201, response.json()


def start(api, **limits):
    body = {"workflow": "trip-planner", "inputs": {"city": "Oslo"}}
    response = api.post("/api/v1/runs", {**body, "limits": limits} if limits else body, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *TERMINAL)


def steps(api, run) -> list[tuple]:
    listed = api.get(f"/api/v1/runs/{run.pk}/steps").json()["results"]
    return [(step["agent"], step["role"], step["status"]) for step in listed]


def test_the_tool_loop_runs_on_a_worker_and_the_runs_steps_and_events_show_it(api, team, weather, celery_worker):
    upload(api, definition(weather))

    run = start(api)

    assert run.status == "completed", run.error
    assert run.output == {"plan": "Pack a raincoat."}
    assert steps(api, run) == [
        ("planner", "", "succeeded"),
        ("planner", "model_call", "succeeded"),
        ("planner", "tool_call", "succeeded"),
        ("planner", "model_call", "succeeded"),
        ("writer", "", "succeeded"),
    ]
    tool_step = run.steps.get(role="tool_call")
    assert tool_step.output["content"] == "Oslo: rain all week, 9 degrees"
    events = [event["type"] for event in api.get(f"/api/v1/runs/{run.pk}/events").json()["results"]]
    assert events[:6] == [
        "run_started",
        "tools_listed",
        "model_call_completed",
        "tool_call_completed",
        "agent_completed",
        "agent_completed",
    ]
    assert list(run.ledger_entries.order_by("id").values_list("agent", flat=True)) == ["planner", "planner", "writer"]
    assert_invariants(run)


def test_an_enforce_stop_inside_the_loop_is_resumed_over_the_api_from_the_transcript(api, team, weather, celery_worker):
    upload(api, definition(weather))
    # Each planner call reserves $0.10 of output plus its input; the first costs less than that.
    run = start(api, budget_usd="0.12", budget_mode="enforce")

    assert run.status == "budget_exceeded"
    assert steps(api, run)[-1] == ("planner", "model_call", "blocked")
    assert run.spent_usd <= Decimal("0.12")
    assert run.error["current_agent"] == "planner"

    response = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "1", "reason": "the trip is worth it"}, format="json")
    assert response.status_code == 202, response.json()
    run = wait_for_run(run.pk, "completed", "failed", "budget_exceeded")

    assert run.status == "completed", run.error
    # The tool call made before the stop was not made again.
    assert run.steps.filter(role="tool_call").count() == 1
    assert run.steps.filter(role="model_call").count() == 2
    assert_invariants(run)


@pytest.fixture
def openai_server(settings):
    with WireServer() as server:
        settings.OPENAI_API_KEY = "sk-test-env-0123456789"
        settings.OPENAI_BASE_URL = f"{server.url}/v1"
        yield server


@pytest.fixture
def anthropic_server(settings):
    with WireServer() as server:
        settings.ANTHROPIC_API_KEY = "sk-test-anthropic-0123456789"
        settings.ANTHROPIC_BASE_URL = server.url
        yield server


def real_provider(url: str, provider: str, model: str) -> dict:
    data = definition(url, provider=provider, default_model=model)
    for agent in data["agents"]:
        agent.pop("mock", None)
    data["workflow"].pop("cost")
    return data


def test_openai_tool_calls_go_to_the_mcp_server_and_their_results_back_to_the_model(
    api, team, weather, openai_server, celery_worker
):
    Price.objects.create(model="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", valid_from=date(2024, 1, 1))
    call = {"id": "call_7", "type": "function", "function": {"name": "weather__forecast", "arguments": '{"city": "Oslo"}'}}
    openai_server.script(
        openai_message({"role": "assistant", "content": None, "tool_calls": [call]}, openai_usage(prompt=800, completion=40)),
        openai_completion(json.dumps({"plan": "Pack a raincoat."}), openai_usage(prompt=900, completion=20)),
        openai_completion(json.dumps({"summary": "Rain."}), openai_usage(prompt=100, completion=10)),
    )
    upload(api, real_provider(weather, "openai", "gpt-4o"))

    run = start(api)

    assert run.status == "completed", run.error
    first, second, _ = openai_server.received
    assert [tool["function"]["name"] for tool in first.body["tools"]] == ["weather__forecast"]
    assert second.body["messages"][-2:] == [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_7", "content": "Oslo: rain all week, 9 degrees"},
    ]
    # 800 x $2.50 + 40 x $10, then 900 x $2.50 + 20 x $10, then 100 x $2.50 + 10 x $10, per 1M
    assert run.spent_usd == Decimal("0.005200") == sum(run.ledger_entries.values_list("cost_usd", flat=True))
    assert_invariants(run)


def test_anthropic_tool_calls_go_to_the_mcp_server_and_their_results_back_to_the_model(
    api, team, weather, anthropic_server, celery_worker
):
    Price.objects.create(model="claude-sonnet-4-5", input_per_mtok="3", output_per_mtok="15", valid_from=date(2024, 1, 1))
    use = {"type": "tool_use", "id": "toolu_1", "name": "weather__forecast", "input": {"city": "Oslo"}}
    answer = {"type": "tool_use", "id": "toolu_2", "name": "output", "input": {"plan": "Pack a raincoat."}}
    summary = {"type": "tool_use", "id": "toolu_3", "name": "output", "input": {"summary": "Rain."}}
    anthropic_server.script(
        anthropic_message([{"type": "text", "text": "Let me look."}, use], anthropic_usage(700, 50)),
        anthropic_message([answer], anthropic_usage(800, 30)),
        anthropic_message([summary], anthropic_usage(100, 10)),
    )
    upload(api, real_provider(weather, "anthropic", "claude-sonnet-4-5"))

    run = start(api)

    assert run.status == "completed", run.error
    _, second, _ = anthropic_server.received
    assert second.body["messages"][-2:] == [
        {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, use]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Oslo: rain all week, 9 degrees", "is_error": False}
            ],
        },
    ]
    assert run.spent_usd == sum(run.ledger_entries.values_list("cost_usd", flat=True)) > 0
    assert_invariants(run)


def stdio_definition() -> dict:
    data = definition("http://unused.invalid/mcp")
    data["workflow"]["runtime"]["mcp_servers"] = {"weather": {"command": sys.executable, "args": [STDIO_SERVER]}}
    data["agents"][0]["mock"]["tool_calls"] = [[{"name": "weather__echo", "arguments": {"text": "from stdio"}}]]
    return data


def test_a_stdio_server_is_refused_at_upload_unless_the_team_may_run_commands(api, team, settings):
    settings.SCRIPT_STEPS_ENABLED = True

    response = api.post("/api/v1/workflows", {"definition": yaml.safe_dump(stdio_definition())}, format="json")

    assert response.status_code == 400
    [detail] = response.json()["error"]["details"]
    assert detail["path"] == "workflow.runtime.mcp_servers.weather.command"
    assert "the team's 'may run scripts' setting" in detail["message"]


def test_a_stdio_server_runs_on_the_worker_where_local_execution_is_enabled(api, team, settings, celery_worker):
    settings.SCRIPT_STEPS_ENABLED = True
    team.may_run_scripts = True
    team.save(update_fields=["may_run_scripts"])
    upload(api, stdio_definition())

    run = start(api)

    assert run.status == "completed", run.error
    assert run.steps.get(role="tool_call").output["content"] == "from stdio"
    assert_invariants(run)


@pytest.fixture
def loopback_allowed(monkeypatch):
    """The worker process started next may reach the test's MCP server on 127.0.0.1."""
    monkeypatch.setenv("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.1/32")


def test_a_worker_killed_mid_loop_loses_no_charged_call_and_the_loop_goes_on(
    api, team, weather, loopback_allowed, worker_process
):
    data = definition(weather)
    data["agents"][0]["mock"]["latency_ms"] = 3000
    upload(api, data)
    response = api.post("/api/v1/runs", {"workflow": "trip-planner", "inputs": {"city": "Oslo"}}, format="json")
    run_id = response.json()["id"]

    # The second model call, after the tool's result came back: the loop is half done.
    step = wait_until(
        lambda: Step.objects.filter(run_id=run_id, role="model_call", status="running", validation__turn=2)
        .exclude(worker="")
        .first(),
        timeout=60,
        message="the second model call to start",
    )
    os.kill(int(step.worker.rsplit(":", 1)[1]), signal.SIGKILL)

    run = wait_for_run(run_id, "completed", "failed", timeout=90)

    assert run.status == "completed", run.error
    step.refresh_from_db()
    assert (step.attempts, step.redeliveries) == (2, 1)
    # Each call charged once: the first model call before the kill, the second on its redelivery, and
    # the killed attempt of the second, which may have been billed, its reservation as an estimate.
    assert list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", "attempt", "basis")) == [
        ("planner", 1, "reported"),
        ("planner", 1, "estimated"),
        ("planner", 2, "reported"),
        ("writer", 1, "reported"),
    ]
    assert run.steps.filter(role="tool_call").count() == 1
    assert_invariants(run)
