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


BOUNDARY_INSTANTS = [
    # (period, instant, the window it belongs to): the last micro-second of a period, and its next one's first.
    ("day", "2026-06-30T23:59:59.999999", "2026-06-30", "2026-07-01"),
    ("day", "2026-07-01T00:00:00", "2026-07-01", "2026-07-02"),
    ("week", "2026-07-05T23:59:59.999999", "2026-06-29", "2026-07-06"),  # a Sunday
    ("week", "2026-07-06T00:00:00", "2026-07-06", "2026-07-13"),
    ("month", "2026-06-30T23:59:59.999999", "2026-06-01", "2026-07-01"),
    ("month", "2026-07-01T00:00:00", "2026-07-01", "2026-08-01"),
    ("month", "2028-02-29T12:00:00", "2028-02-01", "2028-03-01"),  # a leap day
]


@pytest.mark.parametrize("period,now,start,end", BOUNDARY_INSTANTS)
def test_a_period_ends_before_its_boundary_instant_and_the_next_starts_at_it(period, now, start, end):
    window = period_window(period, datetime.fromisoformat(now).replace(tzinfo=UTC))
    assert (window.start, window.end) == (
        datetime.fromisoformat(start).replace(tzinfo=UTC),
        datetime.fromisoformat(end).replace(tzinfo=UTC),
    )
