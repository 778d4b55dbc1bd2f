"""A small typed client of budgetsvc's REST API (docs/api.md), usable on its own:

    client = BudgetsvcClient()  # BUDGETSVC_URL and BUDGETSVC_API_KEY
    version = client.upload_workflow(Path("examples/research-pipeline.yaml").read_text())
    run = client.start_run(version.name, inputs={"topic": "tides"}, budget_usd="0.50", budget_mode="enforce")
    for item in client.follow(run.id):
        ...  # an Event as it happens, or the Run whenever it changed

It imports nothing of the service (no Django): only httpx2 and PyYAML. Every error the API answers is an
`ApiError` carrying the API's one error shape; a service that cannot be reached is a `ConnectionFailed`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx2
import yaml

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_SECONDS = 30.0
FOLLOW_INTERVAL_SECONDS = 0.5
# On PostgreSQL an event can commit after one with a larger id (docs/api.md#get-runsidevents): a
# follower polls from behind the events it saw less than this long ago, and skips those it has.
EVENT_COMMIT_LAG_SECONDS = 3.0
# Transport errors (a timeout, a dropped connection) retried on a request that is safe to repeat: a
# GET, or a POST that carries an Idempotency-Key. A POST without one is never retried.
TRANSPORT_RETRIES = 2
IN_PROGRESS_WAIT_SECONDS = 0.5
# The API frees a key whose first request died with its process after 5 minutes; a client waits less.
IN_PROGRESS_MAX_WAIT_SECONDS = 30.0

RUN_STATUSES = (
    "queued", "running", "waiting_for_input", "budget_exceeded", "iteration_limit", "timed_out", "failed",
    "completed", "cancelled",
)  # fmt: skip
# Statuses in which nothing more happens until a person acts (answers, resumes) or ever.
RESTING_STATUSES = frozenset(RUN_STATUSES) - {"queued", "running"}


class BudgetsvcError(Exception):
    """Anything this client raises."""


class ConnectionFailed(BudgetsvcError):
    """The service could not be reached, or did not answer in time."""


class ApiError(BudgetsvcError):
    """The API answered an error: `{"error": {"type", "message", "details"}}` (docs/api.md#errors)."""

    def __init__(self, *, status_code: int, type: str, message: str, details: Any = None):
        super().__init__(message)
        self.status_code = status_code
        self.type = type
        self.message = message
        self.details = {} if details is None else details

    @classmethod
    def from_response(cls, response: httpx2.Response) -> ApiError:
        try:
            error = response.json()["error"]
            return cls(
                status_code=response.status_code, type=str(error["type"]), message=str(error["message"]),
                details=error.get("details"),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError):
            # Not the API's shape: a proxy's page, or the web server's own refusal (an over-long URL).
            text = response.text.strip().splitlines()
            return cls(
                status_code=response.status_code, type="http_error",
                message=f"HTTP {response.status_code}: {text[0][:200] if text else response.reason_phrase}",
            )  # fmt: skip

    def __str__(self) -> str:
        return f"{self.message} ({self.status_code} {self.type})"


def money_or_none(value: Any) -> Decimal | None:
    """An amount of the API's JSON (a decimal string, or null) as a Decimal."""
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True)
class WorkflowVersion:
    id: int
    name: str
    version: int
    created: bool  # False when the source was the latest version's already, and nothing was uploaded


@dataclass(frozen=True)
class Limits:
    budget_usd: Decimal | None
    budget_mode: str
    max_iterations: int
    timeout_seconds: int | None

    @classmethod
    def from_json(cls, data: Mapping) -> Limits:
        return cls(
            budget_usd=money_or_none(data.get("budget_usd")), budget_mode=data["budget_mode"],
            max_iterations=data["max_iterations"], timeout_seconds=data.get("timeout_seconds"),
        )  # fmt: skip


