"""Control requests racing each other: real threads, each with its own database connection, released
together by a barrier. Whatever the interleaving, every answer is true to one serial order of the
requests and the run ends in one consistent state.

They run on SQLite too, where writers take turns on the database lock rather than on row locks."""

import threading
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connections

from tests.conftest import client_for
from tests.factories import THREE_STEP_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import BudgetChange, EventType, Run, StepStatus
from workflows.providers import CompletionResult
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle

pytestmark = pytest.mark.django_db(transaction=True)

RACERS = 8
RESULT = CompletionResult(output={"findings": "facts"}, input_tokens=3, output_tokens=1000)


def race(calls: list[Callable]) -> list:
    """Start every call at the same moment, each on a thread of its own; their results, in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def racer(index: int, call: Callable) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test's thread below
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's own connections, so the test database can be dropped

    threads = [threading.Thread(target=racer, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a racer is stuck"
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def clients(team):
    """One API client per racer, all with keys of `team`."""
    return [client_for(team) for _ in range(RACERS)]


@pytest.fixture
def stopped_run(team) -> Run:
    """A run its enforce budget stopped before its second step, driven through the services."""
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(
        team=team,
        workflow=version.workflow_id,
        inputs={"topic": "x"},
        limits={"budget_usd": "0.5", "budget_mode": "enforce"},
    )
    step_settle(attempt=step_begin(step_id=run.steps.get(sequence=1).pk, worker="test:1"), result=RESULT)
    assert step_begin(step_id=run.steps.get(sequence=2).pk, worker="test:1") is None
    run.refresh_from_db()
    assert (run.status, run.spent_usd) == ("budget_exceeded", Decimal("0.300000"))
    return run


def resume_call(client, run: Run, reason: str, key: str | None = None) -> Callable:
    headers = {"Idempotency-Key": key} if key else {}
    body = {"budget_usd": "2", "reason": reason}
    return lambda: client.post(f"/api/v1/runs/{run.pk}/resume", body, format="json", headers=headers)


def cancel_call(client, run: Run, reason: str) -> Callable:
    return lambda: client.post(f"/api/v1/runs/{run.pk}/cancel", {"reason": reason}, format="json")


def test_of_concurrent_resumes_exactly_one_wins_and_the_rest_are_409(clients, stopped_run):
    responses = race([resume_call(client, stopped_run, f"racer {i}") for i, client in enumerate(clients)])

    assert Counter(r.status_code for r in responses) == {202: 1, 409: RACERS - 1}
    [winner] = [i for i, r in enumerate(responses) if r.status_code == 202]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"] == {
                "type": "invalid_run_state",
                "message": "Cannot resume a run that is in 'queued' status.",
                "details": {"status": "queued"},
            }
    [event] = stopped_run.events.filter(type=EventType.RUN_RESUMED)
    assert event.payload["reason"] == f"racer {winner}"
    assert BudgetChange.objects.filter(run=stopped_run, field="budget_usd").count() == 1
    stopped_run.refresh_from_db()
    assert (stopped_run.status, stopped_run.budget_usd) == ("queued", Decimal("2.000000"))
    assert list(stopped_run.steps.values_list("sequence", "status")) == [(1, "succeeded"), (2, "pending")]
    assert_invariants(stopped_run)


@pytest.mark.parametrize("round_", range(3))
def test_cancels_racing_resumes_end_cancelled_and_nothing_runs_after_the_cancel(clients, stopped_run, round_):
    half = RACERS // 2
    calls = [cancel_call(client, stopped_run, f"cancel {i}") for i, client in enumerate(clients[:half])]
    calls += [resume_call(client, stopped_run, f"resume {i}") for i, client in enumerate(clients[half:])]
    responses = race(calls)
    cancels, resumes = responses[:half], responses[half:]

    # Cancelling twice is refused, so exactly one cancel wins whatever the order.
    assert Counter(r.status_code for r in cancels) == {200: 1, 409: half - 1}
    [cancelled] = stopped_run.events.filter(type=EventType.RUN_CANCELLED)
    resumed = list(stopped_run.events.filter(type=EventType.RUN_RESUMED))
    resume_statuses = Counter(r.status_code for r in resumes)
    if resumed:
        # A resume took the run before the cancel did: the cancel then stopped the queued run.
        assert resume_statuses == {202: 1, 409: half - 1}
        assert resumed[0].pk < cancelled.pk
        assert cancelled.payload["from_status"] == "queued"
    else:
        # The cancel came first, and a cancelled run cannot be resumed.
        assert resume_statuses == {409: half}
        assert cancelled.payload["from_status"] == "budget_exceeded"
    for response in resumes:
        if response.status_code == 409:
            assert response.json()["error"]["type"] == "invalid_run_state"

    stopped_run.refresh_from_db()
    assert stopped_run.status == "cancelled"
    next_step = stopped_run.steps.get(sequence=2)
    assert next_step.status == StepStatus.CANCELLED
    # The task a winning resume enqueued finds the run cancelled and runs nothing.
    assert step_begin(step_id=next_step.pk, worker="test:2") is None
    assert stopped_run.ledger_entries.count() == 1
    assert_invariants(stopped_run)


def test_concurrent_starts_with_one_idempotency_key_start_exactly_one_run(team, clients):
    workflow_version(team=team, source=THREE_STEP_YAML)
    body = {"workflow": "research-pipeline", "inputs": {"topic": "tides"}}
    responses = race(
        [
            lambda client=client: client.post("/api/v1/runs", body, format="json", headers={"Idempotency-Key": "once"})
            for client in clients
        ]
    )

    [run] = Run.objects.all()
    executed = [r for r in responses if r.status_code == 202 and "Idempotent-Replayed" not in r.headers]
    replayed = [r for r in responses if r.status_code == 202 and "Idempotent-Replayed" in r.headers]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(executed) == 1
    assert len(executed) + len(replayed) + len(in_progress) == RACERS
    assert all(r.json() == executed[0].json() for r in replayed)
    assert executed[0].json()["id"] == run.pk
    for response in in_progress:
        assert response.json()["error"]["type"] == "idempotency_key_in_progress"
        assert response.json()["error"]["details"] == {"key": "once"}


def test_concurrent_resumes_with_one_idempotency_key_resume_once_and_never_see_the_queued_run(clients, stopped_run):
    responses = race([resume_call(client, stopped_run, "finance said yes", key="resume-once") for client in clients])

    executed = [r for r in responses if r.status_code == 202 and "Idempotent-Replayed" not in r.headers]
    assert len(executed) == 1
    for response in responses:
        if response.status_code == 202:
            assert response.json() == executed[0].json()
        else:
            # Never invalid_run_state: the key keeps the retries away from the run they resumed.
            assert (response.status_code, response.json()["error"]["type"]) == (409, "idempotency_key_in_progress")
    assert stopped_run.events.filter(type=EventType.RUN_RESUMED).count() == 1
    assert_invariants(stopped_run)
