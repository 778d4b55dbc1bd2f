"""Input serializers check the shape of a request; output serializers render models. No rules here."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from workflows.definition import LIMIT_FIELDS
from workflows.definition.bounds import MAX_SUM_DIGITS, MAX_VERSION
from workflows.definition.questions import MAX_QUESTIONS
from workflows.reports.forecast import BudgetForecast
from workflows.services.events import usd
from workflows.models import BudgetMode, Checkpoint, Event, LedgerEntry, Period, Run, Step, Workflow, WorkflowVersion


def money(**kwargs) -> serializers.DecimalField:
    # Totals can pass a column's 18 digits (workflows/definition/bounds.py): rendering one must not fail.
    return serializers.DecimalField(max_digits=MAX_SUM_DIGITS, decimal_places=6, read_only=True, **kwargs)


class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error rather than silently ignored."""

    def validate(self, attrs):
        if isinstance(self.initial_data, dict):
            unknown = sorted(set(self.initial_data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return attrs


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": {}}]})
class DefinitionField(serializers.Field):
    """YAML (or JSON) text, or an already-parsed JSON object."""

    default_error_messages = {"invalid": "Must be YAML or JSON text, or a JSON object."}

    def to_internal_value(self, data):
        if isinstance(data, (str, dict)):
            return data
        self.fail("invalid")


class WorkflowCreateInputSerializer(StrictInputSerializer):
    name = serializers.CharField(required=False, max_length=200)
    definition = DefinitionField()


class WorkflowVersionOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkflowVersion
        fields = ["version", "created_at"]


class WorkflowCreatedOutputSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="workflow_id")
    name = serializers.CharField(source="workflow.name")

    class Meta:
        model = WorkflowVersion
        fields = ["id", "name", "version", "created_at"]


class WorkflowOutputSerializer(serializers.ModelSerializer):
    latest_version = serializers.IntegerField()

    class Meta:
        model = Workflow
        fields = ["id", "name", "latest_version", "created_at"]


class WorkflowBudgetSettingOutputSerializer(serializers.Serializer):
    budget_usd = money()
    budget_mode = serializers.ChoiceField(choices=BudgetMode.choices)


class WorkflowDetailOutputSerializer(WorkflowOutputSerializer):
    versions = WorkflowVersionOutputSerializer(many=True)
    definition = serializers.SerializerMethodField()
    source = serializers.SerializerMethodField()
    budget_setting = serializers.SerializerMethodField(
        help_text="The operator's budget for every version (the limit source 'workflow_setting'); null when none is set."
    )

    class Meta(WorkflowOutputSerializer.Meta):
        fields = [*WorkflowOutputSerializer.Meta.fields, "versions", "definition", "source", "budget_setting"]

    @extend_schema_field(WorkflowBudgetSettingOutputSerializer(allow_null=True))
    def get_budget_setting(self, workflow: Workflow) -> dict | None:
        if workflow.budget_usd is None:
            return None
        return WorkflowBudgetSettingOutputSerializer(workflow).data

    def get_definition(self, workflow: Workflow) -> dict:
        return self._latest(workflow).definition

    def get_source(self, workflow: Workflow) -> str:
        return self._latest(workflow).source

    @staticmethod
    def _latest(workflow: Workflow) -> WorkflowVersion:
        return workflow.versions.order_by("-version").first()


class RunCreateInputSerializer(StrictInputSerializer):
    workflow = serializers.CharField(help_text="A workflow id or name.", max_length=Workflow._meta.get_field("name").max_length)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION)
    inputs = serializers.DictField(required=False, default=dict)
    limits = serializers.DictField(required=False, default=dict)


class RunResumeInputSerializer(StrictInputSerializer):
    # The limit values themselves are checked by the service, with the same rules as everywhere else.
    budget_usd = serializers.JSONField(required=False)
    budget_mode = serializers.JSONField(required=False)
    max_iterations = serializers.JSONField(required=False)
    timeout_seconds = serializers.JSONField(required=False)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    workflow_version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION)

    def limit_overrides(self) -> dict:
        return {field: self.validated_data[field] for field in LIMIT_FIELDS if field in self.validated_data}


