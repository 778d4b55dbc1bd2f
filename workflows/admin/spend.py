"""The ledger in the admin, an entry's Adjust page, and the Spend report built on it (ledger entries → Spend)."""

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode

from workflows.admin.base import (
    MICRO_USD,
    ReadOnlyAdminMixin,
    TeamScopedAdmin,
    format_usd,
    format_usd_exact,
    settled_and_estimated,
    visible_to,
)
from workflows.admin.charts import daily_spend_svg
from workflows.admin.lists import CsvColumn, CsvExportMixin, DateRangeFilter
from workflows.admin.reports import (
    SpendQuery,
    daily_series,
    day_start,
    ledger_for,
    ledger_models,
    period_forecast,
    spend_breakdown,
    spend_totals,
    top_runs,
)
from workflows.errors import ApplicationError
from workflows.models import CHARGE_BASES, LedgerEntry, LedgerKind, Team, Workflow
from workflows.reports.spreadsheet import csv_cell
from workflows.selectors import AWAITING_USAGE, may_adjust_ledger, teams_visible_to
from workflows.services.adjustments import check_adjustment, ledger_adjust

DEFAULT_RANGE_DAYS = 30
DATE_INPUT = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
FIGURES = ["spend_usd", "runs", "steps", "input_tokens", "output_tokens", "unpriced_steps"]
FIGURE_HEADINGS = ["Spend", "Runs", "Steps", "Input tokens", "Output tokens", "Unpriced steps"]


def utc_today() -> date:
    return timezone.now().astimezone(UTC).date()


class SpendFilterForm(forms.Form):
    """The report's filters. Its choices are the user's teams, workflows and models only, so another
    team's id is a form error, never a report."""

    team = forms.ModelChoiceField(Team.objects.none(), required=False, empty_label="All teams")
    workflow = forms.ModelChoiceField(Workflow.objects.none(), required=False, empty_label="All workflows")
    model = forms.ChoiceField(required=False)
    since = forms.DateField(label="From", required=False, widget=DATE_INPUT)
    until = forms.DateField(label="To (inclusive)", required=False, widget=DATE_INPUT)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = visible_to(Team.objects.all(), user=user)
        self.fields["workflow"].queryset = visible_to(Workflow.objects.select_related("team"), user=user)
        models = ledger_models(entries=visible_to(LedgerEntry.objects.all(), user=user))
        self.fields["model"].choices = [("", "All models"), *((model, model) for model in models)]

    @classmethod
    def for_request(cls, request) -> "SpendFilterForm":
        # A first visit shows the last 30 days; a submitted form with a blank date leaves that end open.
        if request.GET:
            return cls(request.GET, user=request.user)
        today = utc_today()
        return cls({"since": today - timedelta(days=DEFAULT_RANGE_DAYS - 1), "until": today}, user=request.user)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("since") and cleaned.get("until") and cleaned["since"] > cleaned["until"]:
            raise forms.ValidationError("“From” must not be after “To”.")
        return cleaned

    def query(self) -> SpendQuery:
        return SpendQuery(**self.cleaned_data)

    def ledger_lookups(self) -> dict:
        """The filters as the ledger list's own lookups, so that it lists the entries the report sums."""
        data = self.cleaned_data
        lookups = {
            "team__id__exact": data["team"].pk if data["team"] else None,
            "run__workflow_version__workflow__id__exact": data["workflow"].pk if data["workflow"] else None,
            "model__exact": data["model"] or None,
            "booked_at__gte": day_start(data["since"]).isoformat() if data["since"] else None,
            "booked_at__lt": day_start(data["until"] + timedelta(days=1)).isoformat()
            if data["until"] and data["until"] < date.max
            else None,
        }
        return {name: value for name, value in lookups.items() if value is not None}

    def querystring(self, **overrides) -> str:
        """The current filters (with overrides) as a query string, for CSV and drill-down links."""
        params = {name: self[name].value() for name in self.fields} | overrides
        return urlencode({name: value for name, value in params.items() if value not in (None, "")})


@dataclass(frozen=True)
class Breakdown:
    caption: str
    headings: list[str]
    labels: Callable[[dict], list[str]]
    entries: Callable[[dict], dict]  # the ledger list's lookups that narrow it to the row's entries
    drill: Callable[[dict], dict] | None = None  # the filter that narrows the report to the row


def _workflow_label(row: dict) -> str:
    return f"{row['team_name']}/{row['workflow_name']}"


# How the breakdowns name the row of the entries that have no model (tool calls) or no tool (model calls).
NO_MODEL = "(priced tool calls)"
NO_TOOL = "(model calls)"


