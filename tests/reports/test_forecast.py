from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from workflows.models import Period
from workflows.reports.forecast import RATE_DAYS, budget_forecast
from workflows.services.periods import period_window

D = Decimal


def window_of(period: str, today: date):
    return period_window(period, datetime(today.year, today.month, today.day, 15, tzinfo=UTC))


def days_before(today: date, amounts: list[str]) -> dict[date, Decimal]:
    """`amounts` spent on the days before `today`, the last of them yesterday."""
    return {today - timedelta(days=len(amounts) - n): D(amount) for n, amount in enumerate(amounts)}


def test_no_budget_is_no_forecast():
    today = date(2026, 12, 9)
    assert budget_forecast(budget_usd=None, window=window_of(Period.MONTH, today), today=today, daily_spend={}) is None


def test_no_spend_never_runs_out():
    today = date(2026, 12, 9)
    forecast = budget_forecast(budget_usd=D("10"), window=window_of(Period.MONTH, today), today=today, daily_spend={})
    assert forecast.spent_usd == forecast.daily_rate_usd == forecast.projected_usd == D("0")
    assert forecast.runs_out_on is None
    assert not forecast.over_budget
    assert forecast.cumulative[0] == (date(2026, 12, 1), D("0")) and forecast.cumulative[-1] == (today, D("0"))


def test_the_rate_is_the_mean_of_the_last_seven_full_days_and_runs_out_when_spend_passes_the_budget():
    today = date(2026, 12, 9)  # a Wednesday; the month started on the 1st
    spend = days_before(today, ["1", "1", "1", "1", "1", "1", "1", "1"]) | {today: D("0.5")}
    forecast = budget_forecast(budget_usd=D("20"), window=window_of(Period.MONTH, today), today=today, daily_spend=spend)
    assert forecast.daily_rate_usd == D("1.000000")
    assert forecast.spent_usd == D("8.5")  # Dec 1 to 8, and today's half: Nov 30 is last month's
    # 8.5 + 11 = 19.5 at the end of Dec 20, not above 20; 20.5 at the end of Dec 21.
    assert forecast.runs_out_on == date(2026, 12, 21)
    assert forecast.projected_usd == D("8.5") + 22 * D("1.000000")  # to the end of Dec 31
    assert forecast.projection[0] == (today, D("8.5")) and forecast.projection[-1][0] == date(2026, 12, 31)


def test_reaching_the_budget_exactly_is_not_running_out():
    today = date(2026, 12, 9)
    spend = days_before(today, ["1"] * RATE_DAYS)
    forecast = budget_forecast(budget_usd=D("7"), window=window_of(Period.MONTH, today), today=today, daily_spend=spend)
    assert forecast.spent_usd == D("7") and not forecast.over_budget  # Dec 2 to 8
    assert forecast.runs_out_on == date(2026, 12, 10)  # the first day that ends above $7


def test_a_rate_too_low_to_pass_the_budget_before_the_period_ends_is_none():
    today = date(2026, 12, 9)
    spend = days_before(today, ["0.7"])  # $0.10 a day on average
    forecast = budget_forecast(budget_usd=D("5"), window=window_of(Period.MONTH, today), today=today, daily_spend=spend)
    assert forecast.daily_rate_usd == D("0.100000")
    assert forecast.runs_out_on is None
    assert forecast.projected_usd == D("0.7") + 22 * D("0.1")


def test_already_over_budget_runs_out_on_the_day_spend_went_above_it():
    today = date(2026, 12, 9)
    spend = {date(2026, 12, 2): D("3"), date(2026, 12, 4): D("3"), today: D("1")}
    forecast = budget_forecast(budget_usd=D("5"), window=window_of(Period.MONTH, today), today=today, daily_spend=spend)
    assert forecast.over_budget
    assert forecast.runs_out_on == date(2026, 12, 4)


def test_a_day_period_is_today_only_and_the_rate_reaches_into_earlier_periods():
    today = date(2026, 12, 9)
    spend = days_before(today, ["7"] * RATE_DAYS) | {today: D("2")}
    forecast = budget_forecast(budget_usd=D("5"), window=window_of(Period.DAY, today), today=today, daily_spend=spend)
    assert (forecast.period_first_day, forecast.period_last_day) == (today, today)
    assert forecast.spent_usd == D("2") and forecast.daily_rate_usd == D("7")
    assert forecast.projected_usd == D("2")  # no day after today in the period
    assert forecast.runs_out_on is None  # not before the period ends, at midnight


def test_a_week_runs_from_monday_to_sunday():
    sunday = date(2026, 12, 13)
    spend = days_before(sunday, ["1"] * RATE_DAYS)
    forecast = budget_forecast(budget_usd=D("6.5"), window=window_of(Period.WEEK, sunday), today=sunday, daily_spend=spend)
    assert (forecast.period_first_day, forecast.period_last_day) == (date(2026, 12, 7), sunday)
    assert forecast.spent_usd == D("6")  # Monday to Saturday
    assert forecast.runs_out_on is None  # today is the period's last day and its own spend is in already
    monday = date(2026, 12, 14)
    spend = days_before(monday, ["1"] * RATE_DAYS)
    forecast = budget_forecast(budget_usd=D("5.5"), window=window_of(Period.WEEK, monday), today=monday, daily_spend=spend)
    assert forecast.spent_usd == D("0")  # a new week
    assert forecast.runs_out_on == date(2026, 12, 20)  # 5 days at $1 reach 5, the 6th, Sunday, passes 5.5


def test_the_last_day_of_a_month_in_december_and_february():
    last = date(2026, 12, 31)
    forecast = budget_forecast(budget_usd=D("1"), window=window_of(Period.MONTH, last), today=last, daily_spend={})
    assert forecast.period_last_day == last and forecast.projection == [(last, D("0"))]
    feb = date(2028, 2, 28)  # a leap year: February has a 29th
    spend = days_before(feb, ["1"] * RATE_DAYS)
    forecast = budget_forecast(budget_usd=D("7.5"), window=window_of(Period.MONTH, feb), today=feb, daily_spend=spend)
    assert forecast.period_last_day == date(2028, 2, 29)
    assert forecast.runs_out_on == date(2028, 2, 29)  # 7 + 1 at the end of the 29th


def test_today_outside_the_window_is_a_programming_error():
    with pytest.raises(ValueError):
        budget_forecast(
            budget_usd=D("1"), window=window_of(Period.DAY, date(2026, 12, 9)), today=date(2026, 12, 10), daily_spend={}
        )
