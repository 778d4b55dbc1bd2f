from decimal import Decimal

import pytest

from workflows.admin.base import format_usd, format_usd_exact


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("0"), "$0.00"),
        (Decimal("1.5"), "$1.50"),
        (Decimal("3797.664619"), "$3,797.66"),
        (Decimal("0.005"), "$0.00"),  # half to even, as the ledger rounds
        (Decimal("0.015"), "$0.02"),
        (Decimal("-2.25"), "-$2.25"),
        (None, "—"),
    ],
)
def test_summaries_show_dollars_to_the_cent(amount, shown):
    assert format_usd(amount) == shown


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("0.00015"), "$0.000150"),
        (Decimal("1234.123456"), "$1,234.123456"),
        (Decimal("0.0000004"), "$0.000000"),  # below a micro-dollar
        (Decimal("-2.25"), "-$2.250000"),
        (None, "—"),
    ],
)
def test_tables_show_the_exact_micro_dollars(amount, shown):
    assert format_usd_exact(amount) == shown


def test_a_chart_axis_fixes_its_decimals():
    assert format_usd(Decimal("0.5"), places=4) == "$0.5000"
