"""What the client does on the wire when the service, or what stands before it, answers badly: throttled,
restarting, redirecting, not JSON, paging elsewhere, slow. A fake transport (httpx2.MockTransport) plays
those answers; everything the service itself decides is tested against the live service elsewhere."""

import json
import time
from collections.abc import Callable

import httpx2
import pytest

from budgetsvc_client import cli
from budgetsvc_client import client as client_module
from budgetsvc_client.client import (
    ApiError,
    BudgetsvcClient,
    ConnectionFailed,
    Event,
    InvalidSettings,
    Run,
    StillGoing,
    UnexpectedAnswer,
)

URL = "https://api.test"


def run_json(status: str = "running", *, run_id: int = 3) -> dict:
    return {
        "id": run_id,
        "workflow": 1,
        "workflow_name": "wf",
        "workflow_version": 1,
        "status": status,
        "inputs": {},
        "limits": {"budget_usd": None, "budget_mode": "audit", "max_iterations": 10, "timeout_seconds": None},
        "spent_usd": "0.000000",
        "estimated_usd": "0.000000",
        "reserved_usd": "0.000000",
        "unpriced_steps": 0,
        "current_agent": "researcher",
        "iterations": 0,
        "output": None,
        "error": None,
        "created_at": "2026-12-07T00:00:00Z",
        "finished_at": None,
    }


def event_json(event_id: int) -> dict:
    return {"id": event_id, "type": "agent_completed", "payload": {}, "actor": "system", "created_at": ""}


def page(results: list, next_link: str | None = None) -> dict:
    return {"next": next_link, "previous": None, "results": results}


