"""The filters of the API's lists, as django-filter FilterSets. Every value is parsed and bounded here, so
a bad one is a 400 that names its parameter, as every bad query parameter is (workflows/api/query.py)."""

from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_filters.rest_framework import DjangoFilterBackend

from workflows.api.query import invalid_query_params
from workflows.definition.bounds import MAX_ID
from workflows.models import Event, LedgerEntry, Run, RunStatus, Workflow

# Names of workflows, agents and models are varchar(200) columns: a longer value names nothing.
MAX_NAME_PARAM_CHARS = 200
# The longest ISO 8601 date and time with a fraction and an offset is 32 characters.
MAX_DATETIME_PARAM_CHARS = 40


class IdField(forms.Field):
    """A row id: ASCII digits, at most MAX_ID (a larger id names no row, and the database cannot compare it)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        digits = value.lstrip("0") or "0"
        # Compared by length first: int() of thousands of digits is slow, and refused past 4,300.
        if not (value.isascii() and value.isdigit()) or len(digits) > len(str(MAX_ID)) or int(digits) > MAX_ID:
            raise ValidationError(f"must be a whole number from 0 to {MAX_ID}")
        return int(digits)


class DateTimeField(forms.Field):
    """An ISO 8601 date and time (`2026-12-07T10:00:00Z`); without an offset, UTC. A date alone is its midnight."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        message = "must be an ISO 8601 date and time, such as 2026-12-07T10:00:00Z"
        try:
            parsed = parse_datetime(value) if len(value) <= MAX_DATETIME_PARAM_CHARS else None
            if parsed is None:
                raise ValueError(value)
            if timezone.is_naive(parsed):
                parsed = parsed.replace(tzinfo=UTC)
            # An offset can carry the first or the last day of the calendar past its end.
            return parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            raise ValidationError(message) from None


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, with a bad value refused as every other bad query parameter is."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            problems = [(name, str(message)) for name, messages in filterset.errors.items() for message in messages]
            raise invalid_query_params(problems)
        return filterset.qs


class IdFilter(django_filters.Filter):
    field_class = IdField


class DateTimeFilter(django_filters.Filter):
    field_class = DateTimeField


def name_filter(field_name: str) -> django_filters.CharFilter:
    """Exact match on a name column; the value is taken as given, spaces included."""
    return django_filters.CharFilter(
        field_name=field_name,
        max_length=MAX_NAME_PARAM_CHARS,
        strip=False,
        error_messages={"max_length": f"must be at most {MAX_NAME_PARAM_CHARS} characters"},
    )


def booked_range():
    """A half-open range on booked_at, the time reports and period budgets date a cost by."""
    return (
        DateTimeFilter(field_name="booked_at", lookup_expr="gte"),
        DateTimeFilter(field_name="booked_at", lookup_expr="lt"),
    )


class WorkflowFilter(django_filters.FilterSet):
    name = name_filter("name")

    class Meta:
        model = Workflow
        fields = []


class RunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=RunStatus.choices,
        error_messages={"invalid_choice": f"must be one of {', '.join(RunStatus.values)}"},
    )
    workflow = IdFilter(field_name="workflow_version__workflow_id")
    created_after = DateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = DateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields = []


class EventFilter(django_filters.FilterSet):
    # For polling: the events after the last one a client has seen.
    after = IdFilter(field_name="id", lookup_expr="gt")

    class Meta:
        model = Event
        fields = []


class RunLedgerFilter(django_filters.FilterSet):
    agent = name_filter("agent")
    model = name_filter("model")
    booked_after, booked_before = booked_range()

    class Meta:
        model = LedgerEntry
        fields = []


class TeamLedgerFilter(RunLedgerFilter):
    run = IdFilter(field_name="run_id")