@dataclass(frozen=True)
class Run:
    """The run object (docs/api.md#the-run-object); `raw` is the API's JSON as it came."""

    id: int
    workflow: int
    workflow_name: str
    workflow_version: int
    status: str
    inputs: dict
    limits: Limits
    spent_usd: Decimal
    reserved_usd: Decimal
    estimated_usd: Decimal
    unpriced_steps: int
    current_agent: str
    iterations: int
    output: Any
    error: dict | None
    created_at: str
    finished_at: str | None
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping) -> Run:
        return cls(
            id=data["id"], workflow=data["workflow"], workflow_name=data["workflow_name"],
            workflow_version=data["workflow_version"], status=data["status"], inputs=data.get("inputs") or {},
            limits=Limits.from_json(data["limits"]), spent_usd=money_or_none(data["spent_usd"]),
            reserved_usd=money_or_none(data.get("reserved_usd", "0")),
            estimated_usd=money_or_none(data.get("estimated_usd", "0")),
            unpriced_steps=data.get("unpriced_steps", 0), current_agent=data.get("current_agent", ""),
            iterations=data.get("iterations", 0), output=data.get("output"), error=data.get("error"),
            created_at=data.get("created_at", ""), finished_at=data.get("finished_at"), raw=dict(data),
        )  # fmt: skip

    @property
    def resting(self) -> bool:
        """Nothing more happens to the run until a person acts: it stopped, ended or waits for an answer."""
        return self.status in RESTING_STATUSES


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    payload: dict
    actor: str
    created_at: str
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping) -> Event:
        return cls(
            id=data["id"], type=data["type"], payload=data.get("payload") or {}, actor=data.get("actor", ""),
            created_at=data.get("created_at", ""), raw=dict(data),
        )  # fmt: skip


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    run: int | None
    step: int | None
    attempt: int
    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    basis: str
    booked_at: str
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping) -> LedgerEntry:
        return cls(
            id=data["id"], run=data.get("run"), step=data.get("step"), attempt=data.get("attempt", 1),
            agent=data.get("agent", ""), model=data.get("model", ""), input_tokens=data.get("input_tokens", 0),
            output_tokens=data.get("output_tokens", 0), cost_usd=money_or_none(data.get("cost_usd")),
            basis=data.get("basis", ""), booked_at=data.get("booked_at", ""), raw=dict(data),
        )  # fmt: skip


@dataclass(frozen=True)
class SpendRow:
    key: str
    spent_usd: Decimal
    estimated_usd: Decimal
    runs: int
    steps: int
    input_tokens: int
    output_tokens: int
    unpriced_steps: int

    @classmethod
    def from_json(cls, data: Mapping) -> SpendRow:
        return cls(
            key=data["key"], spent_usd=money_or_none(data["spent_usd"]),
            estimated_usd=money_or_none(data.get("estimated_usd", "0")),
            runs=data.get("runs", 0), steps=data.get("steps", 0), input_tokens=data.get("input_tokens", 0),
            output_tokens=data.get("output_tokens", 0), unpriced_steps=data.get("unpriced_steps", 0),
        )  # fmt: skip


@dataclass(frozen=True)
class SpendReport:
    total_usd: Decimal
    estimated_usd: Decimal
    unpriced_steps: int
    groups: list[SpendRow]
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping) -> SpendReport:
        return cls(
            total_usd=money_or_none(data["total_usd"]), estimated_usd=money_or_none(data.get("estimated_usd", "0")),
            unpriced_steps=data.get("unpriced_steps", 0), groups=[SpendRow.from_json(g) for g in data["groups"]],
            raw=dict(data),
        )  # fmt: skip


def workflow_name_of(source: str) -> str | None:
    """The `workflow.name` a definition declares, or None when the text does not say (the API then
    reports what is wrong with it)."""
    try:
        document = yaml.safe_load(source)
    except yaml.YAMLError:
        return None
    workflow = document.get("workflow") if isinstance(document, dict) else None
    name = workflow.get("name") if isinstance(workflow, dict) else None
    return name if isinstance(name, str) and name.strip() else None


