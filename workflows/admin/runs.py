"""Workflows, runs and what a run leaves behind: steps, events, checkpoints; and the price table."""

import json
from datetime import UTC

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from workflows.admin.base import (
    ReadOnlyAdminMixin,
    ReadOnlyInline,
    TeamScopedAdmin,
    format_usd,
    format_usd_exact,
    settled_and_estimated,
)
from workflows.admin.lists import CsvColumn, CsvExportMixin, DateRangeFilter
from workflows.admin.run_chart import run_spend_svg
from workflows.api.errors import error_body
from workflows.api.streams import event_stream_response, stream_start
from workflows.errors import ApplicationError, InvalidRunState, ValidationFailed
from workflows.models import (
    FINAL_RUN_STATUSES,
    RESUMABLE_RUN_STATUSES,
    BudgetMode,
    Checkpoint,
    Event,
    EventType,
    ModelAlias,
    Price,
    Run,
    RunStatus,
    Step,
    ToolPrice,
    Workflow,
    WorkflowVersion,
)
from workflows.definition import LIMIT_FIELDS, tool_server_key
from workflows.definition.tools import url_problem
from workflows.reports.cost_profile import cost_profile
from workflows.reports.run_story import run_story
from workflows.selectors import runs_estimated_usd
from workflows.services.inputs import run_answer
from workflows.services.runs import run_cancel, run_resume
from workflows.services.workflow_budgets import workflow_budget_apply, workflow_budget_clear


class WorkflowVersionInline(ReadOnlyInline):
    model = WorkflowVersion
    fields = ["version", "created_at"]


