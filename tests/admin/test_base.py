from decimal import Decimal

import pytest

from workflows.admin.base import format_usd


@pytest.mark.parametrize(
    ("amount", "places", "shown"),
    [
        (Decimal("0"), None, "$0.00"),
        (Decimal("1.5"), None, "$1.50"),
        (Decimal("0.000150"), None, "$0.00015"),
        (Decimal("1234.123456"), None, "$1,234.123456"),
        (Decimal("0.0000004"), None, "$0.00"),  # below a micro-dollar
        (Decimal("-2.25"), None, "-$2.25"),
        (Decimal("0.5"), 4, "$0.5000"),
        (None, None, "—"),
    ],
)
def test_money_shows_2_to_6_decimals(amount, places, shown):
    assert format_usd(amount, places) == shown
