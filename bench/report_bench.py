"""How fast are spend reports on a big ledger? spend_by next to the same query written by hand.

    .venv/bin/python bench/report_bench.py [--rows N] [--runs R]

It runs on the database DATABASE_URL names, but never on its data: Django's test-database machinery
creates a separate database (PostgreSQL: `budgetsvc_bench_<pid>`), migrates it, fills it, and drops
it at the end. PostgreSQL is what the figures in docs/performance.md are for, with 1,000,000 rows
by default; SQLite works too, with 100,000 rows by default, as a smoke test rather than a figure.
"""

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetsvc.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.db.models import Model  # noqa: E402
from django.test.utils import setup_test_environment, teardown_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from workflows.models import LedgerEntry, Run, RunStatus, Step, Team, Workflow, WorkflowVersion  # noqa: E402
from workflows.reports.cost_profile import cost_profile  # noqa: E402
from workflows.reports.spend import GROUPINGS, spend_by  # noqa: E402

WORKFLOWS = 10
AGENTS = ("researcher", "writer", "reviewer", "planner", "critic")
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet", "local-llama")
DAYS = 90
UNPRICED_SHARE = 0.03
REPEATS = 3
SEED = 2026


def main() -> None:
    postgres = connection.vendor == "postgresql"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000 if postgres else 100_000, help="ledger entries")
    parser.add_argument("--runs", type=int, default=1_000, help="runs the entries are spread over")
    args = parser.parse_args()

    with throwaway_database():
        print(f"{timezone.now():%Y-%m-%d %H:%M} UTC, {database_name()}, {os.cpu_count()} CPUs")
        print(f"{args.rows:,} ledger rows over {args.runs:,} runs of {WORKFLOWS} workflows, {DAYS} days")
        started = time.perf_counter()
        team = fill(rows=args.rows, runs=args.runs)
        print(f"loaded and analysed in {time.perf_counter() - started:.1f}s\n")
        today = timezone.now().date()
        windows = {"all": (None, None), "last 7 days": (today - timedelta(days=6), today)}
        print(f"{'group_by':<10} {'window':<12} {'groups':>7} {'ORM s':>8} {'raw SQL s':>10} {'ratio':>6}")
        for label, (since, until) in windows.items():
            for group_by in GROUPINGS:
                query = {"team": team, "group_by": group_by, "since": since, "until": until}
                orm_seconds, report = best_of(partial(spend_by, **query))
                raw_seconds, rows = best_of(partial(raw_spend, **query))
                # The hand-written query must be the same report, or the comparison means nothing.
                assert [g.key for g in report.groups] == [str(row[0]) for row in rows], group_by
                print(
                    f"{group_by:<10} {label:<12} {len(rows):>7,} {orm_seconds:>8.3f} {raw_seconds:>10.3f} "
                    f"{orm_seconds / raw_seconds:>6.2f}"
                )
        workflow = Workflow.objects.get(team=team, name="workflow-0")
        seconds, profile = best_of(partial(cost_profile, workflow=workflow))
        rows = LedgerEntry.objects.filter(run__workflow_version__workflow=workflow).count()
        print(f"\ncost_profile of one workflow ({profile.runs:,} runs, {rows:,} ledger rows): {seconds:.3f}s")


@contextmanager
def throwaway_database() -> Iterator[None]:
    """A migrated test database of its own for the length of the benchmark, dropped at the end."""
    test_settings = connection.settings_dict["TEST"]
    if connection.vendor == "sqlite":
        # A file, like production, rather than the in-memory default.
        test_settings["NAME"] = str(Path(tempfile.mkdtemp(prefix="budgetsvc-bench-")) / "bench.sqlite3")
    else:
        test_settings["NAME"] = f"budgetsvc_bench_{os.getpid()}"  # never the test_ database of a test run
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()


