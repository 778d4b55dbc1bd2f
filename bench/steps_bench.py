"""How fast are governed steps? Steps through the gate next to bare Celery tasks, and the gate's latency.

    .venv/bin/python bench/steps_bench.py [--runs N] [--steps-per-run S] [--teams K] [--tasks T]
                                          [--processes P] [--gates G] [--conn-max-age SECONDS] [--profile DIR]

It needs PostgreSQL and Redis (DATABASE_URL, CELERY_BROKER_URL). Like report_bench.py it never touches
the data of the database DATABASE_URL names: it works in a throwaway database (`budgetsvc_bench_<pid>`)
that it drops at the end, on a queue of its own (`budgetsvc-bench-<pid>`) that it purges at the end.

1. Throughput. One Celery worker with P prefork processes (2 by default, one per core here) is started
   on the throwaway database. Its consumer is paused while the work is queued, then resumed and timed
   until everything is done:
   - governed steps: N runs of an S-agent chain, each step gated (the run's budget and its team's period
     budget, both enforced), run by the fake provider with no latency, charged to the ledger,
     checkpointed, and the next step enqueued. Once with all runs in one team, whose row every step
     locks, and once spread over K teams;
   - bare tasks: T no-op tasks with the same delivery options as a step (acks_late), each counting
     itself in Redis so the benchmark knows when they are done;
   - chained no-op tasks: N chains of S such tasks, each sending the next as a step does. What a
     governed step would cost with a database that took no time: the ceiling for the ratio;
   - chained, two bare transactions a step: the same chains, each task first running a step's two
     transactions at their barest (lock its run's row, write it, commit; twice), in SQL with no rules.
     What any step that admits and settles under row locks costs on this machine: the floor of the
     database's share, which the chained no-op leaves out.
   Each rate is printed with its ratio to the bare tasks and to the chained ones.
2. Gate latency. The time `step_begin` takes (the step's read, then the locks, gate and reservation)
   while 1, 8 and 64 processes of this script each run steps of the same team back to back, gate to
   settlement, with G gates measured per level; then the same G gates at 64 processes spread over 64
   teams, one per process, each with the same enforced period budget. For each: p50, p99, and
   admissions per second (gates / wall time from the processes' start, once connected, to the last
   settlement).
3. The goals of issue #10, measured: governed / chained steps for one team and for K teams, one team's
   admissions per second at 8 processes, and at 64 processes one team's p99 and admissions per second
   over the spread figures.

With --profile DIR, py-spy (`pip install py-spy`) samples the worker and its processes, idle time
included, during each throughput phase, and writes collapsed stacks to DIR/governed-1.txt,
DIR/governed-K.txt, DIR/bare.txt, DIR/chained.txt and DIR/floor.txt.
"""

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetsvc.settings")
# Set before the settings load, here and (inherited) in the worker: the benchmark's queue is its own.
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"budgetsvc-bench-{os.getpid()}")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from celery import shared_task  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.report_bench import database_name, database_url, load, throwaway_database  # noqa: E402
from budgetsvc.celery import app  # noqa: E402
from workflows.models import LedgerEntry, Run, RunStatus, Team  # noqa: E402
from workflows.providers import get_provider  # noqa: E402
from workflows.services.locks import step_attempt_lock  # noqa: E402
from workflows.services.runs import run_start  # noqa: E402
from workflows.services.steps import step_begin, step_settle  # noqa: E402
from workflows.services.teams import team_budgets_update  # noqa: E402
from workflows.services.workflows import workflow_create  # noqa: E402

QUEUE = settings.CELERY_TASK_DEFAULT_QUEUE
NODE = f"bench-{os.getpid()}@{socket.gethostname()}"
DONE_KEY = f"{QUEUE}:done"
GATE_CONCURRENCY = (1, 8, 64)
# The gates at the highest concurrency are measured again, each process with a team of its own.
SPREAD = GATE_CONCURRENCY[-1]
# Polling reads the database (governed) or Redis (bare): often enough to time to within a few percent,
# rarely enough to leave the two cores to the worker.
POLL_SECONDS = 0.05


@shared_task(name="bench.noop", acks_late=True, reject_on_worker_lost=True)
def noop() -> None:
    """The bare task: nothing but its own completion, counted where the benchmark can see it."""
    broker_redis().incr(DONE_KEY)


@shared_task(name="bench.chained_noop", acks_late=True, reject_on_worker_lost=True)
def chained_noop(remaining: int) -> None:
    """A step with nothing governed: counted, then the next one of its chain sent, as a step does."""
    broker_redis().incr(DONE_KEY)
    if remaining > 1:
        chained_noop.delay(remaining - 1)


