"""What one governed step asks of the database: its statements, counted and listed, and its time.

    .venv/bin/python bench/step_queries.py [--steps N] [--list]

Runs, in one process and without Celery, what a worker does for each step of a 5-agent chain
(the attempt lock, `step_begin`, the fake provider, `step_settle`), in a throwaway database like
the other benchmarks. It prints the statements of each part of the middle step, and the median
time of each part over N steps. Works on PostgreSQL and on SQLite.
"""

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetsvc.settings")
# The next steps are really enqueued, on a queue of this script's own that it purges at the end.
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"budgetsvc-bench-{os.getpid()}")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from budgetsvc.celery import app  # noqa: E402
from bench.report_bench import database_name, throwaway_database  # noqa: E402
from bench.steps_bench import budgeted_team, chain_yaml  # noqa: E402
from workflows.models import Step, StepStatus  # noqa: E402
from workflows.providers import get_provider  # noqa: E402
from workflows.services.locks import step_attempt_lock  # noqa: E402
from workflows.services.runs import run_start  # noqa: E402
from workflows.services.steps import step_begin, step_settle  # noqa: E402
from workflows.services.workflows import workflow_create  # noqa: E402

AGENTS = 5


def one_step(step_id: int, timings: dict[str, list[float]]) -> None:
    started = time.perf_counter()
    with step_attempt_lock(step_id):
        locked = time.perf_counter()
        attempt = step_begin(step_id=step_id, worker="bench")
        begun = time.perf_counter()
        result = get_provider(attempt.prepared.provider).complete(attempt.prepared.request)
        called = time.perf_counter()
        step_settle(attempt=attempt, result=result)
        settled = time.perf_counter()
    timings["attempt lock"].append(locked - started)
    timings["step_begin"].append(begun - locked)
    timings["provider"].append(called - begun)
    timings["step_settle"].append(settled - called)
    timings["whole step"].append(time.perf_counter() - started)


def kind(sql: str) -> str:
    words = sql.split()
    first = words[0].upper()
    if first == "SELECT" and "FOR" in sql.upper().split("WHERE")[-1].split():
        return "SELECT ... FOR UPDATE"
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="steps timed")
    parser.add_argument("--list", action="store_true", help="print every statement of the middle step")
    args = parser.parse_args()
    with throwaway_database():
        try:
            measure(args)
        finally:
            app.control.purge()


def measure(args: argparse.Namespace) -> None:
    print(database_name())
    team = budgeted_team("queries")
    workflow = workflow_create(team=team, definition=chain_yaml(AGENTS)).workflow_id
    limits = {"budget_usd": "100", "budget_mode": "enforce", "max_iterations": AGENTS}
    run = run_start(team=team, workflow=workflow, inputs={"topic": "budgets"}, limits=limits)
    timings: dict[str, list[float]] = {key: [] for key in ("attempt lock", "step_begin", "provider", "step_settle", "whole step")}
    # Steps 1 and 2 warm the caches; step 3 (which enqueues step 4) is the one listed.
    for sequence in (1, 2):
        one_step(run.steps.get(sequence=sequence).pk, timings)
    third = run.steps.get(sequence=3).pk
    with CaptureQueriesContext(connection) as queries:
        one_step(third, timings)
    statements = [query["sql"] for query in queries.captured_queries]
    print(f"\none step that enqueues the next: {len(statements)} statements")
    print("  " + ", ".join(f"{count} {name}" for name, count in Counter(map(kind, statements)).most_common()))
    if args.list:
        for sql in statements:
            print("   ", " ".join(sql.split())[:160])
    for key in timings:
        timings[key].clear()
    done = 0
    while done < args.steps:
        run = run_start(team=team, workflow=workflow, inputs={"topic": "budgets"}, limits=limits)
        while (step := Step.objects.filter(run=run, status=StepStatus.PENDING).first()) is not None:
            one_step(step.pk, timings)
            done += 1
    print(f"\nmedian over {done} steps, ms (one process, no Celery, no other load from this script)")
    for key, values in timings.items():
        print(f"  {key:<14} {statistics.median(values) * 1000:7.2f}")


if __name__ == "__main__":
    main()