def database_url() -> str:
    """DATABASE_URL for a process of the benchmark's own (worker, server) on the database in use: inside
    throwaway_database(), the throwaway one."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def database_name() -> str:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0]} at {connection.settings_dict['HOST'] or 'local socket'}"
    return f"SQLite {connection.Database.sqlite_version}"


def fill(*, rows: int, runs: int) -> Team:
    """One team's ledger of `rows` entries, one per step, spread over `runs` runs of WORKFLOWS workflows."""
    team = Team.objects.create(name="bench")
    versions = [
        WorkflowVersion.objects.create(
            workflow=Workflow.objects.create(team=team, name=f"workflow-{n}"), version=1, source="", definition={}
        )
        for n in range(WORKFLOWS)
    ]
    run_ids = [
        run.pk
        for run in Run.objects.bulk_create(
            Run(team=team, workflow_version=versions[n % WORKFLOWS], status=RunStatus.COMPLETED) for n in range(runs)
        )
    ]
    # Steps get explicit ids 1..rows so the ledger can point at them without reading them back;
    # nothing inserts into this database afterwards, so its id sequence is left alone.
    load(
        Step,
        ["id", "run_id", "sequence", "agent", "iteration", "status", "attempts", "model", "created_at"],
        (
            (n + 1, run_ids[n % runs], n // runs + 1, entry.agent, 1, "succeeded", 1, entry.model, entry.at)
            for n, entry in enumerate(entries(rows))
        ),
    )
    load(
        LedgerEntry,
        ["team_id", "run_id", "step_id", "attempt", "agent", "provider", "model", "input_tokens", "output_tokens",
         "cost_usd", "price_source", "created_at", "booked_at"],
        (
            (team.pk, run_ids[n % runs], n + 1, 1, entry.agent, "bench", entry.model, entry.input_tokens,
             entry.output_tokens, entry.cost_usd, "table" if entry.cost_usd is not None else "", entry.at, entry.at)
            for n, entry in enumerate(entries(rows))
        ),
    )
    with connection.cursor() as cursor:
        # What autovacuum would have done by the time anyone reads a ledger this size.
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    return team


class Entry(NamedTuple):
    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: object  # as the database takes it; None when unpriced
    at: object


def entries(rows: int) -> Iterator[Entry]:
    """The same pseudo-random entries on every call, their values already as the database takes them."""
    rng = random.Random(SEED)
    start = timezone.now() - timedelta(days=DAYS)
    # Pools adapted once: adapting a million values one by one would be most of the load time.
    stamps = [
        connection.ops.adapt_datetimefield_value(start + timedelta(seconds=second))
        for second in rng.sample(range(DAYS * 86_400), 20_000)
    ]
    costs = [
        connection.ops.adapt_decimalfield_value(Decimal(micro) / 1_000_000)
        for micro in rng.sample(range(1, 400_000), 2_000)
    ]
    for _ in range(rows):
        yield Entry(
            agent=rng.choice(AGENTS),
            model=rng.choice(MODELS),
            input_tokens=rng.randrange(100, 8_000),
            output_tokens=rng.randrange(50, 2_000),
            cost_usd=None if rng.random() < UNPRICED_SHARE else rng.choice(costs),
            at=rng.choice(stamps),
        )


def load(model: type[Model], columns: list[str], rows: Iterator[tuple]) -> None:
    """Append rows fast: COPY on PostgreSQL, one executemany elsewhere.

    Columns not named get the model's own defaults, so the benchmark keeps working as fields are added."""
    now = timezone.now()
    defaults = {
        field.column: field.get_db_prep_save(
            now if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False) else field.get_default(),
            connection,
        )
        for field in model._meta.concrete_fields
        if field.column not in columns and not field.primary_key
    }
    names = ", ".join(connection.ops.quote_name(column) for column in [*columns, *defaults])
    table = connection.ops.quote_name(model._meta.db_table)
    tail = tuple(defaults.values())
    # One transaction: SQLite would otherwise commit, and sync, every row.
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row + tail)
        else:
            marks = ", ".join(["%s"] * (len(columns) + len(tail)))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", (row + tail for row in rows))


def raw_spend(*, team: Team, group_by: str, since: date | None, until: date | None) -> list[tuple]:
    """spend_by written by hand, as a DBA would: the yardstick for the ORM's query."""
    key, joins = raw_grouping(group_by)
    where, params = ["l.team_id = %s"], [team.pk]
    if since is not None:
        where.append("l.booked_at >= %s")
        params.append(utc_midnight(since))
    if until is not None:
        where.append("l.booked_at < %s")
        params.append(utc_midnight(until + timedelta(days=1)))
    sql = f"""
        SELECT {key} AS key,
               COALESCE(SUM(l.cost_usd), 0) AS spent_usd,
               COUNT(DISTINCT l.run_id),
               COUNT(DISTINCT l.step_id),
               SUM(l.input_tokens),
               SUM(l.output_tokens),
               COUNT(*) FILTER (WHERE l.cost_usd IS NULL),
               COALESCE(SUM(l.input_tokens) FILTER (WHERE l.cost_usd IS NULL), 0),
               COALESCE(SUM(l.output_tokens) FILTER (WHERE l.cost_usd IS NULL), 0)
        FROM {LedgerEntry._meta.db_table} l {joins}
        WHERE {" AND ".join(where)}
        GROUP BY 1
        ORDER BY 2 DESC, 1
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def utc_midnight(day: date):
    return connection.ops.adapt_datetimefield_value(datetime.combine(day, datetime.min.time(), tzinfo=UTC))


def raw_grouping(group_by: str) -> tuple[str, str]:
    """The key expression and the joins it needs."""
    if group_by == "workflow":
        return "w.name", (
            f"JOIN {Run._meta.db_table} r ON r.id = l.run_id "
            f"JOIN {WorkflowVersion._meta.db_table} v ON v.id = r.workflow_version_id "
            f"JOIN {Workflow._meta.db_table} w ON w.id = v.workflow_id"
        )
    if group_by == "day":
        utc_date = "(l.booked_at AT TIME ZONE 'UTC')::date" if connection.vendor == "postgresql" else "date(l.booked_at)"
        return utc_date, ""
    if group_by == "tool":
        concat = "l.tool || ' @ ' || l.tool_server"
        return f"CASE WHEN l.kind = 'tool' THEN {concat} ELSE '' END", ""
    return {"model": "l.model", "agent": "l.agent", "run": "l.run_id"}[group_by], ""


def best_of(query: Callable[[], object]) -> tuple[float, object]:
    """The fastest of REPEATS runs (the others include cold caches), and the answer."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        answer = query()
        times.append(time.perf_counter() - started)
    return min(times), answer


if __name__ == "__main__":
    main()