@shared_task(name="bench.chained_floor", acks_late=True, reject_on_worker_lost=True)
def chained_floor(run_id: int, remaining: int) -> None:
    """A step at its barest: its two transactions, each a lock and a write of its run's row and no more,
    then counted and the next one sent. What any step that admits and settles under row locks costs
    on this machine, whatever its rules."""
    for _ in range(2):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT id FROM workflows_run WHERE id = %s FOR NO KEY UPDATE", [run_id])
            cursor.execute("UPDATE workflows_run SET updated_at = now() WHERE id = %s", [run_id])
    broker_redis().incr(DONE_KEY)
    if remaining > 1:
        chained_floor.delay(run_id, remaining - 1)


@cache
def broker_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def chain_yaml(agents: int) -> str:
    steps = "\n".join(
        f"""  - name: a{n}
    prompt: "Step {n} of {{{{ workflow.input.topic }}}}"
    mock: {{output: {{n: {n}}}, output_tokens: 50}}"""
        + (f"\n    routes: [{{to: a{n + 1}}}]" if n < agents else "")
        for n in range(1, agents + 1)
    )
    return f"""
workflow:
  name: chain-{agents}
  entry_point: a1
  input: {{topic: {{type: string}}}}
  runtime: {{provider: fake, default_model: sim-model, max_tokens: 100}}
  cost:
    pricing:
      sim-model: {{input_per_mtok: 1, output_per_mtok: 2}}
agents:
{steps}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="governed runs")
    parser.add_argument("--steps-per-run", type=int, default=5, help="agents in each run's chain")
    parser.add_argument("--tasks", type=int, default=4000, help="bare no-op tasks")
    parser.add_argument("--teams", type=int, default=20, help="teams the runs are spread over, after one team")
    parser.add_argument("--processes", type=int, default=2, help="prefork processes of the one worker")
    parser.add_argument("--gates", type=int, default=640, help="gates measured per concurrency level")
    parser.add_argument("--ledger-rows", type=int, default=0, help="ledger entries to add before timing the gate")
    parser.add_argument("--conn-max-age", type=int, help="the worker's DATABASE_CONN_MAX_AGE (default: settings)")
    parser.add_argument("--profile", type=Path, help="write py-spy collapsed stacks of each phase here")
    args = parser.parse_args()
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"):
        sys.exit("steps_bench.py needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...")

    with throwaway_database():
        try:
            bench(args)
        finally:
            app.control.purge()
            broker_redis().delete(DONE_KEY)


def bench(args: argparse.Namespace) -> None:
    conn_max_age = args.conn_max_age if args.conn_max_age is not None else settings.DATABASES["default"]["CONN_MAX_AGE"]
    print(f"{timezone.now():%Y-%m-%d %H:%M} UTC, {database_name()}, Redis at {settings.CELERY_BROKER_URL}")
    print(f"{os.cpu_count()} CPUs; one worker, prefork, {args.processes} processes; CONN_MAX_AGE={conn_max_age}\n")
    teams = [budgeted_team(f"bench-{n}") for n in range(max(args.teams, 1))]
    chains = [workflow_create(team=team, definition=chain_yaml(args.steps_per_run)).workflow_id for team in teams]
    steps = args.runs * args.steps_per_run
    rows = []

    def governed(label: str, spread: int, phase: str) -> None:
        pause()
        runs = [
            run_start(
                team=teams[n % spread],
                workflow=chains[n % spread],
                inputs={"topic": "budgets"},
                limits={"budget_usd": "100", "budget_mode": "enforce", "max_iterations": args.steps_per_run},
            ).pk
            for n in range(args.runs)
        ]
        seconds = timed(lambda: governed_done(runs), profile=profile_path(args, phase))
        rows.append((f"governed steps, {label}", steps, seconds))

    with worker(processes=args.processes, conn_max_age=args.conn_max_age):
        governed("one team", 1, "governed-1")
        governed(f"{len(teams)} teams", len(teams), f"governed-{len(teams)}")
        pause()
        for _ in range(args.tasks):
            noop.delay()
        seconds = timed(lambda: bare_done(args.tasks), profile=profile_path(args, "bare"))
        rows.append(("bare no-op tasks", args.tasks, seconds))
        pause()
        broker_redis().delete(DONE_KEY)
        for _ in range(args.runs):
            chained_noop.delay(args.steps_per_run)
        seconds = timed(lambda: bare_done(steps), profile=profile_path(args, "chained"))
        rows.append(("chained no-op tasks, no database", steps, seconds))
        pause()
        broker_redis().delete(DONE_KEY)
        floor_runs = Run.objects.filter(team=teams[0]).values_list("pk", flat=True)[: args.runs]
        for run_id in floor_runs:
            chained_floor.delay(run_id, args.steps_per_run)
        seconds = timed(lambda: bare_done(steps), profile=profile_path(args, "floor"))
        rows.append(("chained, two bare transactions a step", steps, seconds))

    rates = {label: count / seconds for label, count, seconds in rows}
    bare_rate, chained_rate = rates["bare no-op tasks"], rates["chained no-op tasks, no database"]
    print(f"{'':<40} {'count':>7} {'seconds':>8} {'per second':>11} {'x bare':>7} {'x chained':>10}")
    for label, count, seconds in rows:
        rate = count / seconds
        print(f"{label:<40} {count:>7,} {seconds:>8.2f} {rate:>11,.0f} {rate / bare_rate:>7.2f} {rate / chained_rate:>10.2f}")

    one_team = [(teams[0], workflow_create(team=teams[0], definition=chain_yaml(1)).workflow_id)]
    if args.ledger_rows:
        fill_period_ledger(team=teams[0], workflow=one_team[0][1], rows=args.ledger_rows)
    ledger = LedgerEntry.objects.filter(team=teams[0]).count()
    # The spread measurement: as many teams as processes, each with the one team's budgets, new and empty.
    spread = [
        (team, workflow_create(team=team, definition=chain_yaml(1)).workflow_id)
        for team in (budgeted_team(f"bench-gate-{n}") for n in range(SPREAD))
    ]
    print("\nstep_begin (the gate) while N processes run steps back to back, ms; admissions/s = gates / wall time")
    print(f"one team: {ledger:,} ledger rows before; {SPREAD} teams: one per process, none before")
    print(f"{'N':>4} {'teams':>6} {'gates':>6} {'p50':>7} {'p99':>7} {'admissions/s':>13}")
    gate = {}
    for concurrency, lanes in [*((n, one_team) for n in GATE_CONCURRENCY), (SPREAD, spread)]:
        figures = gate_figures(lanes=lanes, concurrency=concurrency, gates=args.gates)
        gate[concurrency, len(lanes)] = figures
        print(f"{concurrency:>4} {len(lanes):>6} {figures.gates:>6} {figures.p50:>7.1f} {figures.p99:>7.1f} "
              f"{figures.per_second:>13,.0f}")  # fmt: skip

    one, many = gate[SPREAD, 1], gate[SPREAD, SPREAD]
    goals = [
        ("governed steps / chained no-op, one team", rates["governed steps, one team"] / chained_rate, ">= 0.8"),
        (f"governed steps / chained no-op, {len(teams)} teams",
         rates[f"governed steps, {len(teams)} teams"] / chained_rate, ">= 0.8"),  # fmt: skip
        ("governed steps / two bare transactions a step, one team",
         rates["governed steps, one team"] / rates["chained, two bare transactions a step"], ""),  # fmt: skip
        ("one team's admissions/s at 8 processes", gate[8, 1].per_second, ">= 1000"),
        (f"at {SPREAD} processes, one team's p99 / {SPREAD} teams' p99", one.p99 / many.p99, "<= 1.5"),
        (f"at {SPREAD} processes, one team's admissions/s / {SPREAD} teams'", one.per_second / many.per_second, ">= 0.8"),
    ]
    print(f"\n{'the goals of issue #10':<56} {'measured':>9} {'goal':>8}")
    for label, measured, goal in goals:
        print(f"{label:<56} {measured:>9,.{0 if measured >= 100 else 2}f} {goal:>8}")


def fill_period_ledger(*, team: Team, workflow: int, rows: int) -> None:
    """`rows` more ledger entries for the team in the current period: the gate sums them for every step."""
    run = run_start(team=team, workflow=workflow, inputs={"topic": "budgets"})
    step, cost = run.steps.get(), Decimal("0.000001")
    fixed = (connection.ops.adapt_decimalfield_value(cost), connection.ops.adapt_datetimefield_value(timezone.now()))
    columns = ["team_id", "run_id", "step_id", "attempt", "agent", "provider", "model", "input_tokens",
               "output_tokens", "cost_usd", "created_at"]  # fmt: skip
    # Attempts 1..rows of one step: the ledger takes one entry per attempt.
    load(LedgerEntry, columns, ((team.pk, run.pk, step.pk, n, step.agent, "fake", "sim-model", 10, 1, *fixed)
                                for n in range(1, rows + 1)))  # fmt: skip
    Run.objects.filter(pk=run.pk).update(spent_usd=cost * rows)  # the run's spend agrees with its ledger
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {LedgerEntry._meta.db_table}")


def budgeted_team(name: str) -> Team:
    """A team whose every step is held to an enforced period budget, never reached here."""
    team = Team.objects.create(name=name)
    changes = {"period_budget_usd": "1000000", "period_mode": "enforce"}
    return team_budgets_update(team=team, changes=changes, actor="bench")


class worker:
    """One Celery worker process on the throwaway database, consuming the benchmark's queue."""

    def __init__(self, *, processes: int, conn_max_age: int | None) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "LOG_LEVEL": "ERROR",
        }
        if conn_max_age is not None:
            self.env["DATABASE_CONN_MAX_AGE"] = str(conn_max_age)
        self.processes = processes

    def __enter__(self) -> "worker":
        self.log = tempfile.NamedTemporaryFile("w+", prefix="steps-bench-worker-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "--quiet", "-A", "budgetsvc", "worker",
                "--include", "bench.steps_bench", "--pool", "prefork", "--concurrency", str(self.processes),
                "--loglevel", "ERROR", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--hostname", NODE,
            ],
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[NODE], timeout=0.5):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the benchmark's worker did not start; see {self.log.name}")
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()
        if exc[0] is None:
            os.unlink(self.log.name)


