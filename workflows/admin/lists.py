"""What the long admin lists share: a date range filter, and a CSV of exactly the rows a list's filters select.

The range is `<field>__gte` (from, inclusive) and `<field>__lt` (before, exclusive), as days in UTC or ISO
datetimes, so that another page (the Spend report's breakdowns) can link to a list narrowed to a day or a
period by the same parameters the list's own form sends.
"""

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.urls import path
from django.utils.dateparse import parse_date, parse_datetime

from workflows.reports.spreadsheet import csv_cell

CSV_CHUNK_ROWS = 2000


def utc_moment(value: str) -> datetime:
    """`value` as a datetime in UTC: a day is its midnight in UTC; a datetime without an offset is UTC."""
    try:
        day = parse_date(value)
        moment = datetime.combine(day, time(), tzinfo=UTC) if day else parse_datetime(value)
        # In UTC here, where a moment whose offset moves it out of years 1-9999 is refused, not in the query.
        moment = moment and (moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC))
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise IncorrectLookupParameters(f"{value!r} is not a date (YYYY-MM-DD) or an ISO datetime in years 1-9999.")
    return moment


class DateRangeFilter(admin.FieldListFilter):
    """From (inclusive) and before (exclusive) dates, in UTC, entered as two date inputs in the sidebar."""

    template = "admin/workflows/date_range_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.since_parameter = f"{field_path}__gte"
        self.until_parameter = f"{field_path}__lt"
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = f"{self.title} (UTC)"
        # What the form sends along unchanged: every other filter, the search and the ordering.
        self.other_parameters = [
            (name, value)
            for name, values in request.GET.lists()
            if name not in (self.since_parameter, self.until_parameter, "p", "e")
            for value in values
        ]

    def expected_parameters(self):
        return [self.since_parameter, self.until_parameter]

    def _given(self, parameter: str) -> str:
        value = self.used_parameters.get(parameter)
        return (value[-1] if isinstance(value, list) else value) or ""

    def _utc_day(self, parameter: str) -> str:
        """The UTC day of the bound applied, for the date input (a datetime's own day may be another)."""
        try:
            return utc_moment(self._given(parameter)).date().isoformat() if self._given(parameter) else ""
        except IncorrectLookupParameters:
            return ""

    def queryset(self, request, queryset):
        bounds = {name: utc_moment(self._given(name)) for name in self.expected_parameters() if self._given(name)}
        return queryset.filter(**bounds)

    def choices(self, changelist):
        # One "choice": the form's current values and what it carries along.
        yield {
            "since_parameter": self.since_parameter,
            "until_parameter": self.until_parameter,
            "since": self._utc_day(self.since_parameter),
            "until": self._utc_day(self.until_parameter),
            "others": self.other_parameters,
            "clear_query": changelist.get_query_string(remove=self.expected_parameters()),
        }


@dataclass(frozen=True)
class CsvColumn:
    heading: str
    value: Callable[[object], object]  # the row's value: money as a Decimal, text as it is stored


class _Echo:
    """A file whose write returns what was written, so that csv.writer yields lines to a streaming response."""

    def write(self, value: str) -> str:
        return value


def csv_lines(*, columns: list[CsvColumn], rows: Iterable) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow([column.heading for column in columns])
    for row in rows:
        yield writer.writerow([csv_cell(_plain(column.value(row))) for column in columns])


def _plain(value):
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


class CsvExportMixin:
    """Adds `<list>/export.csv`: the CSV of every row the list's current filters, search and ordering
    select (not only the page shown), read through the admin's own queryset, so that it is scoped to the
    user's teams as the list is; streamed, so that a long ledger never sits in memory."""

    csv_columns: list[CsvColumn] = []
    csv_name = ""
    csv_select_related: list[str] = []  # what the columns read besides the row, in the same query

    def csv_queryset(self, queryset):
        """The list's rows as the CSV reads them: with what its columns read besides the row joined."""
        return queryset.select_related(*self.csv_select_related)

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_export"
        export = path("export.csv", self.admin_site.admin_view(self.export_csv_view), name=name)
        return [export, *super().get_urls()]

    def export_csv_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            return HttpResponseBadRequest(f"Invalid filters: {exc}", content_type="text/plain")
        rows = self.csv_queryset(changelist.queryset).iterator(chunk_size=CSV_CHUNK_ROWS)
        return StreamingHttpResponse(
            csv_lines(columns=self.csv_columns, rows=rows),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{self.csv_name}.csv"'},
        )
