"""Pieces shared by the admin modules, and the one place where staff users are scoped to their teams.

Superusers see every team. A staff user who is not a superuser sees and changes only the rows of the teams
they are staff of (Team.staff), and nothing when they are staff of none: every ModelAdmin and inline of the
app derives from TeamScopedAdmin or TeamScopedInline, and the custom views (the Spend report, its CSVs and
chart) read through `visible_to`. Rows of another team do not exist for them: their pages answer as for a
deleted row, and no list, filter, dropdown, autocomplete or action offers them.
"""

from decimal import ROUND_HALF_EVEN, Decimal

from django.contrib import admin
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet

from workflows.models import (
    ApiKey,
    BudgetChange,
    Checkpoint,
    Event,
    IdempotencyKey,
    LedgerEntry,
    ModelAlias,
    Price,
    ProviderCredential,
    ProviderRoute,
    Run,
    Step,
    SweepHeartbeat,
    Team,
    TeamDailySpend,
    TeamToolServer,
    ThresholdCrossing,
    ToolPrice,
    WebhookAttempt,
    WebhookDelivery,
    Workflow,
    WorkflowVersion,
)
from workflows.selectors import teams_visible_to

MICRO_USD = Decimal("0.000001")

# The lookup from each model to the team that owns its rows ("" for Team itself).
TEAM_PATHS: dict[type[Model], str] = {
    Team: "",
    ApiKey: "team",
    ProviderCredential: "team",
    ProviderRoute: "team",
    TeamToolServer: "team",
    BudgetChange: "team",
    ThresholdCrossing: "team",
    Workflow: "team",
    WorkflowVersion: "workflow__team",
    Run: "team",
    Step: "run__team",
    Checkpoint: "run__team",
    Event: "team",
    LedgerEntry: "team",
    WebhookDelivery: "team",
    WebhookAttempt: "delivery__team",
    IdempotencyKey: "team",
    TeamDailySpend: "team",
    # A team's staff see their team's own tool prices, and change none (ToolPriceAdmin); the prices
    # for every team are the superusers' alone, as the rows of no team.
    ToolPrice: "team",
}
# Rows of no team that apply to every team: a change to a price re-prices every team's steps, so staff
# who are not superusers may view them only. The sweeper's heartbeat is the service's own, in no admin.
SHARED_MODELS: tuple[type[Model], ...] = (Price, ModelAlias, SweepHeartbeat)


def team_path(model: type[Model]) -> str | None:
    """The model's lookup to its team; None for shared rows. A model in neither table raises KeyError,
    so that a new model can never be shown unscoped by omission."""
    if model in SHARED_MODELS:
        return None
    return TEAM_PATHS[model]


def visible_to(queryset: QuerySet, *, user) -> QuerySet:
    """`queryset` narrowed to the rows of the teams `user` may see."""
    path = team_path(queryset.model)
    if path is None or user.is_superuser:
        return queryset
    return queryset.filter(**{f"{path}__in" if path else "pk__in": teams_visible_to(user=user).values("pk")})


def owning_team_id(obj: Model) -> int | None:
    """The pk of the team `obj` belongs to, following its team path; None for shared rows."""
    path = team_path(type(obj))
    if path is None:
        return None
    if not path:
        return obj.pk
    *hops, last = path.split("__")
    for hop in hops:
        obj = getattr(obj, hop)
    return getattr(obj, f"{last}_id")


