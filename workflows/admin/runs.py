"""Workflows, runs and what a run leaves behind: steps, events, checkpoints; and the price table."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse

from workflows.admin.base import ReadOnlyAdminMixin, ReadOnlyInline, TeamScopedAdmin, format_usd, settled_and_estimated
from workflows.api.errors import error_body
from workflows.api.streams import event_stream_response, stream_start
from workflows.errors import ApplicationError
from workflows.models import (
    Checkpoint,
    Event,
    EventType,
    LedgerEntry,
    ModelAlias,
    Price,
    Run,
    RunStatus,
    Step,
    ToolPrice,
    Workflow,
    WorkflowVersion,
)
from workflows.definition import tool_server_key
from workflows.definition.tools import url_problem
from workflows.reports.cost_profile import cost_profile
from workflows.selectors import runs_estimated_usd
from workflows.services.inputs import run_answer


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
        "sequence", "agent", "role", "group", "branch_key", "iteration", "status", "attempts", "redeliveries",
        "model", "estimate_usd", "reserved_usd", "worker",
    ]  # fmt: skip


class EventInline(ReadOnlyInline):
    model = Event
    fields = ["created_at", "type", "actor", "request_id", "payload"]


class LedgerEntryInline(ReadOnlyInline):
    model = LedgerEntry
    fields = ["step", "attempt", "agent", "model", "input_tokens", "output_tokens", "price_source", "cost_usd", "basis"]


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
        "estimated_usd",
        "reserved_usd",
        "iterations",
        "created_at",
    ]
    list_filter = ["status", "budget_mode", "team"]
    search_fields = ["id", "workflow_version__workflow__name", "team__name", "current_agent"]
    list_select_related = ["team", "workflow_version__workflow"]
    inlines = [StepInline, LedgerEntryInline, EventInline, CheckpointInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(estimated_usd=runs_estimated_usd())

    @admin.display(description="of which estimated", ordering="estimated_usd")
    def estimated_usd(self, run: Run):
        return run.estimated_usd

    def get_urls(self):
        answer = path("<int:run_id>/answer/", self.admin_site.admin_view(self.answer_view), name="workflows_run_answer")
        stream = path(
            "<int:run_id>/events/stream/", self.admin_site.admin_view(self.events_stream_view), name="workflows_run_events_stream"
        )
        return [answer, stream, *super().get_urls()]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["estimated"] = settled_and_estimated(spent_usd=obj.spent_usd, estimated_usd=obj.estimated_usd)
        if obj is not None:
            context["spent"] = format_usd(obj.spent_usd)
            context["events"] = obj.events.order_by("id")
            context["run_status_labels"] = dict(RunStatus.choices)
            context["run_event_types"] = EventType.values
        if obj is not None and obj.status == RunStatus.WAITING_FOR_INPUT:
            asked = obj.events.filter(type=EventType.INPUT_REQUESTED).order_by("-id").first()
            context["input_request"] = asked.payload if asked else None
        return super().render_change_form(request, context, add, change, form_url, obj)

    def answer_view(self, request, run_id: int):
        """Answer the human gate the run waits at, as `POST /runs/{id}/input` does, in the staff user's name."""
        run = self.get_object(request, str(run_id))
        if run is None or not self.has_view_permission(request, run) or request.method != "POST":
            raise PermissionDenied
        try:
            run_answer(run=run, given=_answer_posted(request.POST), actor=f"user:{request.user.username}")
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, "Answered; the run goes on.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:workflows_run_change", args=[run.pk]))


    def events_stream_view(self, request, run_id: int):
        """The run's events as the API streams them (GET /runs/{id}/events/stream), for the run page to
        follow live; a run the user may not see is a 404, as its page is."""
        run = self.get_object(request, str(run_id))
        if run is None or not self.has_view_permission(request, run):
            raise Http404
        try:
            after = stream_start(last_event_id=request.headers.get("Last-Event-ID"), after=request.GET.get("after"))
            return event_stream_response(team_id=run.team_id, run_id=run.pk, after=after)
        except ApplicationError as exc:
            return JsonResponse(error_body(exc.type, exc.message, exc.details), status=exc.status_code)


def _answer_posted(posted) -> dict:
    """The answer the run page's form posts, in the API's shape: a gate's choice (and text), or the
    questions' answers by id (a blank one skipped) or abandoning them, or a dialog's reply or declining it."""
    if posted.get("dialog"):
        return {"decline": True} if posted.get("decline") else {"text": posted.get("text", "")}
    if "choice" in posted:
        return {"choice": posted["choice"], **({"text": posted["text"]} if posted.get("text") else {})}
    if posted.get("abort"):
        return {"abort": True}
    prefix = "answers."
    return {"answers": {key[len(prefix):]: value for key, value in posted.items() if key.startswith(prefix) and value}}


@admin.register(Step)
class StepAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = [
        "id", "run", "sequence", "agent", "role", "group", "branch_key", "status", "attempts", "redeliveries",
        "estimate_usd", "reserved_usd", "worker",
    ]  # fmt: skip
    list_filter = ["status"]
    search_fields = ["agent", "run__id"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = ["id", "type", "run", "team", "actor", "request_id", "created_at"]
    list_filter = ["type", "team"]
    search_fields = ["run__id", "actor", "=request_id"]
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


class ToolPriceForm(forms.ModelForm):
    class Meta:
        model = ToolPrice
        fields = ["team", "server", "tool", "usd_per_call"]

    def clean_server(self):
        # Stored as prices are looked up: the URL normalized, so that what a workflow writes matches it.
        server = self.cleaned_data["server"].strip()
        if server.lower().startswith(("http:", "https:")) and (problem := url_problem(server)):
            raise forms.ValidationError(f"The URL {problem}.")
        return tool_server_key(server)


@admin.register(ToolPrice)
class ToolPriceAdmin(TeamScopedAdmin):
    """Prices per call of MCP servers' tools, set by superusers only: a team's staff could otherwise
    lower what their own team's calls cost."""

    form = ToolPriceForm
    list_display = ["server", "tool", "team", "usd_per_call", "updated_at"]
    list_filter = ["team"]
    search_fields = ["server", "tool", "team__name"]

    def has_add_permission(self, request):
        return request.user.is_superuser and super().has_add_permission(request)

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)
