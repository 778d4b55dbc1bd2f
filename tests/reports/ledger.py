"""Runs and ledger entries for report tests, written directly: a report reads the ledger, whoever wrote it.
Estimates and their corrections are made by the services (`taken_over`), as they are in production."""

from datetime import datetime
from decimal import Decimal
from unittest import mock

from workflows.models import LedgerEntry, Run, Step, Team, WorkflowVersion
from workflows.providers import CompletionResult
from workflows.services.runs import run_start
from workflows.services.steps import StepAttempt, step_begin


def start_run(*, team: Team, version: WorkflowVersion, inputs: dict | None = None, limits: dict | None = None) -> Run:
    """A run of `version`; the inputs default to the research pipeline's."""
    inputs = {"topic": "x"} if inputs is None else inputs
    return run_start(team=team, workflow=version.workflow_id, inputs=inputs, limits=limits)


def taken_over(run: Run, *, sequence: int) -> tuple[StepAttempt, StepAttempt]:
    """The step's attempt, and the one that took the step over as if its worker had died: the first is
    charged its reservation as an estimate, awaiting usage; settling it late corrects the estimate."""
    step = run.steps.get(sequence=sequence)
    lost = step_begin(step_id=step.pk, worker="host-a:1")
    return lost, step_begin(step_id=step.pk, worker="host-b:2")


def answer(output: dict, *, output_tokens: int = 1000) -> CompletionResult:
    """A model's answer: a step of the research pipeline costs $0.30 per 1,000 output tokens."""
    return CompletionResult(output=output, input_tokens=3, output_tokens=output_tokens)


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