class _TeamScopedQueries:
    """What an admin and its inlines read, and what their dropdowns offer, narrowed to the user's teams."""

    def get_queryset(self, request):
        return visible_to(super().get_queryset(request), user=request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # The queryset also validates the posted value: a row cannot be moved into another team's row.
        if not request.user.is_superuser:
            queryset = kwargs.get("queryset")
            if queryset is None:
                queryset = self.get_field_queryset(None, db_field, request)
            if queryset is None:
                queryset = db_field.related_model._default_manager.all()
            kwargs["queryset"] = visible_to(queryset, user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class TeamScopedAdmin(_TeamScopedQueries, admin.ModelAdmin):
    """The base of every ModelAdmin of the app.

    `superuser_only_fields` are left out of the form for everyone else, whatever their permissions: fields
    through which a team's staff could widen their own access or lower their own prices.
    """

    superuser_only_fields: tuple[str, ...] = ()

    def _may_see(self, request, obj) -> bool:
        if obj is None or request.user.is_superuser or team_path(self.model) is None:
            return True
        return visible_to(self.model._default_manager.filter(pk=obj.pk), user=request.user).exists()

    def _may_write(self, request) -> bool:
        return request.user.is_superuser or team_path(self.model) is not None

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and self._may_see(request, obj)

    def has_add_permission(self, request):
        if request.user.is_superuser:
            return super().has_add_permission(request)
        # Only rows of one of their teams: no shared rows, and no teams (a new team would be nobody's;
        # superusers add teams and name their staff).
        path = team_path(self.model)
        return bool(path) and super().has_add_permission(request) and teams_visible_to(user=request.user).exists()

    def has_change_permission(self, request, obj=None):
        return self._may_write(request) and super().has_change_permission(request, obj) and self._may_see(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._may_write(request) and super().has_delete_permission(request, obj) and self._may_see(request, obj)

    def get_readonly_fields(self, request, obj=None):
        # A row's team is fixed once it exists, for superusers too: a moved API key would spend another
        # team's budget, a moved credential's key would be sent on another team's calls.
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and team_path(self.model) == "team" and "team" not in readonly:
            readonly.insert(0, "team")
        return readonly

    def save_form(self, request, form, change):
        # The last word before any save_model: whatever a form let through, a row never lands in
        # another team (the dropdowns offer only the user's teams, so this is a bypassed form).
        obj = super().save_form(request, form, change)
        if not request.user.is_superuser and team_path(self.model) is not None:
            if not teams_visible_to(user=request.user).filter(pk=owning_team_id(obj)).exists():
                raise PermissionDenied
        return obj

    def get_list_filter(self, request):
        # A relation's filter lists only what the user's rows point to, not every team or run there is.
        filters = super().get_list_filter(request)
        if request.user.is_superuser:
            return filters
        return [
            (name, ScopedRelatedFilter)
            if isinstance(name, str) and get_fields_from_path(self.model, name)[-1].is_relation
            else name
            for name in filters
        ]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser or not self.superuser_only_fields:
            return fieldsets
        kept = []
        for name, options in fieldsets:
            fields = [field for field in options["fields"] if field not in self.superuser_only_fields]
            if fields:
                kept.append((name, {**options, "fields": fields}))
        return kept


class ScopedRelatedFilter(admin.RelatedOnlyFieldListFilter):
    """A relation's filter offering only what the user's rows point to, and shown even with one choice:
    Django drops a filter with fewer than two choices and, with it, its parameter from the query, so a
    link naming a row outside the user's teams would list every row of theirs instead of none."""

    def has_output(self) -> bool:
        return True


class TeamScopedInline(_TeamScopedQueries, admin.TabularInline):
    """The base of every inline: its rows are read through the same scope (its parent's page already is)."""


class ReadOnlyAdminMixin:
    """History is written by the service only: the admin shows it and never edits it."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(ReadOnlyAdminMixin, TeamScopedInline):
    extra = 0
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields


def format_usd(amount: Decimal | None, places: int = 2) -> str:
    """`$1,234.50`: a summary's dollars, to the cent. Tables and CSVs show the exact amount instead
    (format_usd_exact), so that a row of micro-dollar steps never reads as $0.00.

    `places` fixes other decimals, for labels that must line up (a chart axis).
    """
    if amount is None:
        return "—"
    amount = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.{places}f}"


def format_usd_exact(amount: Decimal | None) -> str:
    """`$1,234.500000`: the exact micro-dollars the ledger holds, for table cells."""
    return format_usd(amount, places=6)


def settled_and_estimated(*, spent_usd: Decimal, estimated_usd: Decimal) -> str:
    """A spend as "$x settled, $y estimated, awaiting usage" (`estimated_usd` is the part of `spent_usd`
    that rests on estimates); "" when none of it does."""
    if not estimated_usd:
        return ""
    return f"{format_usd(spent_usd - estimated_usd)} settled, {format_usd(estimated_usd)} estimated, awaiting usage"
