"""The ceiling of a gate that writes one row per admission: transactions per second on one row, and on a row each.

    .venv/bin/python bench/lock_ceiling.py [--seconds S]

It needs PostgreSQL (DATABASE_URL). Like the other benchmarks it never touches the data of that database:
it works on a table of its own in a throwaway database (`budgetsvc_bench_<pid>`) that it drops at the end.

N processes (1, 8, 64) each run, back to back for S seconds, the smallest transaction that admits under a
row lock and records the admission on the locked row:

    BEGIN; SELECT ... FOR NO KEY UPDATE (one row); UPDATE that row; COMMIT

once with every process on ONE row, as when every admission of a team writes the team's row, and once
with each process on its own row, as when an admission writes only its run's row. Only the SQL is timed:
no Django, no rules. On one row, each transaction holds the lock through its commit, which waits for the
WAL to reach the disk, so one row can take at most one commit at a time; on rows of their own, commits
of different rows overlap and PostgreSQL can flush several in one write. Printed for each: transactions
per second (transactions / wall time from the processes' start, once connected, to the last commit),
p50 and p99 of a transaction in ms, and one row's rate over the rows' each.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetsvc.settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.report_bench import database_name, throwaway_database  # noqa: E402

CONCURRENCY = (1, 8, 64)
TABLE = "bench_lock_ceiling"
SERVER_SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method", "commit_delay")
CONNECT = ("dbname", "user", "password", "host", "port")  # of Django's connection parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("lock_ceiling.py needs DATABASE_URL=postgres://...")

    with throwaway_database():
        with connection.cursor() as cursor:
            # A reservation-like counter per row; a row per process, so no two processes ever share one
            # in the second measurement.
            cursor.execute(f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, reserved_usd numeric(18, 6) NOT NULL)")
            cursor.execute(f"INSERT INTO {TABLE} SELECT n, 0 FROM generate_series(0, %s) n", [max(CONCURRENCY) - 1])
            cursor.execute(f"SELECT {', '.join(['current_setting(%s)'] * len(SERVER_SETTINGS))}", SERVER_SETTINGS)
            server = ", ".join(f"{name}={value}" for name, value in zip(SERVER_SETTINGS, cursor.fetchone()))
        print(f"{timezone.now():%Y-%m-%d %H:%M} UTC, {database_name()}, {os.cpu_count()} CPUs; {server}")
        print(f"BEGIN; SELECT ... FOR NO KEY UPDATE; UPDATE; COMMIT, back to back for {args.seconds:g} s\n")
        params = {key: value for key, value in connection.get_connection_params().items() if key in CONNECT}
        connections.close_all()  # each process opens its own
        print(f"{'N':>4} {'rows':<10} {'transactions':>12} {'per second':>11} {'p50 ms':>7} {'p99 ms':>7}")
        ratios, total = [], 0
        for concurrency in CONCURRENCY:
            rates = {}
            for label, rows in (("one", [0] * concurrency), ("one each", list(range(concurrency)))):
                count, per_second, p50, p99 = measure(params=params, rows=rows, seconds=args.seconds)
                rates[label], total = per_second, total + count
                print(f"{concurrency:>4} {label:<10} {count:>12,} {per_second:>11,.0f} {p50:>7.2f} {p99:>7.2f}")
            ratios.append((concurrency, rates["one"] / rates["one each"]))
        print(f"\none row / a row each, transactions per second: {', '.join(f'{r:.2f} at {n}' for n, r in ratios)}")
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT SUM(reserved_usd) * 1000000 FROM {TABLE}")
            # Every transaction counted committed its write, and no other did.
            assert cursor.fetchone()[0] == total, "the rows' writes do not add up to the transactions counted"


def measure(*, params: dict, rows: list[int], seconds: float) -> tuple[int, float, float, float]:
    """Transactions, their rate, and p50 and p99 in ms, with process n on row `rows[n]`."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(rows))
    with context.Pool(len(rows), initializer=_process_init, initargs=(start, params, seconds)) as pool:
        results = pool.map(_transactions, rows, chunksize=1)
    latencies = [latency for latencies, _, _ in results for latency in latencies]
    # perf_counter is the system's monotonic clock, the same in every process.
    wall = max(finished for _, _, finished in results) - min(began for _, began, _ in results)
    p50, p99 = (statistics.quantiles(latencies, n=100)[q] * 1000 for q in (49, 98))
    return len(latencies), len(latencies) / wall, p50, p99


_setup = None


def _process_init(barrier, params: dict, seconds: float) -> None:
    global _setup
    _setup = (barrier, params, seconds)


def _transactions(row: int) -> tuple[list[float], float, float]:
    """Lock, write and commit `row` until the time is up: each transaction's duration, and when the process
    started and finished."""
    barrier, params, seconds = _setup
    latencies = []
    with psycopg.connect(**params, autocommit=True) as db:
        # The statements as the server sees them: BEGIN and COMMIT are sent, not implied by the driver.
        barrier.wait()
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            db.execute("BEGIN")
            db.execute(f"SELECT reserved_usd FROM {TABLE} WHERE id = %s FOR NO KEY UPDATE", [row]).fetchone()
            db.execute(f"UPDATE {TABLE} SET reserved_usd = reserved_usd + 0.000001 WHERE id = %s", [row])
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - started)
        finished = time.perf_counter()
    return latencies, began, finished


if __name__ == "__main__":
    main()
