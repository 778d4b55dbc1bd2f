"""Every Prometheus metric the service exports, with the one-line calls that record them.

Each label takes few values: outcomes, scopes, step kinds and statuses are the service's own names,
providers are the registered ones, and a team is named only when the operator lists it in
METRICS_TEAMS (every other team counts as "other"), since team names are tenants' input.

With PROMETHEUS_MULTIPROC_DIR set in a process's environment before it starts, prometheus-client
writes its samples to files there, and /metrics sums the files of every process (gunicorn's workers,
Celery's pool children). Without it they live in the process's own registry (tests, a shell).

What is written inside a transaction is counted when it commits: a gate decision or a charge that
rolled back never happened.
"""

import hmac
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache, partial
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.db import transaction
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from workflows.models import Team
from workflows.providers.base import ProviderError

OTHER_TEAMS = "other"

GATE_DECISIONS = Counter(
    "budgetsvc_gate_decisions",
    "Budget gate decisions before a step: outcome admitted, audit_over_budget (admitted past an audit "
    "budget), budget_exceeded, iteration_limit or timed_out; scope of the budget that decided (run, team) "
    "or none.",
    ["outcome", "scope"],
)
STEPS_FINISHED = Counter(
    "budgetsvc_steps_finished", "Steps a worker finished, by step kind and final status.", ["kind", "status"]
)
SPEND = Counter("budgetsvc_spend_usd", "USD charged to the ledger, by team.", ["team"])
SPEND_RETURNED = Counter(
    "budgetsvc_spend_returned_usd",
    "USD taken back by ledger corrections and adjustments below zero, by team; spend is the difference.",
    ["team"],
)
SWEEPER_ACTIONS = Counter(
    "budgetsvc_sweeper_actions", "Stuck steps the sweeper sent again: crashed_resent, lost_resent.", ["action"]
)
WEBHOOK_ATTEMPTS = Counter(
    "budgetsvc_webhook_attempts", "Webhook delivery attempts, by outcome: delivered, retrying, dead.", ["outcome"]
)
PROVIDER_CALL_SECONDS = Histogram(
    "budgetsvc_provider_call_seconds",
    "How long a step's call to its provider took, answered or failed.",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)
PROVIDER_ERRORS = Counter(
    "budgetsvc_provider_errors",
    "Failed provider calls, by provider and kind: rate_limited, server_error, client_error, unreachable, other.",
    ["provider", "kind"],
)


def gate_decided(*, decision) -> None:
    """Count a gate decision (services/gate.py's GateDecision) once its transaction commits."""
    if decision.stopped_by is not None:
        outcome, scope = decision.stop, decision.stopped_by.scope
    elif decision.stop is not None:
        outcome, scope = decision.stop, "none"
    elif decision.over_budget:
        outcome, scope = "audit_over_budget", decision.over_budget[0].scope
    else:
        outcome, scope = "admitted", "none"
    transaction.on_commit(GATE_DECISIONS.labels(outcome=str(outcome), scope=str(scope)).inc)


def step_finished(*, kind: str, status: str) -> None:
    transaction.on_commit(STEPS_FINISHED.labels(kind=kind, status=str(status)).inc)


def spend_recorded(*, team_id: int, cost_usd: Decimal | None) -> None:
    """Count a ledger entry's cost for its team; an unpriced entry adds nothing."""
    if not cost_usd:
        return
    counter = SPEND if cost_usd > 0 else SPEND_RETURNED
    label = _team_label(team_id, tuple(settings.METRICS_TEAMS))
    # A float is exact enough for a chart; the ledger keeps the Decimal.
    transaction.on_commit(partial(counter.labels(team=label).inc, float(abs(cost_usd))))


# One query per team and process: a renamed team keeps its old label until its processes restart.
@lru_cache(maxsize=4096)
def _team_label(team_id: int, listed: tuple[str, ...]) -> str:
    if not listed:
        return OTHER_TEAMS
    name = Team.objects.filter(pk=team_id).values_list("name", flat=True).first()
    return name if name in listed else OTHER_TEAMS


