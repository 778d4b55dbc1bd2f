"""The queries the estimate rules add are served by indexes, for a ledger of millions of rows."""

import pytest
from django.db import connection

from workflows.models import LedgerEntry
from workflows.selectors import AWAITING_USAGE

pytestmark = pytest.mark.django_db


def ledger_indexes() -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, LedgerEntry._meta.db_table)
    return {name: info["columns"] for name, info in found.items() if info["index"] or info["unique"]}


def test_the_corrections_of_an_entry_are_found_by_an_index():
    """ON_OPEN_ESTIMATE runs NOT EXISTS(... WHERE corrects_id = outer.id) per estimated row: an index
    must lead with corrects_id (the FK's own, or the partial unique one, which serves corrections only)."""
    leading = [columns[0] for columns in ledger_indexes().values() if columns]
    assert "corrects_id" in leading


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plan of PostgreSQL")
def test_the_admins_awaiting_usage_filter_is_served_by_an_index():
    """The ledger's admin list filter "Estimated, awaiting usage" (and ledger_estimate_open) filters
    on basis = 'estimated': for a superuser, whose list is every team's ledger, the few estimates
    among millions of rows are found by the partial index on them, not by reading the table."""
    query = LedgerEntry.objects.filter(AWAITING_USAGE).order_by("-pk")[:100]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = query.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "ledger_estimates" in plan, plan