class Recorder:
    """A fake API: `answer(request)` answers each request; every request is kept, with when it came."""

    def __init__(self, answer: Callable[[httpx2.Request], httpx2.Response]):
        self.answer = answer
        self.requests: list[tuple[float, httpx2.Request]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append((time.monotonic(), request))
        return self.answer(request)

    def client(self, url: str = URL) -> BudgetsvcClient:
        return BudgetsvcClient(url, "bsk_secret", transport=httpx2.MockTransport(self), timeout=5)

    def times(self, path: str) -> list[float]:
        return [at for at, request in self.requests if request.url.path == path]


def run_cli(monkeypatch, capsys, recorder: Recorder, *argv: str) -> tuple[int, str, str]:
    """`budgetsvc ARGV` in this process, its client talking to `recorder`."""

    class FakeTransportClient(BudgetsvcClient):
        def __init__(self, url=None, api_key=None, **options):
            super().__init__(url or URL, api_key or "bsk_secret", transport=httpx2.MockTransport(recorder), **options)

    monkeypatch.setattr(cli, "BudgetsvcClient", FakeTransportClient)
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_follow_waits_out_a_throttled_answer_for_its_retry_after_and_a_restarting_proxy():
    polls = {"n": 0}

    def answer(request):
        if request.url.path.endswith("/events"):
            return httpx2.Response(200, json=page([]))
        polls["n"] += 1
        if polls["n"] == 2:
            throttled = {"error": {"type": "throttled", "message": "Request was throttled.", "details": {}}}
            return httpx2.Response(429, json=throttled, headers={"Retry-After": "1"})
        if polls["n"] == 3:
            return httpx2.Response(502, text="<html>502 Bad Gateway</html>")
        if polls["n"] == 4:
            raise httpx2.ConnectError("connection refused", request=request)
        return httpx2.Response(200, json=run_json("completed" if polls["n"] >= 6 else "running"))

    recorder = Recorder(answer)
    with recorder.client() as client:
        items = list(client.follow(3, interval=0.01, max_interval=0.05))

    assert isinstance(items[-1], Run) and items[-1].status == "completed"
    polled = recorder.times("/api/v1/runs/3")
    assert polled[2] - polled[1] >= 1.0  # the throttle's Retry-After was honoured


def test_follow_gives_up_on_a_refusal_that_is_not_transient():
    def answer(request):
        return httpx2.Response(404, json={"error": {"type": "not_found", "message": "Not found.", "details": {}}})

    with Recorder(answer).client() as client, pytest.raises(ApiError) as refused:
        list(client.follow(3, interval=0.01))
    assert refused.value.status_code == 404


def test_follow_polls_slower_while_nothing_changes_and_fast_again_once_something_does(monkeypatch):
    polls = {"n": 0}
    pauses: list[float] = []  # what the follower waited between polls, asked of time.sleep
    monkeypatch.setattr(client_module.time, "sleep", pauses.append)

    def answer(request):
        if request.url.path.endswith("/events"):
            return httpx2.Response(200, json=page([event_json(1)] if polls["n"] >= 8 else []))
        polls["n"] += 1
        return httpx2.Response(200, json=run_json("completed" if polls["n"] >= 10 else "queued"))

    with Recorder(answer).client() as client:
        events = [item for item in client.follow(3, interval=0.02, max_interval=0.2) if isinstance(item, Event)]

    assert [event.id for event in events] == [1]
    assert pauses[0] == 0.02  # the first poll found the run: its pace
    assert pauses[1] < pauses[2] < pauses[6] == 0.2  # backed off while the run stayed queued, up to the cap
    assert pauses[7] == 0.02  # the events that the 8th poll found reset the pace


def test_follow_stops_after_max_wait_with_the_run_as_last_read(monkeypatch, capsys):
    def answer(request):
        if request.url.path.endswith("/events"):
            return httpx2.Response(200, json=page([]))
        return httpx2.Response(200, json=run_json("queued"))

    with Recorder(answer).client() as client, pytest.raises(StillGoing) as still:
        started = time.monotonic()
        list(client.follow(3, interval=0.02, max_wait=0.3))
    assert time.monotonic() - started >= 0.3
    assert (still.value.run.id, still.value.run.status) == (3, "queued")

    code, out, _ = run_cli(monkeypatch, capsys, Recorder(answer), "resume", "3", "--reason", "x", "--follow", "--max-wait", "1s")
    assert code == cli.Exit.STILL_GOING == 9
    assert "run 3 is still queued after 1s: it goes on (budgetsvc status 3, budgetsvc cancel 3)" in out


def test_follow_reads_every_page_and_yields_each_event_once_in_order():
    """A poll that finds more than a page follows `next`; events arrive in bursts between polls."""
    polls = {"n": 0}

    def answer(request):
        if request.url.path == "/api/v1/runs/3":
            polls["n"] += 1
            return httpx2.Response(200, json=run_json("completed" if polls["n"] >= 4 else "running"))
        visible = min(polls["n"] * 150, 450)
        after = int(request.url.params.get("cursor") or request.url.params.get("after"))
        ids = list(range(after + 1, visible + 1))[: int(request.url.params["page_size"])]
        more = bool(ids) and ids[-1] < visible
        next_link = f"{URL}/api/v1/runs/3/events?cursor={ids[-1]}&page_size=200" if more else None
        return httpx2.Response(200, json=page([event_json(i) for i in ids], next_link))

    with Recorder(answer).client() as client:
        ids = [item.id for item in client.follow(3, interval=0) if isinstance(item, Event)]
    assert ids == list(range(1, 451))


def test_follow_polls_from_behind_the_events_it_saw_lately_and_shows_a_late_commit_once():
    """On PostgreSQL event 2 may commit after event 3 (docs/api.md#get-runsidevents)."""
    polls = {"n": 0}

    def answer(request):
        if request.url.path == "/api/v1/runs/3":
            polls["n"] += 1
            return httpx2.Response(200, json=run_json("completed" if polls["n"] >= 3 else "running"))
        committed = [1, 3] if polls["n"] == 1 else [1, 2, 3]
        after = int(request.url.params["after"])
        return httpx2.Response(200, json=page([event_json(i) for i in committed if i > after]))

    with Recorder(answer).client() as client:
        ids = [item.id for item in client.follow(3, interval=0) if isinstance(item, Event)]
    assert ids == [1, 3, 2]


def test_a_redirect_is_reported_with_where_it_points_and_never_followed(monkeypatch, capsys):
    recorder = Recorder(lambda request: httpx2.Response(301, headers={"Location": "https://elsewhere.test/x"}, text="Moved"))
    with recorder.client() as client, pytest.raises(UnexpectedAnswer, match="redirecting to https://elsewhere.test/x"):
        client.get_run(3)
    assert {request.url.host for _, request in recorder.requests} == {"api.test"}

    code, out, err = run_cli(monkeypatch, capsys, recorder, "status", "3")
    assert code == cli.Exit.UNEXPECTED_ANSWER == 10
    assert "budgetsvc: error: https://api.test answered 301, redirecting to https://elsewhere.test/x" in err
    assert "Traceback" not in err


def test_a_success_that_is_not_json_is_an_unexpected_answer(monkeypatch, capsys):
    recorder = Recorder(lambda request: httpx2.Response(200, text="<html>login</html>", headers={"Content-Type": "text/html"}))
    code, _, err = run_cli(monkeypatch, capsys, recorder, "runs")
    assert code == 10
    assert "answered 200 with text/html, not the API's JSON" in err


def test_pages_after_the_first_go_to_the_clients_own_url_with_only_nexts_query():
    def answer(request):
        if "cursor" not in request.url.params:
            internal_next = "http://10.0.0.7:8000/internal/api/v1/runs?cursor=cD0x&page_size=200&status=queued"
            return httpx2.Response(200, json=page([run_json(run_id=i) for i in range(200, 0, -1)], internal_next))
        return httpx2.Response(200, json=page([run_json(run_id=0)]))

    recorder = Recorder(answer)
    with recorder.client() as client:
        runs = client.list_runs(status="queued", limit=300)

    assert len(runs) == 201
    second = recorder.requests[1][1]
    assert str(second.url) == f"{URL}/api/v1/runs?cursor=cD0x&page_size=200&status=queued"


def test_a_url_holding_credentials_is_refused_without_showing_them(monkeypatch, capsys):
    with pytest.raises(InvalidSettings, match="must not hold a user or password"):
        BudgetsvcClient("https://ci-user:s3cr3t@api.test", "bsk_x")

    monkeypatch.setenv("BUDGETSVC_URL", "https://ci-user:s3cr3t@api.test")
    code = cli.main(["status", "1"])
    err = capsys.readouterr().err
    assert code == cli.Exit.USAGE
    assert "must not hold a user or password" in err and "s3cr3t" not in err


def test_plain_http_is_refused_to_another_machine_unless_allowed(monkeypatch):
    monkeypatch.delenv("BUDGETSVC_ALLOW_HTTP", raising=False)
    with pytest.raises(InvalidSettings, match="plain http to another machine"):
        BudgetsvcClient("http://budgets.internal:8000", "bsk_x")
    for loopback in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        BudgetsvcClient(loopback, "bsk_x").close()
    monkeypatch.setenv("BUDGETSVC_ALLOW_HTTP", "1")
    BudgetsvcClient("http://budgets.internal:8000", "bsk_x").close()


def test_a_start_whose_answer_was_lost_is_sent_again_with_its_key_after_a_pause():
    sent = []

    def answer(request):
        sent.append((time.monotonic(), request.headers["Idempotency-Key"]))
        if len(sent) == 1:
            raise httpx2.ReadTimeout("the answer was lost", request=request)
        if len(sent) == 2:
            busy = {"error": {"type": "idempotency_key_in_progress", "message": "busy", "details": {}}}
            return httpx2.Response(409, json=busy)
        return httpx2.Response(202, json=run_json("queued"))

    with Recorder(answer).client() as client:
        run = client.start_run("wf")

    assert run.id == 3
    assert len({key for _, key in sent}) == 1 and len(sent) == 3
    assert sent[1][0] - sent[0][0] >= client_module.TRANSPORT_BACKOFF_SECONDS


def test_a_start_still_in_progress_says_it_may_have_started_and_names_its_key(monkeypatch):
    monkeypatch.setattr(client_module, "IN_PROGRESS_MAX_WAIT_SECONDS", 0.2)
    busy = {"error": {"type": "idempotency_key_in_progress", "message": "busy", "details": {}}}
    with Recorder(lambda request: httpx2.Response(409, json=busy)).client() as client, pytest.raises(ApiError) as error:
        client.start_run("wf", idempotency_key="start-7")
    assert "Idempotency-Key start-7 is still being processed" in error.value.message
    assert "it may have taken effect" in error.value.message


def test_an_unreachable_service_is_retried_then_reported():
    def answer(request):
        raise httpx2.ConnectError("connection refused", request=request)

    recorder = Recorder(answer)
    with recorder.client() as client, pytest.raises(ConnectionFailed, match="Cannot reach budgetsvc at https://api.test"):
        client.get_run(3)
    assert len(recorder.requests) == 1 + client_module.TRANSPORT_RETRIES


def test_an_input_the_api_cannot_be_sent_is_refused_before_anything_is_uploaded(monkeypatch, capsys, tmp_path):
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("workflow:\n  name: wf\n")
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"threshold": 1}).replace("1", "NaN"))
    recorder = Recorder(lambda request: pytest.fail(f"a request was sent: {request.url}"))

    for argv in (["--input", "xs=[NaN]"], ["--input", "x={\"n\": 1e999}"], ["--input-file", str(inputs)]):
        code, _, err = run_cli(monkeypatch, capsys, recorder, "run", str(workflow), *argv)
        assert code == cli.Exit.USAGE, err
        assert "JSON has no NaN" in err or "too large" in err
    assert recorder.requests == []