@admin.register(Workflow)
class WorkflowAdmin(TeamScopedAdmin):
    list_display = ["name", "team", "budget_setting", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "team__name"]
    # The operator's budget changes only through its buttons, which require a reason and record it.
    exclude = ["budget_usd", "budget_mode"]
    inlines = [WorkflowVersionInline]

    @admin.display(description="budget (operator's)", ordering="budget_usd")
    def budget_setting(self, workflow: Workflow) -> str:
        if workflow.budget_usd is None:
            return "—"
        return f"{format_usd_exact(workflow.budget_usd)} {workflow.budget_mode}"

    def get_urls(self):
        budget = path(
            "<int:workflow_id>/budget/", self.admin_site.admin_view(self.budget_view), name="workflows_workflow_budget"
        )
        return [budget, *super().get_urls()]

    def budget_view(self, request, workflow_id: int):
        """Apply the cost profile's recommended budget as the workflow's enforce budget, or clear it; in the
        staff user's name, with the reason they give."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        workflow = self.get_object(request, str(workflow_id))
        if workflow is None or not self.has_change_permission(request, workflow):
            raise PermissionDenied
        actor, reason = f"user:{request.user.get_username()}", request.POST.get("reason", "")
        try:
            if request.POST.get("clear"):
                workflow_budget_clear(workflow=workflow, actor=actor, reason=reason)
                done = "Budget cleared: later runs take their budget from the definition, the team or the system."
            else:
                recommended = cost_profile(workflow=workflow).recommended_budget_usd
                if recommended is None:
                    raise ValidationFailed("There is no recommended budget yet: it needs completed runs that cost something.")
                # The figure on the button, so that runs finished since the page was shown do not change it unseen.
                if request.POST.get("apply") != str(recommended):
                    raise ValidationFailed(
                        f"The recommended budget is now {format_usd_exact(recommended)}: refresh the page to apply it."
                    )
                workflow_budget_apply(
                    workflow=workflow, budget_usd=recommended, budget_mode=BudgetMode.ENFORCE, actor=actor, reason=reason
                )
                done = f"Budget set to {format_usd_exact(recommended)}, enforce, for the runs started from now on."
        except ApplicationError as exc:
            problems = exc.details if isinstance(exc.details, list) else []
            shown = "; ".join(f"{problem['path']} {problem['message']}" for problem in problems)
            self.message_user(request, f"{exc.message} {shown}".strip(), messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[workflow.pk]))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            profile = cost_profile(workflow=obj)
            context |= {
                "budget_setting": (
                    f"{format_usd_exact(obj.budget_usd)}, {obj.budget_mode}" if obj.budget_usd is not None else None
                ),
                "may_set_budget": self.has_change_permission(request, obj),
                "recommended_exact": format_usd_exact(profile.recommended_budget_usd),
                "recommended_value": str(profile.recommended_budget_usd),
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


REASON_CHARS = 2000  # as the API's resume and cancel take it
LISTED_RUNS = 50  # the runs a bulk cancel names before it asks for a reason; it counts them all
TOKENS_IN_MEANS = "All the input: uncached, read from the prompt cache and written to it"
PAYLOAD_CHARS = 300  # of an event's details in the run page's table; its own page shows them whole


class RunResumeForm(forms.Form):
    """A resume's new limits, each left blank to keep the run's own, and why. The values are checked
    by the service, with the rules and the messages the API has."""

    budget_usd = forms.CharField(required=False, max_length=40, label="Budget (USD)")
    budget_mode = forms.ChoiceField(
        required=False, choices=[("", "keep"), *BudgetMode.choices], label="Budget mode"
    )
    max_iterations = forms.IntegerField(required=False, label="Max iterations")
    timeout_seconds = forms.IntegerField(required=False, label="Timeout (seconds)")
    reason = forms.CharField(max_length=REASON_CHARS, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def limit_overrides(self) -> dict:
        return {field: self.cleaned_data[field] for field in LIMIT_FIELDS if self.cleaned_data[field] not in ("", None)}


class RunCancelForm(forms.Form):
    reason = forms.CharField(max_length=REASON_CHARS, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


RUN_CSV = [
    CsvColumn("id", lambda run: run.pk),
    CsvColumn("created_at", lambda run: run.created_at),
    CsvColumn("finished_at", lambda run: run.finished_at),
    CsvColumn("team", lambda run: run.team.name),
    CsvColumn("workflow", lambda run: run.workflow_version.workflow.name),
    CsvColumn("version", lambda run: run.workflow_version.version),
    CsvColumn("status", lambda run: run.status),
    CsvColumn("current_agent", lambda run: run.current_agent),
    CsvColumn("budget_usd", lambda run: run.budget_usd),
    CsvColumn("budget_mode", lambda run: run.budget_mode),
    CsvColumn("spent_usd", lambda run: run.spent_usd),
    CsvColumn("estimated_usd", lambda run: run.estimated_usd),
    CsvColumn("reserved_usd", lambda run: run.reserved_usd),
    CsvColumn("unpriced_steps", lambda run: run.unpriced_steps),
    CsvColumn("iterations", lambda run: run.iterations),
    CsvColumn("max_iterations", lambda run: run.max_iterations),
]

RUN_CSV_UNREAD = [
    "inputs",
    "limit_sources",
    "provider_routes",
    "output",
    "error",
    "workflow_version__definition",
    "workflow_version__source",
]


@admin.register(Run)
class RunAdmin(CsvExportMixin, ReadOnlyAdminMixin, TeamScopedAdmin):
    """Runs are read here and acted on through the services the API calls (resume, cancel, answer), in
    the staff user's name; the run's own fields are never edited."""

    # Few, short columns, so that the list fits a 1400px screen beside both sidebars; the CSV has more.
    list_display = ["id", "created", "team", "workflow", "status", "budget", "spent", "reserved", "steps"]
    list_filter = [("created_at", DateRangeFilter), "status", "budget_mode", "team"]
    search_fields = ["id", "workflow_version__workflow__name", "team__name", "current_agent"]
    list_select_related = ["team", "workflow_version__workflow"]
    actions = ["cancel_runs"]
    csv_columns = RUN_CSV
    csv_name = "runs"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(estimated_usd=runs_estimated_usd())

    def csv_queryset(self, queryset):
        # No column reads the JSON of the run or its version's definition: decoding it for every row of
        # a long export would take most of its time.
        return super().csv_queryset(queryset).defer(*RUN_CSV_UNREAD)

    def get_fieldsets(self, request, obj=None):
        # The story above tells the run; its record stays at hand, folded.
        return [("The run's record", {"classes": ["collapse"], "fields": self.get_fields(request, obj)})]

    @admin.display(description="created (UTC)", ordering="created_at")
    def created(self, run: Run) -> str:
        return f"{run.created_at.astimezone(UTC):%Y-%m-%d %H:%M}"

    @admin.display(description="workflow", ordering="workflow_version__workflow__name")
    def workflow(self, run: Run) -> str:
        return f"{run.workflow_version.workflow.name} v{run.workflow_version.version}"

    @admin.display(description="budget", ordering="budget_usd")
    def budget(self, run: Run) -> str:
        if run.budget_usd is None:
            return "—"
        return format_html("{}<br><small>{}</small>", format_usd_exact(run.budget_usd), run.budget_mode)

    @admin.display(description="spent", ordering="spent_usd")
    def spent(self, run: Run) -> str:
        if not run.estimated_usd:
            return format_usd_exact(run.spent_usd)
        # The part that rests on estimates awaiting usage, under the total, rather than a column of its own.
        return format_html(
            "{}<br><small>{} est.</small>", format_usd_exact(run.spent_usd), format_usd_exact(run.estimated_usd)
        )

    @admin.display(description="reserved", ordering="reserved_usd")
    def reserved(self, run: Run) -> str:
        return format_usd_exact(run.reserved_usd)

    @admin.display(description="steps", ordering="iterations")
    def steps(self, run: Run) -> int:
        return run.iterations

    def has_act_permission(self, request, run: Run | None = None) -> bool:
        """Whether the user may resume, cancel and answer runs (`run`: this one): the model's change
        permission, for the runs of their teams. The page itself stays read-only."""
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}") and self._may_see(request, run)

    has_cancel_permission = has_act_permission  # what the bulk action asks for

    def get_urls(self):
        def action(name, view):
            return path(f"<int:run_id>/{name}/", self.admin_site.admin_view(require_POST(view)), name=f"workflows_run_{name}")

        stream = path(
            "<int:run_id>/events/stream/", self.admin_site.admin_view(self.events_stream_view), name="workflows_run_events_stream"
        )
        actions = [action("answer", self.answer_view), action("resume", self.resume_view), action("cancel", self.cancel_view)]
        return [*actions, stream, *super().get_urls()]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            story = run_story(run=obj)
            may_act = self.has_act_permission(request, obj)
            context |= {
                "estimated": settled_and_estimated(spent_usd=obj.spent_usd, estimated_usd=obj.estimated_usd),
                "summary": _summary_figures(story.summary),
                "story": story,
                "step_rows": [
                    (
                        line,
                        format_usd_exact(line.cost_usd),
                        # What an attempt in flight holds of the budget, until it settles.
                        format_usd_exact(line.step.reserved_usd) if line.step.reserved_usd else "",
                        _duration(line.duration),
                    )
                    for line in story.steps
                ],
                "event_rows": [(event, *_compact(event.payload)) for event in story.events],
                "ledger_rows": [(entry, format_usd_exact(entry.cost_usd)) for entry in story.ledger],
                "ledger_total": format_usd_exact(story.ledger_total_usd),
                "tokens_in_means": TOKENS_IN_MEANS,
                "checkpoint_rows": [(checkpoint, format_usd_exact(checkpoint.spent_usd)) for checkpoint in story.checkpoints],
                "spend_chart": run_spend_svg(story) if story.spend or story.marks else None,
                **{
                    f"{name}_url": f"{reverse(f'admin:workflows_{model}_changelist')}?run__id__exact={obj.pk}"
                    for name, model in [
                        ("events", "event"), ("ledger", "ledgerentry"), ("steps", "step"), ("checkpoints", "checkpoint")
                    ]
                },
                "resume_form": RunResumeForm() if may_act and obj.status in RESUMABLE_RUN_STATUSES else None,
                "cancel_form": RunCancelForm() if may_act and obj.status not in FINAL_RUN_STATUSES else None,
                # What the page's live script (run_live.js) needs to name new events and statuses.
                "run_status_labels": dict(RunStatus.choices),
                "run_event_types": EventType.values,
            }
            if may_act and obj.status == RunStatus.WAITING_FOR_INPUT:
                asked = obj.events.filter(type=EventType.INPUT_REQUESTED).order_by("-id").first()
                context["input_request"] = asked.payload if asked else None
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _run_to_act_on(self, request, run_id: int) -> Run:
        run = self.get_object(request, str(run_id))
        if run is None:  # no such run, or another team's
            raise Http404
        if not self.has_act_permission(request, run):
            raise PermissionDenied
        return run

    def _done(self, request, run: Run, refused: ApplicationError | None, success: str) -> HttpResponseRedirect:
        if refused is not None:
            self.message_user(request, _refusal(refused), messages.ERROR)
        else:
            self.message_user(request, success, messages.SUCCESS)
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

    def answer_view(self, request, run_id: int):
        """Answer the human gate the run waits at, as `POST /runs/{id}/input` does, in the staff user's name."""
        run = self._run_to_act_on(request, run_id)
        try:
            run_answer(run=run, given=_answer_posted(request.POST), actor=_actor(request))
        except ApplicationError as exc:
            return self._done(request, run, exc, "")
        return self._done(request, run, None, "Answered; the run goes on.")

    def resume_view(self, request, run_id: int):
        """Resume the run, as `POST /runs/{id}/resume` does, with the limits given and a reason."""
        run = self._run_to_act_on(request, run_id)
        form = RunResumeForm(request.POST)
        if not form.is_valid():
            return self._done(request, run, _form_refusal("Not resumed:", form), "")
        try:
            run = run_resume(
                run=run, actor=_actor(request), limits=form.limit_overrides(), reason=form.cleaned_data["reason"]
            )
        except ApplicationError as exc:
            return self._done(request, run, exc, "")
        return self._done(request, run, None, f"Resumed: the run is {run.status} and goes on from {run.current_agent}.")

    def cancel_view(self, request, run_id: int):
        """Cancel the run, as `POST /runs/{id}/cancel` does, with a reason."""
        run = self._run_to_act_on(request, run_id)
        form = RunCancelForm(request.POST)
        if not form.is_valid():
            return self._done(request, run, _form_refusal("Not cancelled:", form), "")
        try:
            run_cancel(run=run, actor=_actor(request), reason=form.cleaned_data["reason"])
        except ApplicationError as exc:
            return self._done(request, run, exc, "")
        return self._done(request, run, None, "Cancelled.")

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_runs(self, request, queryset):
        """Asks for a reason first (a page of its own, as Django's delete does), then cancels each run
        that has not finished, one transaction each, and says how many it cancelled and skipped."""
        form = RunCancelForm(request.POST if "confirm" in request.POST else None)
        runs = list(queryset.order_by("pk"))
        if not form.is_valid():
            return TemplateResponse(
                request,
                "admin/workflows/run/cancel_selected.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Cancel runs",
                    "opts": self.opts,
                    "form": form,
                    "runs": runs[:LISTED_RUNS],
                    "unlisted": max(len(runs) - LISTED_RUNS, 0),
                    "selected": runs,
                    "finished": sum(run.status in FINAL_RUN_STATUSES for run in runs),
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                },
            )
        cancelled = skipped = 0
        for run in runs:
            if run.status in FINAL_RUN_STATUSES:
                skipped += 1
                continue
            try:
                run_cancel(run=run, actor=_actor(request), reason=form.cleaned_data["reason"])
            except InvalidRunState:  # it finished since the list was read
                skipped += 1
            else:
                cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} runs; skipped {skipped} already finished.", messages.SUCCESS)
        return None