def _tool_labels(row: dict) -> list[str]:
    if not row["tool_name"]:
        return [NO_TOOL, ""]
    return [row["server_name"], row["tool_name"]]


def _day_entries(row: dict) -> dict:
    # The day is within the report's dates, so its own bounds replace theirs.
    return {
        "booked_at__gte": day_start(row["day"]).isoformat(),
        "booked_at__lt": day_start(row["day"] + timedelta(days=1)).isoformat(),
    }


def _workflow_entries(row: dict) -> dict:
    return {"run__workflow_version__workflow__id__exact": row["workflow_id"]}


BREAKDOWNS = {
    "day": Breakdown("By day", ["Day"], lambda row: [row["day"].isoformat()], _day_entries),
    "team": Breakdown(
        "By team",
        ["Team"],
        lambda row: [row["team_name"]],
        lambda row: {"team__id__exact": row["team_pk"]},
        lambda row: {"team": row["team_pk"]},
    ),
    "workflow": Breakdown(
        "By workflow",
        ["Workflow"],
        lambda row: [_workflow_label(row)],
        _workflow_entries,
        lambda row: {"workflow": row["workflow_id"]},
    ),
    "model": Breakdown(
        "By model",
        ["Model"],
        lambda row: [row["model_name"] or NO_MODEL],
        lambda row: {"model__exact": row["model_name"]},
        lambda row: {"model": row["model_name"]} if row["model_name"] else None,
    ),
    "agent": Breakdown(
        "By agent",
        ["Workflow", "Agent"],
        lambda row: [_workflow_label(row), row["agent_name"]],
        lambda row: _workflow_entries(row) | {"agent__exact": row["agent_name"]},
    ),
    "tool": Breakdown(
        "By tool",
        ["Server", "Tool"],
        _tool_labels,
        lambda row: {"tool_server__exact": row["server_name"], "tool__exact": row["tool_name"]},
    ),
}
# The breakdowns the page shows as tables, after the one by team for those who see several teams.
TABLES = ("workflow", "model", "agent", "tool")
# The ledger list's lookups that the links above use and no list filter offers.
DRILL_LOOKUPS = {"run__workflow_version__workflow__id__exact"}


def _figures(row: dict, usd: Callable[[Decimal], str]) -> list[str]:
    return [usd(row["spend_usd"]), *(f"{row[name]:,}" for name in FIGURES[1:])]


def _table(form: SpendFilterForm, by: str, rows: list[dict], totals: dict) -> dict:
    breakdown = BREAKDOWNS[by]
    ledger_list = reverse("admin:workflows_ledgerentry_changelist")
    return {
        "by": by,
        "caption": breakdown.caption,
        "headings": breakdown.headings,
        "csv_query": form.querystring(by=by),
        "rows": [
            {
                "labels": breakdown.labels(row),
                "href": f"?{form.querystring(**drill)}" if breakdown.drill and (drill := breakdown.drill(row)) else "",
                "entries_href": f"{ledger_list}?{urlencode(form.ledger_lookups() | breakdown.entries(row))}",
                "figures": _figures(row, format_usd_exact),
            }
            for row in rows
        ],
        "totals": _figures(totals, format_usd_exact),
    }


def _chart_title(form: SpendFilterForm, series: list) -> str:
    scope = [str(value) for value in (form.cleaned_data["team"], form.cleaned_data["workflow"]) if value]
    scope += [form.cleaned_data["model"]] if form.cleaned_data["model"] else []
    span = f"{series[0][0]:%Y-%m-%d} to {series[-1][0]:%Y-%m-%d}"
    return f"Daily spend, {span}" + (f" ({', '.join(scope)})" if scope else "")


def _sees_several_teams(user) -> bool:
    # A breakdown by team is one row for the staff of one team: the totals already say it.
    return teams_visible_to(user=user)[:2].count() > 1


class AdjustmentForm(forms.Form):
    """What an entry's Adjust page posts. The amount and the reason are checked by check_adjustment, as
    the API's are, so that both refuse the same adjustments with the same messages."""

    amount_usd = forms.CharField(
        label="Amount (USD)",
        required=False,
        help_text="Added to the entry: negative to refund, e.g. -0.28.",
        widget=forms.TextInput(attrs={"required": True, "inputmode": "decimal"}),
    )
    reason = forms.CharField(
        required=False,
        help_text="Why, for the ledger and the run's ledger_adjusted event.",
        widget=forms.Textarea(attrs={"required": True, "rows": 3, "cols": 60}),
    )

    def refused(self, error: ApplicationError) -> None:
        """Show each problem the service found by its field, the others above the form."""
        for problem in error.details if isinstance(error.details, list) else []:
            self.add_error(problem["path"] if problem["path"] in self.fields else None, problem["message"])