class RunAnswerInputSerializer(StrictInputSerializer):
    """A human gate's `choice` (and `text`), a questions step's `answers` (or `abort`), or an agent's
    dialog's `text` (or `decline`): which the waiting step takes, and what they may be, is the step's
    to say."""

    choice = serializers.CharField(required=False, max_length=200)
    text = serializers.CharField(required=False, max_length=10_000, trim_whitespace=False)
    answers = serializers.DictField(
        child=serializers.CharField(max_length=10_000, allow_blank=True, trim_whitespace=False), required=False
    )
    abort = serializers.BooleanField(required=False)
    decline = serializers.BooleanField(required=False)

    def validate_answers(self, answers: dict) -> dict:
        if len(answers) > MAX_QUESTIONS:
            raise serializers.ValidationError(f"at most {MAX_QUESTIONS} answers")
        return answers


class RunCancelInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class LimitsOutputSerializer(serializers.Serializer):
    budget_usd = money(allow_null=True)
    budget_mode = serializers.CharField()
    max_iterations = serializers.IntegerField()
    timeout_seconds = serializers.IntegerField(allow_null=True)


class RunOutputSerializer(serializers.ModelSerializer):
    workflow = serializers.IntegerField(source="workflow_version.workflow_id")
    workflow_name = serializers.CharField(source="workflow_version.workflow.name")
    workflow_version = serializers.IntegerField(source="workflow_version.version")
    limits = LimitsOutputSerializer(source="*")
    spent_usd = money()
    estimated_usd = money()
    reserved_usd = money()
    elapsed_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "workflow_name",
            "workflow_version",
            "status",
            "inputs",
            "limits",
            "limit_sources",
            "spent_usd",
            "estimated_usd",
            "reserved_usd",
            "unpriced_steps",
            "current_agent",
            "iterations",
            "elapsed_seconds",
            "output",
            "error",
            "created_at",
            "updated_at",
            "finished_at",
        ]

    def get_elapsed_seconds(self, run: Run) -> float:
        return round(run.elapsed().total_seconds(), 3)


