from django.contrib import admin, messages

from workflows.models import (
    ApiKey,
    Checkpoint,
    Event,
    LedgerEntry,
    Price,
    Run,
    Step,
    Team,
    Workflow,
    WorkflowVersion,
)
from workflows.services.teams import api_key_create, api_key_revoke


class ReadOnlyAdminMixin:
    """History is written by the service only: the admin shows it and never edits it."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "default_budget_usd",
        "default_budget_mode",
        "default_max_iterations",
        "default_timeout_seconds",
        "created_at",
    ]
    list_filter = ["default_budget_mode"]
    search_fields = ["name"]
    fieldsets = [
        (None, {"fields": ["name"]}),
        (
            "Run defaults",
            {
                "description": "Used when neither the run request nor the workflow sets a limit.",
                "fields": [
                    "default_budget_usd",
                    "default_budget_mode",
                    "default_max_iterations",
                    "default_timeout_seconds",
                ],
            },
        ),
    ]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "team", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["team", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "team__name"]
    fields = ["team", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        api_key, raw_key = api_key_create(team=obj.team, name=obj.name)
        obj.pk = api_key.pk
        messages.warning(request, f"The new key is {raw_key} — copy it now; it is not shown again.")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


class WorkflowVersionInline(ReadOnlyInline):
    model = WorkflowVersion
    fields = ["version", "created_at"]


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "team__name"]
    inlines = [WorkflowVersionInline]


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["workflow", "version", "created_at"]
    list_filter = ["workflow__team"]
    search_fields = ["workflow__name"]


class StepInline(ReadOnlyInline):
    model = Step
    fields = ["sequence", "agent", "iteration", "status", "attempts", "model", "estimate_usd", "reserved_usd", "worker"]


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
class RunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
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
class StepAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "run", "sequence", "agent", "status", "attempts", "estimate_usd", "reserved_usd", "worker"]
    list_filter = ["status"]
    search_fields = ["agent", "run__id"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "team",
        "run",
        "agent",
        "model",
        "input_tokens",
        "output_tokens",
        "price_source",
        "cost_usd",
        "created_at",
    ]
    list_filter = ["team", "model", "price_source"]
    search_fields = ["model", "agent", "run__id"]
    date_hierarchy = "created_at"


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "type", "run", "team", "actor", "created_at"]
    list_filter = ["type", "team"]
    search_fields = ["run__id", "actor"]
    date_hierarchy = "created_at"


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "run", "reason", "next_agent", "iterations", "spent_usd", "created_at"]
    list_filter = ["reason"]
    search_fields = ["run__id", "next_agent"]


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ["model", "input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "valid_from"]
    search_fields = ["model"]
    list_filter = ["valid_from"]