class BudgetsvcClient:
    """budgetsvc's API for one team's key. Without arguments it reads `BUDGETSVC_URL` (default
    http://127.0.0.1:8000) and `BUDGETSVC_API_KEY`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx2.BaseTransport | None = None,
    ):
        self.url = (url or os.environ.get("BUDGETSVC_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("BUDGETSVC_API_KEY", "")
        headers = {"Accept": "application/json", "User-Agent": "budgetsvc-cli"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx2.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BudgetsvcClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # Workflows

    def upload_workflow(self, source: str, *, name: str | None = None) -> WorkflowVersion:
        """Store `source` as a new version of the team's workflow, unless it is the latest version's
        source already: then that version, and nothing is uploaded (the API itself numbers every
        upload as a new version)."""
        name = name or workflow_name_of(source)
        if name:
            found = self._request("GET", "/workflows", params={"name": name}).json()["results"]
            if found:
                latest = self._request("GET", f"/workflows/{found[0]['id']}").json()
                if latest.get("source") == source:
                    return WorkflowVersion(id=latest["id"], name=latest["name"], version=latest["latest_version"], created=False)
        body = self._request(
            "POST", "/workflows", content=source.encode("utf-8"), params={"name": name} if name else None,
            headers={"Content-Type": "application/yaml"},
        ).json()  # fmt: skip
        return WorkflowVersion(id=body["id"], name=body["name"], version=body["version"], created=True)

    # Runs

    def start_run(
        self,
        workflow: str | int,
        *,
        inputs: Mapping | None = None,
        version: int | None = None,
        budget_usd: Decimal | str | None = None,
        budget_mode: str | None = None,
        max_iterations: int | None = None,
        timeout_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Start a run. It carries an Idempotency-Key (a new one unless given), so that a retry after a
        lost answer gets the same run rather than a second one."""
        limits = _given(
            budget_usd=budget_usd, budget_mode=budget_mode, max_iterations=max_iterations, timeout_seconds=timeout_seconds
        )
        body = _given(workflow=workflow, version=version, inputs=dict(inputs or {}), limits=limits or None)
        return Run.from_json(self._idempotent_post("/runs", body, idempotency_key))

    def get_run(self, run_id: int) -> Run:
        return Run.from_json(self._request("GET", f"/runs/{int(run_id)}").json())

    def list_runs(self, *, status: str | None = None, workflow: int | None = None, limit: int = 50) -> list[Run]:
        """The team's runs, newest first, at most `limit` of them."""
        params = _given(status=status, workflow=workflow)
        return [Run.from_json(item) for item in self._pages("/runs", params, limit=limit)]

    def events(self, run_id: int, *, after: int = 0) -> list[Event]:
        """The run's events with an id above `after`, oldest first, every page of them."""
        return [Event.from_json(item) for item in self._pages(f"/runs/{int(run_id)}/events", {"after": after})]

    def ledger(self, run_id: int) -> list[LedgerEntry]:
        return [LedgerEntry.from_json(item) for item in self._pages(f"/runs/{int(run_id)}/ledger", {})]

    def follow(self, run_id: int, *, after: int = 0, interval: float = FOLLOW_INTERVAL_SECONDS) -> Iterator[Event | Run]:
        """The run's events with an id above `after` as they happen, each followed by the run whenever
        it changed, until the run rests (`Run.resting`): the last item is always the run at rest.

        It polls `GET /runs/<id>/events?after=` every `interval` seconds."""
        seen: dict[int, float] = {}  # event id -> when this follower first saw it
        last: Run | None = None
        while True:
            run = self.get_run(run_id)
            # The run is read before its events: the events of a run found at rest are all committed.
            now = time.monotonic()
            settled = [event_id for event_id, first_seen in seen.items() if now - first_seen >= EVENT_COMMIT_LAG_SECONDS]
            for event in self.events(run_id, after=max([after, *settled])):
                if event.id not in seen:
                    seen[event.id] = now
                    yield event
            if run != last:
                last = run
                yield run
            if run.resting:
                return
            time.sleep(interval)

    def resume(
        self,
        run_id: int,
        *,
        reason: str = "",
        budget_usd: Decimal | str | None = None,
        budget_mode: str | None = None,
        max_iterations: int | None = None,
        timeout_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Resume a stopped run; a limit not given keeps its value."""
        body = _given(
            reason=reason, budget_usd=budget_usd, budget_mode=budget_mode, max_iterations=max_iterations,
            timeout_seconds=timeout_seconds,
        )  # fmt: skip
        return Run.from_json(self._idempotent_post(f"/runs/{int(run_id)}/resume", body, idempotency_key))

    def answer(
        self,
        run_id: int,
        *,
        choice: str | None = None,
        text: str | None = None,
        answers: Mapping[str, str] | None = None,
        abort: bool | None = None,
        decline: bool | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Answer the step a `waiting_for_input` run waits at: a human gate's `choice` (and `text`), a
        questions step's `answers` (or `abort`), a dialog's `text` (or `decline`)."""
        body = _given(choice=choice, text=text, answers=dict(answers) if answers else None, abort=abort, decline=decline)
        return Run.from_json(self._idempotent_post(f"/runs/{int(run_id)}/input", body, idempotency_key))

    def cancel(self, run_id: int, *, reason: str = "") -> Run:
        return Run.from_json(self._request("POST", f"/runs/{int(run_id)}/cancel", json={"reason": reason}).json())

    # Reports

    def spend(self, *, group_by: str = "workflow", since: str | None = None, until: str | None = None) -> SpendReport:
        """`GET /spend`: `since` and `until` are inclusive UTC dates, `YYYY-MM-DD`."""
        params = _given(group_by=group_by, since=since, until=until)
        return SpendReport.from_json(self._request("GET", "/spend", params=params).json())

    def spend_csv(self, *, group_by: str = "workflow", since: str | None = None, until: str | None = None) -> str:
        params = _given(group_by=group_by, since=since, until=until, format="csv")
        return self._request("GET", "/spend", params=params, headers={"Accept": "text/csv"}).text

    # The wire

    def _idempotent_post(self, path: str, body: dict, idempotency_key: str | None) -> dict:
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        deadline = time.monotonic() + IN_PROGRESS_MAX_WAIT_SECONDS
        while True:
            try:
                return self._request("POST", path, json=body, headers=headers, retry=True).json()
            except ApiError as error:
                # A retry that overtook the first request with its key: wait for the first one's answer.
                if error.type != "idempotency_key_in_progress" or time.monotonic() > deadline:
                    raise
                time.sleep(IN_PROGRESS_WAIT_SECONDS)

    def _pages(self, path: str, params: dict, *, limit: int | None = None) -> Iterator[dict]:
        """Every item of a cursor-paged list, following `next` until it is null or `limit` items came."""
        count = 0
        params = {**params, "page_size": min(limit, 200) if limit else 200}
        page = self._request("GET", path, params=params).json()
        while True:
            for item in page["results"]:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
            if not page.get("next"):
                return
            page = self._request("GET", page["next"]).json()

    def _request(self, method: str, path: str, *, retry: bool | None = None, **kwargs) -> httpx2.Response:
        attempts = 1 + (TRANSPORT_RETRIES if (method == "GET" if retry is None else retry) else 0)
        for attempt in range(attempts):
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except httpx2.TransportError as error:
                if attempt + 1 == attempts:
                    raise ConnectionFailed(f"Cannot reach budgetsvc at {self.url}: {error or type(error).__name__}") from error
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response


def _given(**values) -> dict:
    """The values that were given: None means "not given", and is left out of the request."""
    return {name: str(value) if isinstance(value, Decimal) else value for name, value in values.items() if value is not None}
