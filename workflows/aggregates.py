"""Sums of money columns, read into a decimal wide enough for any number of rows.

A money column is numeric(18, 6), and a sum read back as one would overflow past $10^12: on SQLite
Django's converter quantizes to max_digits and raises, so a report that once summed past it would
answer 500 for good. A sum is read into 28 digits instead (Python's default decimal precision, so
arithmetic on it stays exact): room for ten billion rows at the column's maximum.
"""

from django.db.models import DecimalField, Sum

SUM_MAX_DIGITS = 28
MONEY_DECIMAL_PLACES = 6


def money_sum(expression: str, **options) -> Sum:
    """`Sum(expression, **options)` over a money column, as a decimal that cannot overflow."""
    return Sum(
        expression, output_field=DecimalField(max_digits=SUM_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES), **options
    )
