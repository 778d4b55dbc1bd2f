from datetime import UTC, datetime

import pytest

from workflows.services.periods import period_window


@pytest.mark.parametrize(
    "period,now,start,end",
    [
        ("day", "2026-11-28T23:59:59", "2026-11-28", "2026-11-29"),
        ("week", "2026-11-28T10:00:00", "2026-11-23", "2026-11-30"),  # a Saturday: weeks start on Monday
        ("week", "2026-11-30T00:00:00", "2026-11-30", "2026-12-07"),
        ("month", "2026-11-28T10:00:00", "2026-11-01", "2026-12-01"),
        ("month", "2026-12-31T23:00:00", "2026-12-01", "2027-01-01"),
    ],
)
def test_periods_start_at_midnight_utc(period, now, start, end):
    window = period_window(period, datetime.fromisoformat(now).replace(tzinfo=UTC))
    assert (window.start, window.end) == (
        datetime.fromisoformat(start).replace(tzinfo=UTC),
        datetime.fromisoformat(end).replace(tzinfo=UTC),
    )
