"""How fast does the API start runs? POST /api/v1/runs next to a trivial authenticated GET, on one server.

    .venv/bin/python bench/api_bench.py [--workers W] [--clients C] [--rounds R] [--seconds S] [--get PATH]

It needs PostgreSQL and Redis (DATABASE_URL, CELERY_BROKER_URL). Like the other benchmarks it never
touches the data of the database DATABASE_URL names: it works in a throwaway database
(`budgetsvc_bench_<pid>`) that it drops at the end, and sends steps to a queue of its own
(`budgetsvc-bench-<pid>`) that it purges at the end.

gunicorn serves the API as `manage.py serve` starts it (W sync workers, 2 by default as there, its
access log and timeout), on the throwaway database. No Celery worker runs: every run started stays
queued, as with the workers paused, so the figures are the API's alone. One team with an enforced
period budget, one API key, and one 5-agent chain (steps_bench.py's, on the fake provider).

C client threads (8 by default), each with its own connection, send requests back to back for S
seconds, all GET PATH (`/api/v1/team` by default) or all `POST /api/v1/runs` with the run's budget
enforced; R rounds of each, alternating which goes first, so that noise on this shared machine falls on
both. A short round of each beforehand is not counted (it opens the workers' database connections).
Printed: each round's requests per second, then for each kind its requests per second (requests /
seconds over its rounds), p50 and p99 in ms, and the ratio POST / GET.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetsvc.settings")
# Set before the settings load, here and (inherited) in the server: the benchmark's queue is its own.
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"budgetsvc-bench-{os.getpid()}")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.report_bench import database_name, database_url, throwaway_database  # noqa: E402
from bench.steps_bench import broker_redis, budgeted_team, chain_yaml  # noqa: E402
from budgetsvc.celery import app  # noqa: E402
from workflows.management.commands.serve import request_timeout_seconds  # noqa: E402
from workflows.models import Run, RunStatus  # noqa: E402
from workflows.services.teams import api_key_create  # noqa: E402
from workflows.services.workflows import workflow_create  # noqa: E402

QUEUE = settings.CELERY_TASK_DEFAULT_QUEUE
WEB_WORKERS = 2  # manage.py serve's gunicorn
AGENTS = 5
WARM_UP_SECONDS = 1.0


class Request(NamedTuple):
    label: str
    method: str
    path: str
    body: bytes | None
    status: int  # the answer every request must get


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=WEB_WORKERS, help="gunicorn workers")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each request")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a round")
    parser.add_argument("--get", default="/api/v1/team", help="the authenticated GET to compare with")
    args = parser.parse_args()
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"):
        sys.exit("api_bench.py needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...")

    with throwaway_database():
        try:
            bench(args)
        finally:
            app.control.purge()


def bench(args: argparse.Namespace) -> None:
    print(f"{timezone.now():%Y-%m-%d %H:%M} UTC, {database_name()}, Redis at {settings.CELERY_BROKER_URL}")
    print(f"{os.cpu_count()} CPUs; gunicorn, {args.workers} sync workers; {args.clients} clients; no Celery worker\n")
    team = budgeted_team("bench-api")
    workflow = workflow_create(team=team, definition=chain_yaml(AGENTS)).workflow_id
    _, raw_key = api_key_create(team=team, name="bench")
    run = {"workflow": str(workflow), "inputs": {"topic": "budgets"},
           "limits": {"budget_usd": "100", "budget_mode": "enforce"}}  # fmt: skip
    requests = [
        Request(f"GET {args.get}", "GET", args.get, None, 200),
        Request("POST /api/v1/runs", "POST", "/api/v1/runs", json.dumps(run).encode(), 202),
    ]
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}

    with server(workers=args.workers) as port:
        for request in requests:
            one_round(port=port, headers=headers, request=request, clients=args.clients, seconds=WARM_UP_SECONDS)
        latencies = {request.label: [] for request in requests}
        seconds = dict.fromkeys(latencies, 0.0)
        pairs = []
        print(f"{'round':>5}  {'request':<24} {'requests':>9} {'seconds':>8} {'per second':>11}")
        for n in range(args.rounds):
            rates = {}
            for request in requests if n % 2 == 0 else requests[::-1]:
                taken, wall = one_round(
                    port=port, headers=headers, request=request, clients=args.clients, seconds=args.seconds
                )
                latencies[request.label] += taken
                seconds[request.label] += wall
                rates[request.label] = len(taken) / wall
                print(f"{n + 1:>5}  {request.label:<24} {len(taken):>9,} {wall:>8.2f} {len(taken) / wall:>11,.0f}")
            pairs.append(rates[requests[1].label] / rates[requests[0].label])

    print(f"\n{'':<24} {'requests':>9} {'per second':>11} {'p50 ms':>7} {'p99 ms':>7}")
    for label, taken in latencies.items():
        p50, p99 = (statistics.quantiles(taken, n=100)[q] * 1000 for q in (49, 98))
        print(f"{label:<24} {len(taken):>9,} {len(taken) / seconds[label]:>11,.0f} {p50:>7.1f} {p99:>7.1f}")
    get, post = (len(latencies[r.label]) / seconds[r.label] for r in requests)
    print(f"\nPOST / GET, requests per second: {post / get:.2f} (goal >= 0.5); "
          f"round by round {min(pairs):.2f} - {max(pairs):.2f}")  # fmt: skip
    queued = Run.objects.filter(status=RunStatus.QUEUED).count()
    print(f"runs queued, none started: {queued:,} (of {Run.objects.count():,}); "
          f"messages on the queue: {broker_redis().llen(QUEUE):,}")  # fmt: skip


class server:
    """gunicorn on the throwaway database, as `manage.py serve` runs it; yields its port once it answers."""

    def __init__(self, *, workers: int) -> None:
        self.workers = workers

    def __enter__(self) -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="api-bench-gunicorn-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "budgetsvc.wsgi", "--bind", f"127.0.0.1:{port}",
                "--workers", str(self.workers), "--access-logfile", "-", "--timeout", str(request_timeout_seconds()),
            ],
            cwd=settings.BASE_DIR,
            env={**os.environ, "DATABASE_URL": database_url()},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not answers(port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"gunicorn did not start; see {self.log.name}")
            time.sleep(0.2)
        return port

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()
        if exc[0] is None:
            os.unlink(self.log.name)


def answers(port: int) -> bool:
    session = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        session.request("GET", "/api/v1/team")
        return session.getresponse().status == 401  # up, and the API refuses a request without a key
    except OSError:
        return False
    finally:
        session.close()


def one_round(
    *, port: int, headers: dict, request: Request, clients: int, seconds: float
) -> tuple[list[float], float]:
    """Each client sends `request` back to back for `seconds`: every latency, and the round's wall time
    (until the last answer)."""
    start = threading.Barrier(clients + 1)
    taken: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []

    def client(latencies: list[float]) -> None:
        # gunicorn's sync workers close each connection after one answer; it reconnects on the next request.
        session = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start.wait()
        while time.perf_counter() < deadline and not failures:
            started = time.perf_counter()
            session.request(request.method, request.path, body=request.body, headers=headers)
            response = session.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != request.status:
                failures.append(f"{request.label}: {response.status} {body[:500]!r}")
        session.close()

    threads = [threading.Thread(target=client, args=(latencies,)) for latencies in taken]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline = started + seconds
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(failures[0])
    return [latency for latencies in taken for latency in latencies], wall


if __name__ == "__main__":
    main()