def pause() -> None:
    """The worker stops taking messages while work is queued, so the clock starts on a full queue."""
    app.control.cancel_consumer(QUEUE, destination=[NODE], reply=True)


def profile_path(args: argparse.Namespace, phase: str) -> Path | None:
    return None if args.profile is None else args.profile / f"{phase}.txt"


def timed(done, *, profile: Path | None) -> float:
    """Seconds from resuming the worker's consumer until `done()`."""
    sampler = None
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        sampler = subprocess.Popen(
            [py_spy, "record", "--pid", str(worker_pid()), "--subprocesses", "--idle", "--rate", "250",
             "--format", "raw", "--output", str(profile)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)  # py-spy attaches before the clock starts
    started = time.perf_counter()
    app.control.add_consumer(QUEUE, destination=[NODE], reply=True)
    while not done():
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)
    return seconds


def worker_pid() -> int:
    [reply] = app.control.inspect(destination=[NODE]).stats().values()
    return reply["pid"]


def bare_done(tasks: int) -> bool:
    return int(broker_redis().get(DONE_KEY) or 0) >= tasks


def governed_done(runs: list[int]) -> bool:
    finished = Run.objects.filter(pk__in=runs).exclude(status__in=(RunStatus.QUEUED, RunStatus.RUNNING))
    if finished.exclude(status=RunStatus.COMPLETED).exists():
        raise RuntimeError(f"a governed run stopped: {finished.exclude(status=RunStatus.COMPLETED).first().error}")
    return finished.count() == len(runs)


