"""A small typed client of budgetsvc's REST API (docs/api.md), usable on its own:

    client = BudgetsvcClient()  # BUDGETSVC_URL and BUDGETSVC_API_KEY
    version = client.upload_workflow(Path("examples/research-pipeline.yaml").read_text())
    run = client.start_run(version.name, inputs={"topic": "tides"}, budget_usd="0.50", budget_mode="enforce")
    for item in client.follow(run.id):
        ...  # an Event as it happens, or the Run whenever it changed

It imports nothing of the service (no Django, no Celery): only httpx2 and PyYAML. Every error the API
answers is an `ApiError` carrying the API's one error shape; a service that cannot be reached is a
`ConnectionFailed`; an answer that is not the API's (a redirect, a proxy's page) is an `UnexpectedAnswer`.
"""

from __future__ import annotations

import ipaddress
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
# Set to 1 to send the API key over plain http to a host that is not this machine (a private network).
ALLOW_HTTP_VARIABLE = "BUDGETSVC_ALLOW_HTTP"

# A follower polls every FOLLOW_MIN_INTERVAL seconds while the run moves, and backs off up to
# FOLLOW_MAX_INTERVAL while nothing changes (a queued run, a long step), so that idle followers sharing a
# key stay far below the API's read throttle.
FOLLOW_MIN_INTERVAL_SECONDS = 0.5
FOLLOW_MAX_INTERVAL_SECONDS = 5.0
FOLLOW_BACKOFF = 1.5
# A follower rides out a throttled, restarting or unreachable service for this long before it gives up.
FOLLOW_OUTAGE_SECONDS = 120.0
# Answers a follower waits out: the throttle's, and a proxy's while the service restarts.
TRANSIENT_STATUS_CODES = frozenset({429, 502, 503, 504})
# On PostgreSQL an event can commit after one with a larger id (docs/api.md#get-runsidevents): a
# follower polls from behind the events it saw less than this long ago, and skips those it has.
EVENT_COMMIT_LAG_SECONDS = 3.0
# Transport errors (a timeout, a dropped connection) retried on a request that is safe to repeat: a
# GET, or a POST that carries an Idempotency-Key, after TRANSPORT_BACKOFF_SECONDS, then twice that. A
# POST without a key is never retried.
TRANSPORT_RETRIES = 2
TRANSPORT_BACKOFF_SECONDS = 0.5
IN_PROGRESS_WAIT_SECONDS = 0.5
# The API frees a key whose first request died with its process after 5 minutes; a client waits less.
IN_PROGRESS_MAX_WAIT_SECONDS = 30.0
PAGE_SIZE = 200
# Runs a listing returns unless asked for more or fewer.
RUNS_LIMIT = 20

RUN_STATUSES = (
    "queued",
    "running",
    "waiting_for_input",
    "budget_exceeded",
    "iteration_limit",
    "timed_out",
    "failed",
    "completed",
    "cancelled",
)
# Statuses in which the run moves on by itself; in any other (a status added after this client was
# written included) nothing more happens until a person acts (answers, resumes), or ever.
MOVING_STATUSES = frozenset({"queued", "running"})
RESTING_STATUSES = frozenset(RUN_STATUSES) - MOVING_STATUSES


class BudgetsvcError(Exception):
    """Anything this client raises."""


class InvalidSettings(BudgetsvcError):
    """The client was given a URL it must not use: one with a password in it, or plain http to a host
    that is not this machine."""


class ConnectionFailed(BudgetsvcError):
    """The service could not be reached, or did not answer in time."""


class UnexpectedAnswer(BudgetsvcError):
    """The service answered something that is not the API's: a redirect, or a success that is not JSON."""


class StillGoing(BudgetsvcError):
    """`follow` waited as long as it was allowed to, and the run still moves; `run` is the run as last read."""

    def __init__(self, run: Run, waited_seconds: float):
        super().__init__(f"Run {run.id} is still {run.status} after {waited_seconds:g} seconds.")
        self.run = run


