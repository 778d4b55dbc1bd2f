"""Runs and ledger entries for report tests, written directly: a report reads the ledger, whoever wrote it."""

from datetime import datetime
from decimal import Decimal
from unittest import mock

from workflows.models import LedgerEntry, Run, Step, Team, WorkflowVersion
from workflows.services.runs import run_start


def start_run(*, team: Team, version: WorkflowVersion, inputs: dict | None = None, limits: dict | None = None) -> Run:
    """A run of `version`; the inputs default to the research pipeline's."""
    inputs = {"topic": "x"} if inputs is None else inputs
    return run_start(team=team, workflow=version.workflow_id, inputs=inputs, limits=limits)


def charge(
    *,
    run: Run,
    at: datetime,
    cost_usd: str | None,
    agent: str = "researcher",
    model: str = "sim-model",
    input_tokens: int = 10,
    output_tokens: int = 100,
    step: Step | None = None,
    attempt: int = 1,
    tool: tuple[str, str] | None = None,
) -> LedgerEntry:
    """A ledger entry dated `at` for a new step of `run`, or for another attempt of `step`.

    `cost_usd` None is an unpriced entry; `tool` (server, tool) makes it a priced tool call's, as
    ledger_charge_tool writes it: no model, no tokens."""
    if tool is not None:
        return _charge_tool(run=run, at=at, cost_usd=cost_usd, agent=agent, server=tool[0], tool=tool[1])
    if step is None:
        step = Step.objects.create(run=run, sequence=run.steps.count() + 1, agent=agent, iteration=1)
    # created_at is auto_now_add: the clock is the only way to date an entry.
    with mock.patch("django.utils.timezone.now", return_value=at):
        return LedgerEntry.objects.create(
            team_id=run.team_id,
            run=run,
            step=step,
            attempt=attempt,
            agent=agent,
            provider="fake",
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=None if cost_usd is None else Decimal(cost_usd),
        )


def _charge_tool(*, run: Run, at: datetime, cost_usd: str, agent: str, server: str, tool: str) -> LedgerEntry:
    step = Step.objects.create(run=run, sequence=run.steps.count() + 1, agent=agent, iteration=1, role="tool_call")
    with mock.patch("django.utils.timezone.now", return_value=at):
        return LedgerEntry.objects.create(
            team_id=run.team_id,
            run=run,
            step=step,
            attempt=1,
            kind="tool",
            agent=agent,
            provider="mcp",
            model="",
            tool_server=server,
            tool=tool,
            input_tokens=0,
            output_tokens=0,
            price_source="table",
            cost_usd=Decimal(cost_usd),
        )