class GateFigures(NamedTuple):
    gates: int
    p50: float  # ms
    p99: float  # ms
    per_second: float  # gates completed / wall time, from the processes' start to the last settlement


def gate_figures(*, lanes: list[tuple[Team, int]], concurrency: int, gates: int) -> GateFigures:
    """step_begin's duration for `gates` one-step runs, run by `concurrency` processes at once.

    `lanes` are (team, one-step workflow) pairs: process n runs steps of lane n modulo their number, so one
    lane puts every process on one team's row, and one lane per process gives each its own team."""
    per_process = max(gates // concurrency, 1)
    limits = {"budget_usd": "100", "budget_mode": "enforce"}
    steps = [
        [
            run_start(team=team, workflow=workflow, inputs={"topic": "budgets"}, limits=limits).steps.get().pk
            for _ in range(per_process)
        ]
        for team, workflow in (lanes[n % len(lanes)] for n in range(concurrency))
    ]
    connections.close_all()  # each process opens its own
    context = multiprocessing.get_context("fork")
    start = context.Barrier(concurrency)
    with context.Pool(concurrency, initializer=_gate_process_init, initargs=(start,)) as pool:
        results = pool.map(_gate_steps, steps, chunksize=1)
    latencies = [latency for latencies, _, _ in results for latency in latencies]
    # perf_counter is the system's monotonic clock, the same in every process.
    seconds = max(finished for _, _, finished in results) - min(began for _, began, _ in results)
    p50, p99 = (statistics.quantiles(latencies, n=100)[q] * 1000 for q in (49, 98))
    return GateFigures(gates=len(latencies), p50=p50, p99=p99, per_second=len(latencies) / seconds)


def _gate_process_init(barrier) -> None:
    global _start_barrier
    _start_barrier = barrier


_start_barrier = None


def _gate_steps(step_ids: list[int]) -> tuple[list[float], float, float]:
    """What a worker process does for each step, with step_begin timed: all processes start together,
    once connected. Returns the latencies and when the process started and finished its steps."""
    connection.ensure_connection()
    _start_barrier.wait()
    began = time.perf_counter()
    latencies = []
    for step_id in step_ids:
        with step_attempt_lock(step_id):
            started = time.perf_counter()
            attempt = step_begin(step_id=step_id, worker=f"bench:{os.getpid()}")
            latencies.append(time.perf_counter() - started)
            result = get_provider(attempt.prepared.provider).complete(attempt.prepared.request)
            step_settle(attempt=attempt, result=result)
    finished = time.perf_counter()
    connections.close_all()
    return latencies, began, finished


if __name__ == "__main__":
    main()
