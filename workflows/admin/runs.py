"""Workflows, runs and what a run leaves behind: steps, events, checkpoints; and the price table."""

from django.contrib import admin

from workflows.admin.base import ReadOnlyAdminMixin, ReadOnlyInline, TeamScopedAdmin, format_usd
from workflows.models import (
    Checkpoint,
    Event,
    LedgerEntry,
    ModelAlias,
    Price,
    Run,
    Step,
    Workflow,
    WorkflowVersion,
)
from workflows.reports.cost_profile import cost_profile


class WorkflowVersionInline(ReadOnlyInline):
    model = WorkflowVersion
    fields = ["version", "created_at"]


@admin.register(Workflow)
class WorkflowAdmin(TeamScopedAdmin):
    list_display = ["name", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "team__name"]
    inlines = [WorkflowVersionInline]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            profile = cost_profile(workflow=obj)
            context |= {
                "cost_profile": profile,
                "cost_figures": {
                    name: format_usd(getattr(profile, name)) for name in ("p50", "p95", "max", "recommended_budget_usd")
                },
                "agent_costs": [(agent, format_usd(mean)) for agent, mean in profile.mean_cost_by_agent.items()],
                "stops": [
                    (stop.run, stop.step_agent, *map(format_usd, (stop.spent_usd, stop.projected_usd, stop.budget_usd)))
                    for stop in profile.would_have_stopped
                ],
            }
        return super().render_change_form(request, context, add, change, form_url, obj)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = ["workflow", "version", "created_at"]
    list_filter = ["workflow__team"]
    search_fields = ["workflow__name"]


class StepInline(ReadOnlyInline):
    model = Step
    fields = [
        "sequence", "agent", "group", "branch_key", "iteration", "status", "attempts", "redeliveries", "model",
        "estimate_usd", "reserved_usd", "worker",
    ]  # fmt: skip


class EventInline(ReadOnlyInline):
    model = Event
    fields = ["created_at", "type", "actor", "payload"]


class LedgerEntryInline(ReadOnlyInline):
    model = LedgerEntry
    fields = ["step", "attempt", "agent", "model", "input_tokens", "output_tokens", "price_source", "cost_usd"]


class CheckpointInline(ReadOnlyInline):
    model = Checkpoint
    fk_name = "run"
    fields = ["created_at", "reason", "next_agent", "iterations", "spent_usd", "active_time"]


@admin.register(Run)
class RunAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = [
        "id",
        "team",
        "workflow_version",
        "status",
        "budget_mode",
        "budget_usd",
        "spent_usd",
        "reserved_usd",
        "iterations",
        "created_at",
    ]
    list_filter = ["status", "budget_mode", "team"]
    search_fields = ["id", "workflow_version__workflow__name", "team__name", "current_agent"]
    list_select_related = ["team", "workflow_version__workflow"]
    inlines = [StepInline, LedgerEntryInline, EventInline, CheckpointInline]


@admin.register(Step)
class StepAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = [
        "id", "run", "sequence", "agent", "group", "branch_key", "status", "attempts", "redeliveries", "estimate_usd",
        "reserved_usd", "worker",
    ]  # fmt: skip
    list_filter = ["status"]
    search_fields = ["agent", "run__id"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = ["id", "type", "run", "team", "actor", "created_at"]
    list_filter = ["type", "team"]
    search_fields = ["run__id", "actor"]
    date_hierarchy = "created_at"


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = ["id", "run", "reason", "next_agent", "iterations", "spent_usd", "created_at"]
    list_filter = ["reason"]
    search_fields = ["run__id", "next_agent"]


@admin.register(Price)
class PriceAdmin(TeamScopedAdmin):
    list_display = [
        "model",
        "input_per_mtok",
        "cached_input_per_mtok",
        "cache_write_per_mtok",
        "output_per_mtok",
        "max_output_tokens",
        "valid_from",
        "source",
    ]
    search_fields = ["model"]
    list_filter = ["source", "valid_from"]


@admin.register(ModelAlias)
class ModelAliasAdmin(TeamScopedAdmin):
    list_display = ["alias", "model"]
    search_fields = ["alias", "model"]