class StepOutputSerializer(serializers.ModelSerializer):
    estimate_usd = money(allow_null=True)
    reserved_usd = money()

    class Meta:
        model = Step
        fields = [
            "id",
            "sequence",
            "agent",
            "group",
            "branch_index",
            "branch_key",
            "role",
            "iteration",
            "status",
            "attempts",
            "redeliveries",
            "model",
            "estimate_usd",
            "reserved_usd",
            "output",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class EventOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["id", "type", "payload", "actor", "request_id", "created_at"]


class LedgerEntryOutputSerializer(serializers.ModelSerializer):
    run = serializers.IntegerField(source="run_id")
    step = serializers.IntegerField(source="step.sequence")
    group = serializers.CharField(source="step.group")
    branch_key = serializers.CharField(source="step.branch_key")
    input_per_mtok = money(allow_null=True)
    output_per_mtok = money(allow_null=True)
    cached_input_per_mtok = money(allow_null=True)
    cache_write_per_mtok = money(allow_null=True)
    cost_usd = money(allow_null=True)
    corrects = serializers.IntegerField(source="corrects_id", allow_null=True)

    class Meta:
        model = LedgerEntry
        fields = [
            "id",
            "run",
            "step",
            "attempt",
            "kind",
            "agent",
            "group",
            "branch_key",
            "provider",
            "model",
            "tool_server",
            "tool",
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "input_per_mtok",
            "output_per_mtok",
            "cached_input_per_mtok",
            "cache_write_per_mtok",
            "price_source",
            "cost_usd",
            "basis",
            "corrects",
            "actor",
            "reason",
            "request_id",
            "created_at",
            "booked_at",
        ]


class LedgerAdjustmentInputSerializer(StrictInputSerializer):
    # The amount and the reason are checked by the service, as the admin's Adjust page posts them.
    amount_usd = serializers.JSONField()
    reason = serializers.JSONField()


class CheckpointOutputSerializer(serializers.ModelSerializer):
    next_step = serializers.IntegerField(source="next_step.sequence", allow_null=True, default=None)
    spent_usd = money()
    elapsed_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Checkpoint
        fields = ["id", "reason", "next_step", "next_agent", "outputs", "iterations", "spent_usd", "elapsed_seconds", "created_at"]

    def get_elapsed_seconds(self, checkpoint: Checkpoint) -> float:
        return round(checkpoint.active_time.total_seconds(), 3)


class ProviderRoutesInputSerializer(StrictInputSerializer):
    routes = serializers.DictField(child=serializers.CharField(max_length=50))
    default_models = serializers.DictField(child=serializers.CharField(max_length=200), required=False)


class ProviderRoutesOutputSerializer(serializers.Serializer):
    """A ProviderRoutes: the team's own routes, the operator's defaults, and what uploads and new runs use."""

    routes = serializers.DictField(source="own")
    default_models = serializers.DictField(source="models")
    defaults = serializers.DictField()
    effective = serializers.DictField()


class PeriodForecastOutputSerializer(serializers.Serializer):
    """The schema of a team's forecast (reports.forecast.BudgetForecast), as TeamOutputSerializer renders it."""

    daily_rate_usd = money(help_text="Mean daily spend over the last 7 full UTC days.")
    projected_usd = money(help_text="Spend at the period's end, at that rate.")
    runs_out_on = serializers.DateField(
        allow_null=True,
        help_text="The first UTC day whose end finds spend above the budget (in the past when already over); "
        "null: not before the period ends.",
    )
    over_budget = serializers.BooleanField()
    method = serializers.CharField()


class PeriodBudgetOutputSerializer(serializers.Serializer):
    """The schema of a team's period budget, as TeamOutputSerializer renders it."""

    budget_usd = money(allow_null=True)
    period = serializers.ChoiceField(choices=Period.choices)
    mode = serializers.ChoiceField(choices=BudgetMode.choices)
    spent_usd = money()
    reserved_usd = money()
    starts_at = serializers.DateTimeField()
    resets_at = serializers.DateTimeField()
    forecast = PeriodForecastOutputSerializer(allow_null=True, help_text="Null without a period budget.")


class TeamOutputSerializer(serializers.Serializer):
    """A TeamBudgetStatus: the team's defaults, its period budget and what has been spent."""

    name = serializers.CharField(source="team.name")
    defaults = serializers.SerializerMethodField()
    period_budget = serializers.SerializerMethodField()
    alert_thresholds = serializers.ListField(source="team.alert_thresholds")
    # Empty when the team has none, which no "uri" format allows.
    webhook_url = serializers.CharField(source="team.webhook_url", help_text="Where alerts are posted; empty for none.")
    lifetime_spent_usd = money()

    def get_defaults(self, status) -> dict:
        team = status.team
        return {
            "budget_usd": usd(team.default_budget_usd),
            "budget_mode": team.default_budget_mode or None,
            "max_iterations": team.default_max_iterations,
            "timeout_seconds": team.default_timeout_seconds,
        }

    @extend_schema_field(PeriodBudgetOutputSerializer)
    def get_period_budget(self, status) -> dict:
        team = status.team
        return {
            "budget_usd": usd(team.period_budget_usd),
            "period": team.period,
            "mode": team.period_mode,
            "spent_usd": usd(status.period_spent_usd),
            "reserved_usd": usd(status.reserved_usd),
            "starts_at": status.window.start,
            "resets_at": status.window.end,
            "forecast": self._forecast(self.context.get("forecast")),
        }

    @staticmethod
    def _forecast(forecast: BudgetForecast | None) -> dict | None:
        if forecast is None:
            return None
        return {
            "daily_rate_usd": usd(forecast.daily_rate_usd),
            "projected_usd": usd(forecast.projected_usd),
            "runs_out_on": forecast.runs_out_on.isoformat() if forecast.runs_out_on else None,
            "over_budget": forecast.over_budget,
            "method": forecast.method,
        }