def sweep_recorded(*, report) -> None:
    """Count what one sweep (services/sweeper.py's SweepReport) did."""
    SWEEPER_ACTIONS.labels(action="crashed_resent").inc(report.crashed_resent)
    SWEEPER_ACTIONS.labels(action="lost_resent").inc(report.lost_resent)


def webhook_attempted(*, status: str) -> None:
    """Count a webhook attempt by the status its delivery was left in: a failed one is tried again."""
    WEBHOOK_ATTEMPTS.labels(outcome={"failed": "retrying"}.get(status, str(status))).inc()


@contextmanager
def provider_call_observed(*, provider: str) -> Iterator[None]:
    """Time a provider call, and count it as an error by kind when it raises ProviderError."""
    started = time.monotonic()
    try:
        yield
    except ProviderError as exc:
        PROVIDER_ERRORS.labels(provider=provider, kind=provider_error_kind(exc)).inc()
        raise
    finally:
        PROVIDER_CALL_SECONDS.labels(provider=provider).observe(time.monotonic() - started)


def provider_error_kind(error) -> str:
    status_code = error.status_code
    if status_code == 429:
        return "rate_limited"
    if status_code is not None:
        return "server_error" if status_code >= 500 else "client_error"
    return "unreachable" if error.retryable else "other"


def scrape_authorized(authorization: str) -> bool:
    """Whether an Authorization header bears METRICS_TOKEN, compared in constant time."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), settings.METRICS_TOKEN.encode())


def exposition(*, scrape_figures: Callable[[], dict]) -> bytes:
    """The text /metrics answers: every process's counters, then the gauges read at scrape time.

    `scrape_figures` returns {"reserved_usd": ..., "running_steps": ..., "queue_depth": {queue: n}},
    with None for what could not be read in time (services/health.py).
    """
    gauges = CollectorRegistry()
    gauges.register(_ScrapeTimeGauges(scrape_figures))
    return generate_latest(_counters()) + generate_latest(gauges)


def _counters() -> CollectorRegistry:
    """This process's counters, or with PROMETHEUS_MULTIPROC_DIR set, those of every process sharing it."""
    multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not multiprocess_dir:
        return REGISTRY
    counters = CollectorRegistry()
    MultiProcessCollector(counters, path=multiprocess_dir)
    return counters


def worker_exposition_start(*, port: int) -> WSGIServer:
    """Serve the counters of this worker and its pool's children at :`port`/metrics, with the web's
    bearer token, on daemon threads. The scrape-time gauges stay the web's: they read the shared
    database and broker, which every web process sees alike."""
    server = make_server("", port, _worker_exposition, server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-exposition", daemon=True).start()
    return server


def _worker_exposition(environ, start_response):
    if environ["PATH_INFO"] != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found: the worker serves /metrics only.\n"]
    if not scrape_authorized(environ.get("HTTP_AUTHORIZATION", "")):
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')])
        return [b"A valid metrics bearer token is required.\n"]
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [generate_latest(_counters())]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds the worker's shutdown


class _QuietHandler(WSGIRequestHandler):
    # A connection that sends no whole request in this long is closed: an idle one holds a thread.
    timeout = 10

    def log_message(self, format, *args) -> None:
        """No line per scrape on the worker's stderr."""


class _ScrapeTimeGauges:
    def __init__(self, read: Callable[[], dict]):
        self.read = read

    def collect(self):
        figures = self.read()
        unread = GaugeMetricFamily(
            "budgetsvc_scrape_unread",
            "1 for each source a scrape could not read in time (database, broker); its gauges are left out.",
            labels=["source"],
        )
        if figures["reserved_usd"] is None:
            unread.add_metric(["database"], 1)
        else:
            yield GaugeMetricFamily(
                "budgetsvc_reserved_usd", "USD reserved by steps running now.", value=float(figures["reserved_usd"])
            )
            yield GaugeMetricFamily(
                "budgetsvc_running_steps", "Steps running now, each holding its reservation.", value=figures["running_steps"]
            )
        if figures["queue_depth"] is None:
            unread.add_metric(["broker"], 1)
        else:
            depth = GaugeMetricFamily("budgetsvc_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"])
            for queue, count in figures["queue_depth"].items():
                depth.add_metric([queue], count)
            yield depth
        yield unread