def _actor(request) -> str:
    """A staff user as events name them, as the other admin pages and the staff API do."""
    return f"user:{request.user.get_username()}"


def _refusal(exc: ApplicationError) -> str:
    """The API's message for the error; for invalid values, each value's problem too, as its details say."""
    details = exc.details if isinstance(exc.details, list) else []
    problems = "; ".join(
        f"{detail['path']}: {detail['message']}" if detail.get("path") else detail["message"]
        for detail in details
        if isinstance(detail, dict) and "message" in detail
    )
    return f"{exc.message} {problems}" if problems else exc.message


def _form_refusal(refused: str, form: forms.Form) -> ApplicationError:
    problems = [{"path": field, "message": " ".join(errors)} for field, errors in form.errors.items()]
    return ApplicationError(refused, details=problems)


def _summary_figures(summary) -> dict:
    return {
        "budget": format_usd(summary.budget_usd) if summary.budget_usd is not None else "none",
        "spent": format_usd(summary.spent_usd),
        "reserved": format_usd(summary.reserved_usd),
        "remaining": format_usd(summary.remaining_usd),
        "percent": f"{summary.percent_spent}%" if summary.percent_spent is not None else "—",
    }


def _duration(duration) -> str:
    return "" if duration is None else f"{duration.total_seconds():.1f} s"


def _compact(payload) -> tuple[str, bool]:
    """The payload on one line, cut at PAYLOAD_CHARS, and whether it was cut."""
    shown = json.dumps(payload, separators=(", ", ": "), ensure_ascii=False) if payload else ""
    if len(shown) <= PAYLOAD_CHARS:
        return shown, False
    return shown[:PAYLOAD_CHARS] + "…", True


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