class ApiError(BudgetsvcError):
    """The API answered an error: `{"error": {"type", "message", "details"}}` (docs/api.md#errors)."""

    def __init__(self, *, status_code: int, type: str, message: str, details: Any = None, retry_after: float | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.type = type
        self.message = message
        self.details = {} if details is None else details
        self.retry_after = retry_after  # seconds, from a throttled answer's Retry-After

    @classmethod
    def from_response(cls, response: httpx2.Response) -> ApiError:
        retry_after = _seconds(response.headers.get("Retry-After"))
        try:
            error = response.json()["error"]
            return cls(
                status_code=response.status_code,
                type=str(error["type"]),
                message=str(error["message"]),
                details=error.get("details"),
                retry_after=retry_after,
            )
        except (ValueError, KeyError, TypeError):
            # Not the API's shape: a proxy's page, or the web server's own refusal (an over-long URL).
            text = response.text.strip().splitlines()
            first_line = text[0][:200] if text else response.reason_phrase
            return cls(
                status_code=response.status_code,
                type="http_error",
                message=f"HTTP {response.status_code}: {first_line}",
                retry_after=retry_after,
            )

    @property
    def transient(self) -> bool:
        """The throttle, or a proxy whose service restarts: the same request may succeed later."""
        return self.status_code in TRANSIENT_STATUS_CODES

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
            budget_usd=money_or_none(data.get("budget_usd")),
            budget_mode=data["budget_mode"],
            max_iterations=data["max_iterations"],
            timeout_seconds=data.get("timeout_seconds"),
        )


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
            id=data["id"],
            workflow=data["workflow"],
            workflow_name=data["workflow_name"],
            workflow_version=data["workflow_version"],
            status=data["status"],
            inputs=data.get("inputs") or {},
            limits=Limits.from_json(data["limits"]),
            spent_usd=money_or_none(data["spent_usd"]),
            reserved_usd=money_or_none(data.get("reserved_usd", "0")),
            estimated_usd=money_or_none(data.get("estimated_usd", "0")),
            unpriced_steps=data.get("unpriced_steps", 0),
            current_agent=data.get("current_agent", ""),
            iterations=data.get("iterations", 0),
            output=data.get("output"),
            error=data.get("error"),
            created_at=data.get("created_at", ""),
            finished_at=data.get("finished_at"),
            raw=dict(data),
        )

    @property
    def resting(self) -> bool:
        """Nothing more happens to the run until a person acts: it stopped, ended or waits for an answer."""
        return self.status not in MOVING_STATUSES


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
            id=data["id"],
            type=data["type"],
            payload=data.get("payload") or {},
            actor=data.get("actor", ""),
            created_at=data.get("created_at", ""),
            raw=dict(data),
        )


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
            id=data["id"],
            run=data.get("run"),
            step=data.get("step"),
            attempt=data.get("attempt", 1),
            agent=data.get("agent", ""),
            model=data.get("model", ""),
            input_tokens=data.get("input_tokens", 0),
            output_tokens=data.get("output_tokens", 0),
            cost_usd=money_or_none(data.get("cost_usd")),
            basis=data.get("basis", ""),
            booked_at=data.get("booked_at", ""),
            raw=dict(data),
        )


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
            key=data["key"],
            spent_usd=money_or_none(data["spent_usd"]),
            estimated_usd=money_or_none(data.get("estimated_usd", "0")),
            runs=data.get("runs", 0),
            steps=data.get("steps", 0),
            input_tokens=data.get("input_tokens", 0),
            output_tokens=data.get("output_tokens", 0),
            unpriced_steps=data.get("unpriced_steps", 0),
        )


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
            total_usd=money_or_none(data["total_usd"]),
            estimated_usd=money_or_none(data.get("estimated_usd", "0")),
            unpriced_steps=data.get("unpriced_steps", 0),
            groups=[SpendRow.from_json(group) for group in data["groups"]],
            raw=dict(data),
        )


def workflow_name_of(source: str) -> str | None:
    """The `workflow.name` a definition declares, stripped as the API stores it, or None when the text
    does not say (the API then reports what is wrong with it)."""
    try:
        document = yaml.safe_load(source)
    except yaml.YAMLError:
        return None
    workflow = document.get("workflow") if isinstance(document, dict) else None
    name = workflow.get("name") if isinstance(workflow, dict) else None
    return name.strip() if isinstance(name, str) and name.strip() else None


