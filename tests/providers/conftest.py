import json
from datetime import date
from decimal import Decimal

import pytest

from tests.providers.wire import WireServer
from workflows.models import Event, LedgerEntry, Price, Run, Step, StepStatus
from workflows.services.credentials import credential_set
from workflows.services.runs import run_start
from workflows.services.steps import step_execute
from workflows.services.workflows import workflow_create

SECRET_KEY_FOR_TESTS = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture
def wire():
    with WireServer() as server:
        yield server


@pytest.fixture
def priced(db):
    Price.objects.create(
        model="gpt-4o",
        input_per_mtok=Decimal("2.5"),
        cached_input_per_mtok=Decimal("1.25"),
        output_per_mtok=Decimal("10"),
        max_output_tokens=16384,
        valid_from=date(2024, 1, 1),
    )
    Price.objects.create(
        model="claude-wire-test",
        input_per_mtok=Decimal("3"),
        cached_input_per_mtok=Decimal("0.3"),
        cache_write_per_mtok=Decimal("3.75"),
        output_per_mtok=Decimal("15"),
        valid_from=date(2025, 1, 1),
    )


def definition(*, provider: str, model: str, stream: bool = False, output: bool = True) -> str:
    output_block = "    output: {summary: {type: string}, score: {type: integer}}\n" if output else ""
    return f"""
workflow:
  name: real-{provider}
  entry_point: writer
  input: {{topic: {{type: string, required: true}}}}
  runtime: {{provider: {provider}, default_model: {model}, max_tokens: 1000, stream: {str(stream).lower()}}}
agents:
  - name: writer
    system_prompt: "Be brief."
    prompt: "Write about {{{{ workflow.input.topic }}}}."
{output_block}"""


def start(team, wire, *, provider: str, model: str, stream: bool = False, output: bool = True, limits=None) -> Run:
    credential_set(team=team, provider=provider, api_key=SECRET_KEY_FOR_TESTS, base_url=_base_url(provider, wire))
    workflow_create(team=team, definition=definition(provider=provider, model=model, stream=stream, output=output))
    return run_start(team=team, workflow=f"real-{provider}", inputs={"topic": "budgets"}, limits=limits)


def _base_url(provider: str, wire: WireServer) -> str:
    return f"{wire.url}/v1" if provider == "openai" else wire.url


def drive(run: Run, *, max_calls: int = 10) -> Run:
    """Execute the run's steps in this thread, as a worker would, retries included, until none is left."""
    for _ in range(max_calls):
        step = Step.objects.filter(run=run, status=StepStatus.PENDING).order_by("sequence").first()
        if step is None:
            break
        step_execute(step_id=step.pk)
    run.refresh_from_db()
    return run


def ledger(run: Run) -> list[tuple]:
    return list(
        LedgerEntry.objects.filter(run=run)
        .order_by("attempt")
        .values_list("attempt", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "cost_usd", "request_id")
    )


def everything_recorded_about(run: Run) -> str:
    """Every text the service kept about a run, to search for a secret."""
    run.refresh_from_db()
    rows = [run.error, run.output]
    rows += list(Event.objects.filter(run=run).values_list("payload", flat=True))
    rows += list(run.checkpoints.values_list("outputs", flat=True))
    rows += list(run.steps.values_list("error", flat=True))
    return json.dumps(rows, default=str)