class AwaitingUsageFilter(admin.SimpleListFilter):
    title = "usage"
    parameter_name = "usage"

    def lookups(self, request, model_admin):
        return [("awaiting", "Estimated, awaiting usage")]

    def queryset(self, request, queryset):
        return queryset.filter(AWAITING_USAGE) if self.value() == "awaiting" else queryset


def short_utc(moment) -> str:
    """A list cell's time: to the minute, in UTC (the full time is on the row's page and in the CSV)."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}"


LEDGER_CSV = [
    CsvColumn("id", lambda entry: entry.pk),
    CsvColumn("created_at", lambda entry: entry.created_at),
    CsvColumn("booked_at", lambda entry: entry.booked_at),
    CsvColumn("team", lambda entry: entry.team.name),
    CsvColumn("run", lambda entry: entry.run_id),
    CsvColumn("workflow", lambda entry: entry.run.workflow_version.workflow.name),
    CsvColumn("agent", lambda entry: entry.agent),
    CsvColumn("kind", lambda entry: entry.kind),
    CsvColumn("provider", lambda entry: entry.provider),
    CsvColumn("model", lambda entry: entry.model),
    CsvColumn("tool_server", lambda entry: entry.tool_server),
    CsvColumn("tool", lambda entry: entry.tool),
    CsvColumn("attempt", lambda entry: entry.attempt),
    CsvColumn("input_tokens", lambda entry: entry.input_tokens),
    CsvColumn("cached_input_tokens", lambda entry: entry.cached_input_tokens),
    CsvColumn("cache_write_tokens", lambda entry: entry.cache_write_tokens),
    CsvColumn("output_tokens", lambda entry: entry.output_tokens),
    CsvColumn("price_source", lambda entry: entry.price_source),
    CsvColumn("cost_usd", lambda entry: entry.cost_usd),
    CsvColumn("basis", lambda entry: entry.basis),
    CsvColumn("corrects", lambda entry: entry.corrects_id),
    CsvColumn("actor", lambda entry: entry.actor),
    CsvColumn("reason", lambda entry: entry.reason),
]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(CsvExportMixin, ReadOnlyAdminMixin, TeamScopedAdmin):
    # Few, short columns, so that the list fits a 1400px screen beside both sidebars; an entry's page
    # and the CSV have every field.
    list_display = ["id", "created", "team", "run_id_shown", "agent", "charged_for", "attempt", "tokens", "cost", "basis_code"]
    list_display_links = ["id"]
    list_select_related = ["team"]
    list_filter = [
        # By the day the spend counts, as the Spend page sums and links: a late correction is booked
        # on the day of the entry it corrects.
        ("booked_at", DateRangeFilter),
        "team",
        "run__workflow_version__workflow",
        "kind",
        "basis",
        AwaitingUsageFilter,
        "model",
        "price_source",
    ]
    search_fields = ["model", "agent", "tool", "run__id", "actor", "reason"]
    date_hierarchy = "booked_at"
    csv_columns = LEDGER_CSV
    csv_name = "ledger"
    csv_select_related = ["team", "run__workflow_version__workflow"]

    @admin.display(description="created (UTC)", ordering="created_at")
    def created(self, entry: LedgerEntry) -> str:
        return short_utc(entry.created_at)

    @admin.display(description="run", ordering="run_id")
    def run_id_shown(self, entry: LedgerEntry) -> int:
        return entry.run_id

    @admin.display(description="model / tool", ordering="model")
    def charged_for(self, entry: LedgerEntry) -> str:
        return entry.model if entry.kind == LedgerKind.MODEL else f"{entry.tool_server} {entry.tool}"

    @admin.display(description="tokens in / out")
    def tokens(self, entry: LedgerEntry) -> str:
        return f"{entry.input_tokens:,} / {entry.output_tokens:,}" if entry.kind == LedgerKind.MODEL else ""

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, entry: LedgerEntry) -> str:
        return format_usd_exact(entry.cost_usd)

    @admin.display(description="basis", ordering="basis")
    def basis_code(self, entry: LedgerEntry) -> str:
        # The one-word code; its long label (the filter shows it) would widen the column past the screen.
        return entry.basis

    def lookup_allowed(self, lookup, value, request):
        # The Spend page's links to the entries behind a figure filter by workflow, which no list filter offers.
        return lookup in DRILL_LOOKUPS or super().lookup_allowed(lookup, value, request)

    def get_urls(self):
        # Before the default URLs: their "<object_id>/" pattern would take "spend/" as an entry's id.
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("spend/", self.admin_site.admin_view(self.spend_view), name=f"{name}_spend"),
            path("spend.csv", self.admin_site.admin_view(self.spend_csv_view), name=f"{name}_spend_csv"),
            path("<path:object_id>/adjust/", self.admin_site.admin_view(self.adjust_view), name=f"{name}_adjust"),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["may_adjust"] = obj is not None and obj.basis in CHARGE_BASES and may_adjust_ledger(user=request.user)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def adjust_view(self, request, object_id: str):
        """Adjust a charge, as `POST /ledger/{id}/adjustments` does, in the staff user's name. The entry
        itself stays as it is: the adjustment is an entry of its own."""
        entry = self.get_object(request, unquote(object_id))
        if entry is None:  # unknown, or another team's: answered as the entry's own page answers it
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not (self.has_view_permission(request, entry) and may_adjust_ledger(user=request.user)):
            raise PermissionDenied
        form = AdjustmentForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                adjustment = check_adjustment(**form.cleaned_data)
                made = ledger_adjust(entry=entry, adjustment=adjustment, actor=f"user:{request.user.get_username()}")
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                form.refused(exc)
            else:
                self.message_user(
                    request, f"Entry {entry.pk} adjusted by {format_usd(made.cost_usd)} (entry {made.pk}).", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:workflows_run_change", args=[entry.run_id]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Adjust ledger entry {entry.pk}",
            "entry": entry,
            "corrections": entry.corrections.order_by("id"),
            "form": form,
        }
        return TemplateResponse(request, "admin/workflows/ledgerentry/adjust.html", context)

    def spend_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = SpendFilterForm.for_request(request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Spend",
            "form": form,
            "figure_headings": FIGURE_HEADINGS,
        }
        if form.is_valid():
            entries = ledger_for(form.query(), entries=self.get_queryset(request))
            totals = spend_totals(entries=entries)
            days = spend_breakdown(entries=entries, by="day")
            series = daily_series(days=days, since=form.cleaned_data["since"], until=form.cleaned_data["until"])
            context |= {
                "totals": dict(zip(FIGURE_HEADINGS, _figures(totals, format_usd), strict=True)),
                "estimated": settled_and_estimated(spent_usd=totals["spend_usd"], estimated_usd=totals["estimated_usd"]),
                "chart": daily_spend_svg(title=_chart_title(form, series), points=series) if series else None,
                "tables": [
                    _table(form, by, spend_breakdown(entries=entries, by=by), totals)
                    for by in (*(["team"] if _sees_several_teams(request.user) else []), *TABLES)
                ],
                **period_forecast(form.cleaned_data["team"]),
                "days": _table(form, "day", days, totals),
                "top_runs": [
                    {
                        "run": row["run"],
                        "url": reverse("admin:workflows_run_change", args=[row["run"].pk]),
                        "spend": format_usd_exact(row["spend_usd"]),
                        "steps": row["steps"],
                        "run_total": format_usd_exact(row["run"].spent_usd),
                    }
                    for row in top_runs(entries=entries)
                ],
            }
        return TemplateResponse(request, "admin/workflows/ledgerentry/spend.html", context)

    def spend_csv_view(self, request):
        """The breakdown `by` day, workflow, model, agent or tool under the page's filters; money as 6-place decimals."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        by = request.GET.get("by", "day")
        form = SpendFilterForm(request.GET, user=request.user)
        if by not in BREAKDOWNS or not form.is_valid():
            return HttpResponseBadRequest("Invalid filters or breakdown.", content_type="text/plain")
        since, until = form.cleaned_data["since"], form.cleaned_data["until"]
        filename = f"spend-by-{by}-{since or 'start'}-to-{until or utc_today()}.csv"
        response = HttpResponse(
            content_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )
        writer = csv.writer(response)
        breakdown = BREAKDOWNS[by]
        writer.writerow([*(heading.lower() for heading in breakdown.headings), *FIGURES])
        for row in spend_breakdown(entries=ledger_for(form.query(), entries=self.get_queryset(request)), by=by):
            spend = row["spend_usd"].quantize(MICRO_USD)
            writer.writerow([*map(csv_cell, breakdown.labels(row)), spend, *(row[name] for name in FIGURES[1:])])
        return response