def service_url(url: str) -> str:
    """`url` as the client uses it, or InvalidSettings: no user or password in it (the client sends its
    key as a Bearer token, which a URL's password would replace, and the URL is shown in messages), and
    https unless the host is this machine or BUDGETSVC_ALLOW_HTTP=1 (a key sent over http can be read
    on the way)."""
    try:
        parsed = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError, ValueError) as error:
        raise InvalidSettings(f"{url!r} is not a URL: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidSettings(f"the service's URL must be http(s)://HOST[:PORT], not {parsed.copy_with(userinfo=b'')}")
    if parsed.userinfo:
        raise InvalidSettings(
            "the service's URL must not hold a user or password (the API key goes in BUDGETSVC_API_KEY): "
            f"{parsed.copy_with(userinfo=b'')}"
        )
    if parsed.scheme == "http" and not _loopback(parsed.host) and os.environ.get(ALLOW_HTTP_VARIABLE) != "1":
        raise InvalidSettings(
            f"{url} is plain http to another machine: the API key would cross the network readable. "
            f"Use https, or set {ALLOW_HTTP_VARIABLE}=1 on a network you trust."
        )
    return url.rstrip("/")


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
        self.url = service_url(url or os.environ.get("BUDGETSVC_URL") or DEFAULT_URL)
        key = api_key if api_key is not None else os.environ.get("BUDGETSVC_API_KEY", "")
        headers = {"Accept": "application/json", "User-Agent": "budgetsvc-cli"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # Redirects are not followed: one would carry the key wherever the service's answer points.
        self._http = httpx2.Client(
            base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout, transport=transport, follow_redirects=False
        )

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
        name = (name or "").strip() or workflow_name_of(source)
        if name:
            found = self._json("GET", "/workflows", params={"name": name})["results"]
            if found:
                latest = self._json("GET", f"/workflows/{found[0]['id']}")
                if latest.get("source") == source:
                    return WorkflowVersion(id=latest["id"], name=latest["name"], version=latest["latest_version"], created=False)
        body = self._json(
            "POST",
            "/workflows",
            content=source.encode("utf-8"),
            params={"name": name} if name else None,
            headers={"Content-Type": "application/yaml"},
        )
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
        return Run.from_json(self._json("GET", f"/runs/{int(run_id)}"))

    def list_runs(self, *, status: str | None = None, workflow: int | None = None, limit: int = RUNS_LIMIT) -> list[Run]:
        """The team's runs, newest first, at most `limit` of them."""
        params = _given(status=status, workflow=workflow)
        return [Run.from_json(item) for item in self._pages("/runs", params, limit=limit)]

    def events(self, run_id: int, *, after: int = 0) -> list[Event]:
        """The run's events with an id above `after`, oldest first, every page of them."""
        return [Event.from_json(item) for item in self._pages(f"/runs/{int(run_id)}/events", {"after": after})]

    def ledger(self, run_id: int) -> list[LedgerEntry]:
        return [LedgerEntry.from_json(item) for item in self._pages(f"/runs/{int(run_id)}/ledger", {})]

    def follow(
        self,
        run_id: int,
        *,
        after: int = 0,
        interval: float = FOLLOW_MIN_INTERVAL_SECONDS,
        max_interval: float = FOLLOW_MAX_INTERVAL_SECONDS,
        max_wait: float | None = None,
    ) -> Iterator[Event | Run]:
        """The run's events with an id above `after` as they happen, each followed by the run whenever
        it changed, until the run rests (`Run.resting`): the last item is always the run at rest.

        It polls `GET /runs/<id>` and `GET /runs/<id>/events?after=`, every `interval` seconds while
        something changes, backing off to `max_interval` while nothing does. A throttled answer (429,
        after its Retry-After), a proxy's 502/503/504 and an unreachable service are waited out, for
        FOLLOW_OUTAGE_SECONDS in a row at most. After `max_wait` seconds it raises StillGoing."""
        started = time.monotonic()
        seen: dict[int, float] = {}  # event id -> when this follower first saw it
        last: Run | None = None
        pause = interval
        failing_since: float | None = None
        while True:
            try:
                run = self.get_run(run_id)
                # The run is read before its events: the events of a run found at rest are all committed.
                now = time.monotonic()
                settled = [event_id for event_id, first_seen in seen.items() if now - first_seen >= EVENT_COMMIT_LAG_SECONDS]
                new_events = [event for event in self.events(run_id, after=max([after, *settled])) if event.id not in seen]
            except (ApiError, ConnectionFailed) as error:
                if isinstance(error, ApiError) and not error.transient:
                    raise
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > FOLLOW_OUTAGE_SECONDS:
                    raise
                retry_after = error.retry_after if isinstance(error, ApiError) else None
                pause = min(max(retry_after or 0, min(pause * FOLLOW_BACKOFF, max_interval)), FOLLOW_OUTAGE_SECONDS)
                self._pause_within(pause, started, max_wait, last)
                continue
            failing_since = None
            for event in new_events:
                seen[event.id] = now
                yield event
            changed = bool(new_events) or run != last
            if run != last:
                last = run
                yield run
            if run.resting:
                return
            pause = interval if changed else min(pause * FOLLOW_BACKOFF, max_interval)
            self._pause_within(pause, started, max_wait, last)

    @staticmethod
    def _pause_within(seconds: float, started: float, max_wait: float | None, run: Run | None) -> None:
        """Sleep `seconds`, or raise StillGoing when that would pass `max_wait` seconds after `started`."""
        if max_wait is not None:
            left = started + max_wait - time.monotonic()
            if left <= 0 and run is not None:
                raise StillGoing(run, max_wait)
            if left > 0:
                seconds = min(seconds, left)
        time.sleep(seconds)

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
            reason=reason,
            budget_usd=budget_usd,
            budget_mode=budget_mode,
            max_iterations=max_iterations,
            timeout_seconds=timeout_seconds,
        )
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
        return Run.from_json(self._json("POST", f"/runs/{int(run_id)}/cancel", json={"reason": reason}))

    # Reports

    def spend(self, *, group_by: str = "workflow", since: str | None = None, until: str | None = None) -> SpendReport:
        """`GET /spend`: `since` and `until` are inclusive UTC dates, `YYYY-MM-DD`."""
        params = _given(group_by=group_by, since=since, until=until)
        return SpendReport.from_json(self._json("GET", "/spend", params=params))

    def spend_csv(self, *, group_by: str = "workflow", since: str | None = None, until: str | None = None) -> str:
        params = _given(group_by=group_by, since=since, until=until, format="csv")
        return self._request("GET", "/spend", params=params, headers={"Accept": "text/csv"}).text

    # The wire

    def _idempotent_post(self, path: str, body: dict, idempotency_key: str | None) -> dict:
        key = idempotency_key or str(uuid.uuid4())
        deadline = time.monotonic() + IN_PROGRESS_MAX_WAIT_SECONDS
        while True:
            try:
                return self._json("POST", path, json=body, headers={"Idempotency-Key": key}, retry=True)
            except ApiError as error:
                # A retry that overtook the first request with its key: wait for the first one's answer.
                if error.type != "idempotency_key_in_progress":
                    raise
                if time.monotonic() > deadline:
                    error.message = (
                        f"The first request with Idempotency-Key {key} is still being processed after "
                        f"{IN_PROGRESS_MAX_WAIT_SECONDS:g} seconds: it may have taken effect (a run started, "
                        "resumed or answered). Check before trying again, or send the same key to get its answer."
                    )
                    raise
                time.sleep(IN_PROGRESS_WAIT_SECONDS)

    def _pages(self, path: str, params: dict, *, limit: int | None = None) -> Iterator[dict]:
        """Every item of a cursor-paged list, following `next` until it is null or `limit` items came.
        Only `next`'s query (its cursor) is taken: the request goes to this client's URL and path,
        wherever a proxy that rewrites hosts or schemes made the service's link point."""
        count = 0
        params = {**params, "page_size": min(limit, PAGE_SIZE) if limit else PAGE_SIZE}
        while True:
            page = self._json("GET", path, params=params)
            for item in page["results"]:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
            if not page.get("next"):
                return
            params = dict(httpx2.URL(page["next"]).params.multi_items())

    def _json(self, method: str, path: str, **kwargs) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise UnexpectedAnswer(
                f"{method} {response.request.url.copy_with(query=None)} answered {response.status_code} with {kind}, "
                f"not the API's JSON: is {self.url} budgetsvc?"
            ) from None

    def _request(self, method: str, path: str, *, retry: bool | None = None, **kwargs) -> httpx2.Response:
        attempts = 1 + (TRANSPORT_RETRIES if (method == "GET" if retry is None else retry) else 0)
        for attempt in range(attempts):
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except httpx2.TransportError as error:
                if attempt + 1 == attempts:
                    raise ConnectionFailed(f"Cannot reach budgetsvc at {self.url}: {error or type(error).__name__}") from error
                time.sleep(TRANSPORT_BACKOFF_SECONDS * 2**attempt)
        if response.is_redirect or 300 <= response.status_code < 400:
            location = response.headers.get("Location", "nowhere")
            raise UnexpectedAnswer(
                f"{self.url} answered {response.status_code}, redirecting to {location}: set BUDGETSVC_URL to the "
                "service's own URL (redirects are not followed, so that the API key goes nowhere else)"
            )
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _seconds(header: str | None) -> float | None:
    """A Retry-After header's delay in seconds (its date form is not used by the API)."""
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _given(**values) -> dict:
    """The values that were given: None means "not given", and is left out of the request."""
    return {name: str(value) if isinstance(value, Decimal) else value for name, value in values.items() if value is not None}


__all__ = [
    "ApiError",
    "BudgetsvcClient",
    "BudgetsvcError",
    "ConnectionFailed",
    "Event",
    "InvalidSettings",
    "LedgerEntry",
    "Limits",
    "Run",
    "SpendReport",
    "SpendRow",
    "StillGoing",
    "UnexpectedAnswer",
    "WorkflowVersion",
]
