from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from workflows.definition.bounds import MAX_ITERATIONS, MAX_TOOL_PRICE_USD
from workflows.definition.providers import ROUTABLE
from workflows.definition.dialog import DIALOG_ROLE, REPLY_ROLE
from workflows.definition.tools import MAX_MCP_TEXT_CHARS, MODEL_CALL_ROLE, SERVER_NAME, TOOL_CALL_ROLE
from workflows.definition.validation import RERUN_ROLE, VALIDATOR_ROLE
from workflows.webhook_signing import new_webhook_secret


def money_field(**kwargs) -> models.DecimalField:
    """USD amounts: 6 decimal places, never float."""
    return models.DecimalField(max_digits=18, decimal_places=6, **kwargs)


class BudgetMode(models.TextChoices):
    AUDIT = "audit"
    ENFORCE = "enforce"


class Period(models.TextChoices):
    DAY = "day"
    WEEK = "week", "week (from Monday)"
    MONTH = "month"


def default_alert_thresholds() -> list[int]:
    return [50, 80, 100]


class Team(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    default_budget_usd = money_field(
        null=True, blank=True, validators=[MinValueValidator(Decimal("0.000001"))]
    )
    default_budget_mode = models.CharField(max_length=10, choices=BudgetMode, blank=True)
    default_max_iterations = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(MAX_ITERATIONS)]
    )
    default_timeout_seconds = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )

    # A budget for all of the team's runs together, per calendar period (UTC).
    period_budget_usd = money_field(null=True, blank=True, validators=[MinValueValidator(Decimal("0.000001"))])
    period = models.CharField(max_length=10, choices=Period, default=Period.MONTH)
    period_mode = models.CharField(max_length=10, choices=BudgetMode, default=BudgetMode.AUDIT)
    # Team-scope audit reporting: the period it re-arms in, and the projection it re-arms past.
    period_audit_start = models.DateTimeField(null=True, blank=True)
    period_audit_rearm_at_usd = money_field(null=True, blank=True)

    alert_thresholds = models.JSONField(
        default=default_alert_thresholds, help_text="Percentages of a budget that raise an alert when spend crosses them."
    )
    webhook_url = models.URLField(blank=True, help_text="Alerts are POSTed here as JSON, signed with the secret.")
    webhook_secret = models.CharField(max_length=128, default=new_webhook_secret)
    # After a rotation the replaced secret signs too, beside the new one, until it expires.
    webhook_previous_secret = models.CharField(max_length=128, blank=True)
    webhook_previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Staff users who are not superusers see and change, in the admin, only the teams they are listed on.
    staff = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="staff_teams",
        limit_choices_to={"is_staff": True},
        help_text="Staff users who may see and change this team's rows in the admin. Superusers see every team.",
    )
    may_override_prices = models.BooleanField(
        default=False,
        help_text="Let the team's workflows price models below the price table (negotiated rates). "
        "Their ledger entries show price_source 'workflow'.",
    )
    may_run_scripts = models.BooleanField(
        default=False,
        help_text="Let the team's workflows run conductor's script steps: a command on a step worker, with no "
        "shell, in a scratch directory, under a timeout and resource limits (docs/workflows.md#script).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(default_budget_usd__isnull=True) | Q(default_budget_usd__gt=0),
                name="team_default_budget_positive",
            ),
            models.CheckConstraint(
                condition=Q(period_budget_usd__isnull=True) | Q(period_budget_usd__gt=0),
                name="team_period_budget_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def enforces_period_budget(self) -> bool:
        return self.period_budget_usd is not None and self.period_mode == BudgetMode.ENFORCE

    def limit_defaults(self) -> dict:
        """The team's layer of limit resolution; unset fields are None."""
        return {
            "budget_usd": self.default_budget_usd,
            "budget_mode": self.default_budget_mode or None,
            "max_iterations": self.default_max_iterations,
            "timeout_seconds": self.default_timeout_seconds,
        }


class ApiKey(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True, help_text="The key's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key; the key itself is never stored.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.team})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Workflow(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=200)
    # An operator's budget for every version of the workflow, set in the admin (services/workflow_budgets.py):
    # versions are the team's immutable uploads, so the operator's setting lives beside them and outlasts
    # the next upload. It ranks below the run request's limits and above the definition's.
    budget_usd = money_field(null=True, blank=True)
    budget_mode = models.CharField(max_length=10, choices=BudgetMode, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="workflow_unique_name_per_team"),
            models.CheckConstraint(
                condition=(Q(budget_usd__isnull=True) & Q(budget_mode=""))
                | (Q(budget_usd__gt=0) & ~Q(budget_mode="")),
                name="workflow_budget_set_whole",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team}/{self.name}"

    def limit_setting(self) -> dict:
        """The operator's layer of limit resolution; unset fields are None."""
        return {"budget_usd": self.budget_usd, "budget_mode": self.budget_mode or None}


class WorkflowVersion(models.Model):
    """An immutable definition; a run pins one."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    source = models.TextField(help_text="The definition as uploaded.")
    definition = models.JSONField(help_text="The validated, normalised definition.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "version"], name="workflow_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.version}"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    # Stopped at a human gate until a person answers it (services/inputs.py); no worker is held.
    WAITING_FOR_INPUT = "waiting_for_input", "waiting for input"
    BUDGET_EXCEEDED = "budget_exceeded"
    ITERATION_LIMIT = "iteration_limit"
    TIMED_OUT = "timed_out"
    FAILED = "failed"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
RESUMABLE_RUN_STATUSES = (
    RunStatus.BUDGET_EXCEEDED,
    RunStatus.ITERATION_LIMIT,
    RunStatus.TIMED_OUT,
    RunStatus.FAILED,
)
FINAL_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.CANCELLED)


class Run(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="runs")
    workflow_version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=20, choices=RunStatus, default=RunStatus.QUEUED, db_index=True)
    inputs = models.JSONField(default=dict, blank=True)

    budget_usd = money_field(null=True, blank=True)
    budget_mode = models.CharField(max_length=10, choices=BudgetMode, default=BudgetMode.AUDIT)
    max_iterations = models.PositiveIntegerField(default=10)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    limit_sources = models.JSONField(default=dict, blank=True, help_text="Where each effective limit came from.")
    provider_routes = models.JSONField(
        default=dict,
        blank=True,
        help_text="The backend each provider its workflow names reaches, as routed when the run started.",
    )

    spent_usd = money_field(default=Decimal("0"))
    # Estimates of the run's steps in flight.
    reserved_usd = money_field(default=Decimal("0"))
    # Under its team's enforced period budget, the part of that budget the run holds: its reservations
    # and a slice for its next steps, so that most admissions need no lock on the team (services/escrow.py).
    held_usd = money_field(default=Decimal("0"))
    unpriced_steps = models.PositiveIntegerField(default=0)
    # Audit mode re-arms its budget_exceeded event once spend reaches this amount.
    audit_rearm_at_usd = money_field(null=True, blank=True)

    current_agent = models.CharField(max_length=200, blank=True)
    iterations = models.PositiveIntegerField(default=0, help_text="Steps executed.")
    # Timeouts count active time only: time stopped between a stop and a resume is excluded.
    active_time = models.DurationField(default=timedelta)
    active_since = models.DateTimeField(null=True, blank=True)

    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["team", "-id"], name="run_team_newest"),
            # What a team's runs reserve and hold, summed by the gate: only runs holding money.
            models.Index(
                fields=["team"], name="run_team_holding", condition=Q(reserved_usd__gt=0) | Q(held_usd__gt=0)
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(reserved_usd__gte=0), name="run_reserved_not_negative"),
            models.CheckConstraint(condition=Q(held_usd__gte=0), name="run_held_not_negative"),
            models.CheckConstraint(condition=Q(spent_usd__gte=0), name="run_spent_not_negative"),
            models.CheckConstraint(
                condition=Q(budget_usd__isnull=True) | Q(budget_usd__gt=0), name="run_budget_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    def elapsed(self, now=None) -> timedelta:
        """Active run time so far."""
        if self.active_since is None:
            return self.active_time
        return self.active_time + ((now or timezone.now()) - self.active_since)

    @property
    def limits(self) -> dict:
        return {
            "budget_usd": self.budget_usd,
            "budget_mode": self.budget_mode,
            "max_iterations": self.max_iterations,
            "timeout_seconds": self.timeout_seconds,
        }


class StepStatus(models.TextChoices):
    # A for_each branch beyond max_concurrent: it is sent when a branch of its group ends.
    WAITING = "waiting"
    PENDING = "pending"
    RUNNING = "running"
    AWAITING_INPUT = "awaiting_input", "awaiting a person's answer"
    SUCCEEDED = "succeeded"
    BLOCKED = "blocked", "blocked by a stop of the run"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepRole(models.TextChoices):
    """What a step does for its agent beyond the agent's own call (definition/validation.py, dialog.py)."""

    VALIDATOR = VALIDATOR_ROLE, "its agent's validator"
    RERUN = RERUN_ROLE, "its agent again, with the validator's feedback or a person's reply"
    DIALOG = DIALOG_ROLE, "its agent's dialog evaluator"
    REPLY = REPLY_ROLE, "a person's reply to its agent's dialog"
    MODEL_CALL = MODEL_CALL_ROLE, "a model call of its agent's tool loop"
    TOOL_CALL = TOOL_CALL_ROLE, "a tool call of its agent's tool loop"


class Step(models.Model):
    """One execution inside a run (an agent's, its validator's, or a step of another kind); created
    before its task is enqueued."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    sequence = models.PositiveIntegerField()
    agent = models.CharField(max_length=200)
    iteration = models.PositiveIntegerField(
        help_text="How many times this agent, or for a branch its group, has been reached in the run."
    )
    # A branch of a parallel or for_each group: (run, group, iteration) are its group's branches.
    group = models.CharField(max_length=200, blank=True)
    branch_index = models.PositiveIntegerField(null=True, blank=True)
    branch_key = models.CharField(
        max_length=200, blank=True, help_text="The agent's name in a parallel group; the item's index in a for_each."
    )
    # Blank for the step of the agent (or other kind) itself, whose routes the run takes.
    role = models.CharField(max_length=20, choices=StepRole, blank=True)
    validation = models.JSONField(
        null=True,
        blank=True,
        help_text=(
            "What a validator's or dialog's step reads (its agent's prompt and output), a person is asked "
            "(the question), a re-run is told (the issues, or the question and reply), or a step of a tool "
            "loop is (its turn, and a tool call's call)."
        ),
    )
    session = models.JSONField(
        null=True,
        blank=True,
        help_text=(
            "For a call of an agent with a session_key: the key, how many earlier exchanges it replayed, "
            "and, when its output is its execution's answer, the prompt it was sent, which later calls replay."
        ),
    )
    status = models.CharField(max_length=20, choices=StepStatus, default=StepStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    redeliveries = models.PositiveIntegerField(default=0, help_text="Deliveries that found an attempt crashed, since the step was last resumed.")
    provider_retries = models.PositiveIntegerField(
        default=0, help_text="Attempts retried after a transient provider error, since the step was last resumed."
    )
    model = models.CharField(max_length=200, blank=True)
    estimate_usd = money_field(null=True, blank=True)
    reserved_usd = money_field(default=Decimal("0"))
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="Host and process of the latest attempt.")
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When its task was last sent; the sweeper sends it again if it is lost."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "sequence"]
        indexes = [
            # The sweeper looks only at steps in flight, a sliver of all steps.
            models.Index(fields=["status"], condition=Q(status__in=["pending", "running"]), name="step_in_flight"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence"], name="step_unique_sequence"),
            models.CheckConstraint(condition=Q(reserved_usd__gte=0), name="step_reserved_not_negative"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.sequence} ({self.agent})"


class Checkpoint(models.Model):
    """What a run continues from: the next step, the outputs so far, and the counters."""

    # Indexed with the id instead (Meta): every step reads its run's latest checkpoint.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="checkpoints", db_index=False)
    reason = models.CharField(max_length=40)
    next_step = models.ForeignKey(Step, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    next_agent = models.CharField(max_length=200, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    iterations = models.PositiveIntegerField()
    spent_usd = money_field()
    active_time = models.DurationField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "id"]
        get_latest_by = "id"
        indexes = [models.Index(fields=["run", "-id"], name="checkpoint_run_latest")]

    def __str__(self) -> str:
        return f"checkpoint {self.pk} of run {self.run_id} ({self.reason})"


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Ledger entries are append-only.")

    def delete(self):
        raise TypeError("Ledger entries are append-only.")


class LedgerKind(models.TextChoices):
    MODEL = "model", "a model call"
    TOOL = "tool", "a priced tool call"


class LedgerBasis(models.TextChoices):
    """What an entry's cost rests on. An attempt is charged once, as reported or as estimated; an
    estimate is corrected once, when the attempt's usage arrives late; any entry may be adjusted."""

    REPORTED = "reported", "usage the provider reported"
    ESTIMATED = "estimated", "the reservation, as the attempt's outcome is unknown"
    CORRECTION = "correction", "an estimate brought to the usage reported late"
    ADJUSTMENT = "adjustment", "an operator's correction"


# The bases that charge an attempt, and those that correct an earlier entry.
CHARGE_BASES = (LedgerBasis.REPORTED, LedgerBasis.ESTIMATED)
CORRECTING_BASES = (LedgerBasis.CORRECTION, LedgerBasis.ADJUSTMENT)

# The most characters of a priced tool's server: its URL or command, as ToolPrice and the ledger hold it.
TOOL_SERVER_CHARS = 1000
TOOL_NAME_CHARS = 128


class LedgerEntry(models.Model):
    """The cost of one step attempt: a model call's tokens and prices, or a priced tool call's price
    (`kind` tool: its server and tool named, no tokens). Rows are never changed or deleted.

    An attempt whose outcome is unknown is charged its reservation (`basis` estimated, no tokens);
    its usage, should it arrive, is a `correction` entry for the difference, with the tokens. An
    operator's `adjustment` names who made it and why. Both point at the entry they correct, and
    may be negative: an entry's cost with its corrections never is.
    """

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="ledger_entries")
    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="ledger_entries")
    step = models.ForeignKey(Step, on_delete=models.PROTECT, related_name="ledger_entries")
    attempt = models.PositiveIntegerField()
    kind = models.CharField(max_length=10, choices=LedgerKind, default=LedgerKind.MODEL)
    agent = models.CharField(max_length=200)
    provider = models.CharField(max_length=50, help_text="The model's backend; mcp for a tool call.")
    model = models.CharField(max_length=200, help_text="Empty for a tool call.")
    tool_server = models.CharField(
        max_length=TOOL_SERVER_CHARS, blank=True, help_text="A tool call's server, as its price names it (URL or command)."
    )
    tool = models.CharField(max_length=TOOL_NAME_CHARS, blank=True, help_text="A tool call's tool, by its own name.")
    input_tokens = models.PositiveIntegerField()
    output_tokens = models.PositiveIntegerField()
    # The four token counts are disjoint: input_tokens is uncached input only.
    cached_input_tokens = models.PositiveIntegerField(default=0, help_text="Input read from the prompt cache.")
    cache_write_tokens = models.PositiveIntegerField(default=0, help_text="Input written to the prompt cache.")
    # The rates the cost was computed at, fallbacks for unlisted cache rates included.
    input_per_mtok = money_field(null=True, blank=True)
    output_per_mtok = money_field(null=True, blank=True)
    cached_input_per_mtok = money_field(null=True, blank=True)
    cache_write_per_mtok = money_field(null=True, blank=True)
    price_source = models.CharField(
        max_length=20, blank=True, help_text="workflow, table, or empty when unpriced; a tool call's: table, or team."
    )
    cost_usd = money_field(null=True, blank=True, help_text="Empty when the model has no price.")
    request_id = models.CharField(max_length=200, blank=True)
    basis = models.CharField(max_length=12, choices=LedgerBasis, default=LedgerBasis.REPORTED)
    corrects = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="corrections",
        help_text="The entry a correction or an adjustment corrects.",
    )
    actor = models.CharField(max_length=200, blank=True, help_text="Who made an adjustment.")
    reason = models.CharField(max_length=500, blank=True, help_text="Why the entry is estimated, or adjusted.")
    created_at = models.DateTimeField(auto_now_add=True)
    booked_at = models.DateTimeField(
        help_text="When the cost counts, in period budgets and reports: when it was written, or for a "
        "correction or an adjustment, when the entry it corrects was booked. A refund of last month's "
        "call never lends this month budget."
    )

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "ledger entries"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["team", "booked_at"], name="ledger_team_booked"),
            # GET /ledger: a team's entries, newest first, a page at a time however many the team has.
            models.Index(fields=["team", "-id"], name="ledger_team_newest"),
            # The few estimates among millions of entries, for "awaiting usage".
            models.Index(fields=["id"], condition=Q(basis="estimated"), name="ledger_estimates"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["step", "attempt"], condition=Q(basis__in=CHARGE_BASES), name="ledger_one_charge_per_attempt"
            ),
            models.UniqueConstraint(
                fields=["corrects"], condition=Q(basis=LedgerBasis.CORRECTION), name="ledger_one_correction_per_entry"
            ),
            models.CheckConstraint(
                condition=Q(basis__in=CORRECTING_BASES) | Q(cost_usd__isnull=True) | Q(cost_usd__gte=0),
                name="ledger_charge_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(basis__in=CHARGE_BASES, corrects__isnull=True)
                | Q(basis__in=CORRECTING_BASES, corrects__isnull=False),
                name="ledger_correction_names_its_entry",
            ),
        ]

    def __str__(self) -> str:
        # The step as it names itself (its sequence in the run), not its primary key.
        return f"{self.model} {self.cost_usd} (run {self.run_id} step {self.step.sequence})"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("Ledger entries are append-only.")
        if self.booked_at is None:
            self.booked_at = self.corrects.booked_at if self.corrects_id else timezone.now()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Ledger entries are append-only.")


class EventType(models.TextChoices):
    RUN_STARTED = "run_started"
    AGENT_COMPLETED = "agent_completed"
    GROUP_COMPLETED = "group_completed"
    BUDGET_EXCEEDED = "budget_exceeded"
    ITERATION_LIMIT = "iteration_limit"
    TIMED_OUT = "timed_out"
    STEP_REDELIVERED = "step_redelivered"
    PROVIDER_RETRY = "provider_retry"
    RUN_FAILED = "run_failed"
    RUN_COMPLETED = "run_completed"
    RUN_RESUMED = "run_resumed"
    RUN_CANCELLED = "run_cancelled"
    BUDGET_THRESHOLD_CROSSED = "budget_threshold_crossed"
    USAGE_REJECTED = "usage_rejected"
    USAGE_ESTIMATED = "usage_estimated"
    USAGE_CORRECTED = "usage_corrected"
    LEDGER_ADJUSTED = "ledger_adjusted"
    INPUT_REQUESTED = "input_requested"
    INPUT_RECEIVED = "input_received"
    AGENT_VALIDATION_PASSED = "agent_validation_passed"
    AGENT_VALIDATION_FAILED = "agent_validation_failed"
    AGENT_DIALOG_EVALUATED = "agent_dialog_evaluated"
    AGENT_DIALOG_RERUN_FAILED = "agent_dialog_rerun_failed"
    TOOLS_LISTED = "tools_listed"
    MODEL_CALL_COMPLETED = "model_call_completed"
    TOOL_CALL_COMPLETED = "tool_call_completed"
    # An operator set or cleared a workflow's budget (the event has no run: it is the team's).
    WORKFLOW_BUDGET_SET = "workflow_budget_set"


class Event(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="events")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, null=True, blank=True, related_name="events")
    type = models.CharField(max_length=40, choices=EventType, db_index=True)
    payload = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=200, blank=True, help_text="Who caused it: an API key, a user, or the system.")
    request_id = models.CharField(
        max_length=64,
        null=True,
        blank=True,
        help_text="The request id (X-Request-ID) of the API request that caused it, which the tasks it sent carry "
        "on, or of the scheduled task that did; empty when none was known.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["run", "id"], name="event_run_order")]

    def __str__(self) -> str:
        return f"{self.type} (run {self.run_id})"


class PriceSource(models.TextChoices):
    LIST = "list", "List price (genai-prices)"
    LOCAL = "local", "Local override"


class Price(models.Model):
    """A model's USD price per million tokens, in force from `valid_from`.

    A local row (the operator's: the admin, or a prices file's `prices`) in force wins over every
    list row (public list prices, imported from genai-prices) of the same model (services/prices.py).
    """

    model = models.CharField(max_length=200, db_index=True)
    input_per_mtok = money_field(validators=[MinValueValidator(Decimal("0"))])
    output_per_mtok = money_field(validators=[MinValueValidator(Decimal("0"))])
    cached_input_per_mtok = money_field(
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Input read from the prompt cache (OpenAI's cached input, Anthropic's cache read). "
        "Empty: billed at the input rate.",
    )
    cache_write_per_mtok = money_field(
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Input written to the prompt cache (Anthropic's cache creation). Empty: billed at twice the input rate.",
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The most output the model can write: it lowers DEFAULT_MAX_TOKENS, the cap of a step that sets no max_tokens.",
    )
    valid_from = models.DateField()
    source = models.CharField(
        max_length=10,
        choices=PriceSource,
        default=PriceSource.LOCAL,
        help_text="Local overrides win over list prices; loadprices writes list prices, and never over a local row.",
    )

    class Meta:
        ordering = ["model", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "valid_from"], name="price_unique_per_date"),
            models.CheckConstraint(
                condition=Q(input_per_mtok__gte=0) & Q(output_per_mtok__gte=0), name="price_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.valid_from}"


class ToolPrice(models.Model):
    """An operator's price per call of one tool of one MCP server, for every team or for one team,
    whose own price wins. Teams never set these: a workflow names servers and tools, not prices.

    `server` is what workflows reach the server at, normalized (definition/tools.py `tool_server_key`):
    an http or sse server's URL, a stdio server's command."""

    team = models.ForeignKey(
        Team,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="tool_prices",
        help_text="Empty: every team. A team's own price of a tool wins over the price for every team.",
    )
    server = models.CharField(
        max_length=TOOL_SERVER_CHARS,
        help_text="The MCP server's URL (http and sse servers: scheme and host in any case, a default port, a "
        "trailing slash, a query or fragment make no difference) or its command (stdio servers).",
    )
    tool = models.CharField(max_length=TOOL_NAME_CHARS, help_text="The tool's own name, as its server lists it.")
    usd_per_call = money_field(
        validators=[MinValueValidator(Decimal("0.000001")), MaxValueValidator(MAX_TOOL_PRICE_USD)],
        help_text="USD charged for each call made, reserved by the budget gate before the call.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["server", "tool", "team"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "tool"], condition=Q(team__isnull=True), name="tool_price_one_for_every_team"
            ),
            models.UniqueConstraint(
                fields=["team", "server", "tool"], condition=Q(team__isnull=False), name="tool_price_one_per_team"
            ),
            models.CheckConstraint(
                condition=Q(usd_per_call__gt=0) & Q(usd_per_call__lte=MAX_TOOL_PRICE_USD), name="tool_price_bounded"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tool} at {self.server}" + (f" for team {self.team_id}" if self.team_id else "")


class CredentialProvider(models.TextChoices):
    OPENAI = "openai", "OpenAI or an OpenAI-compatible server"
    ANTHROPIC = "anthropic", "Anthropic"


class ProviderCredential(models.Model):
    """A team's API key for a provider, encrypted at rest (workflows/services/credentials.py)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="provider_credentials")
    provider = models.CharField(max_length=50, choices=CredentialProvider)
    api_key_encrypted = models.TextField(help_text="Fernet token of the key; never the key itself.")
    api_key_hint = models.CharField(max_length=20, blank=True, help_text="The key's last characters, to tell keys apart.")
    base_url = models.URLField(blank=True, help_text="Empty: the provider's own endpoint.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "provider"]
        constraints = [models.UniqueConstraint(fields=["team", "provider"], name="credential_one_per_team_provider")]

    def __str__(self) -> str:
        return f"{self.provider} credentials of team {self.team_id}"


class ToolServerTransport(models.TextChoices):
    HTTP = "http", "streamable HTTP"
    SSE = "sse", "SSE"


class TeamToolServer(models.Model):
    """An MCP server an operator registered for a team: a workflow's server of the same name,
    transport and URL is sent its headers, which are encrypted at rest like provider keys
    (workflows/services/tool_servers.py). Only the headers' names and a hint are kept in the clear."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="tool_servers")
    name = models.CharField(
        max_length=48,
        validators=[RegexValidator(f"^{SERVER_NAME.pattern}$", "1 to 48 letters, digits, '-' or '_'.")],
        help_text="As the team's workflows name it under workflow.runtime.mcp_servers.",
    )
    transport = models.CharField(max_length=10, choices=ToolServerTransport, default=ToolServerTransport.HTTP)
    url = models.URLField(max_length=MAX_MCP_TEXT_CHARS, help_text="As the team's workflows write it; its headers go only here.")
    headers_encrypted = models.TextField(help_text="Fernet token of the headers (a JSON object); never the values themselves.")
    header_names = models.JSONField(default=list, blank=True, help_text="The names of the headers, never their values.")
    headers_hint = models.CharField(max_length=1000, blank=True, help_text="Each header's name and its value's last characters.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "name"]
        verbose_name = "registered MCP server"
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="tool_server_one_per_team_name")]

    def __str__(self) -> str:
        return f"MCP server {self.name} of team {self.team_id}"


class ProviderRoute(models.Model):
    """The backend that a conductor provider name (copilot, claude-agent-sdk, hermes) reaches in a
    team's runs; without one, the system default (settings.PROVIDER_ROUTES), and without that, none."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="provider_routes")
    provider = models.CharField(
        max_length=50, choices=[(name, name) for name in ROUTABLE], help_text="A provider name of conductor's."
    )
    backend = models.CharField(
        max_length=50,
        choices=CredentialProvider,
        help_text="The API it reaches in the team's runs. A name the team has not routed takes the "
        "operator's default (PROVIDER_ROUTES), if there is one.",
    )
    default_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="The model its agents take when a workflow names none (conductor's runtimes pick their own).",
    )

    class Meta:
        ordering = ["team", "provider"]
        constraints = [models.UniqueConstraint(fields=["team", "provider"], name="provider_route_one_per_team_provider")]

    def __str__(self) -> str:
        return f"{self.provider} -> {self.backend} for team {self.team_id}"


class ModelAlias(models.Model):
    """Another name of a priced model, e.g. a dated snapshot. Only listed names are priced as another."""

    alias = models.CharField(max_length=200, unique=True)
    model = models.CharField(max_length=200)

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "model aliases"
        constraints = [models.CheckConstraint(condition=~Q(alias=models.F("model")), name="alias_not_itself")]

    def __str__(self) -> str:
        return f"{self.alias} -> {self.model}"


class BudgetScope(models.TextChoices):
    RUN = "run"
    TEAM = "team"


class ThresholdCrossing(models.Model):
    """That spend crossed an alert threshold: recorded once per run, or once per team period."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="threshold_crossings")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, null=True, blank=True, related_name="threshold_crossings")
    scope = models.CharField(max_length=10, choices=BudgetScope)
    threshold_pct = models.PositiveIntegerField()
    period_start = models.DateTimeField(null=True, blank=True)
    budget_usd = money_field()
    spent_usd = money_field()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "threshold_pct"], condition=Q(scope="run"), name="threshold_once_per_run"
            ),
            models.UniqueConstraint(
                fields=["team", "period_start", "threshold_pct"],
                condition=Q(scope="team"),
                name="threshold_once_per_team_period",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.threshold_pct}% ({self.team})"


class BudgetChange(models.Model):
    """The audit trail of budgets: who changed which limit, when, from what to what, and why."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="budget_changes")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, null=True, blank=True, related_name="budget_changes")
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, null=True, blank=True, related_name="budget_changes"
    )
    field = models.CharField(max_length=50)
    old_value = models.CharField(max_length=200, blank=True)
    new_value = models.CharField(max_length=200, blank=True)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "budget audit trail"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.field}: {self.old_value or '-'} -> {self.new_value or '-'}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # no attempt of its current set has ended yet
    DELIVERED = "delivered"
    FAILED = "failed"  # its last attempt failed; tried again at next_attempt_at
    DEAD = "dead"  # no attempts left, or refused: only a resend from the admin sends it again


# The statuses of a delivery that is still to be sent (workflows/services/webhooks.py).
UNDELIVERED_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


class WebhookDelivery(models.Model):
    """One alert to send to a team's webhook; each try is a WebhookAttempt."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="webhook_deliveries")
    url = models.URLField()
    body = models.TextField(help_text="The exact JSON sent and signed.")
    status = models.CharField(max_length=20, choices=DeliveryStatus, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts started, resends' included.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the next attempt is due; while one runs, when it is given up for lost. Empty once "
        "delivered or dead.",
    )
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="When a message to attempt it was last sent.")
    # A resend from the admin gives a dead delivery a fresh set of attempts, counted from here.
    resent_after_attempts = models.PositiveIntegerField(default=0)
    resent_at = models.DateTimeField(null=True, blank=True)
    resent_by = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due",
                condition=Q(status__in=["pending", "failed"]),
            )
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} to {self.url} ({self.status})"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.status_code or self.error}"


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key: the first response to a request, replayed for a retry of it."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=200)
    request_fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the method, path and body.")
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["team", "key"], name="idempotency_key_unique_per_team")]

    def __str__(self) -> str:
        return f"{self.key} ({self.team})"


class TeamDailySpend(models.Model):
    """A team's ledger costs summed per UTC day, kept by the database itself.

    A trigger on the ledger adds each new entry's cost to its (team, day) row, in the statement that
    inserts the entry, so the two can never disagree: this is the ledger grouped by day, stored.
    Team periods start at midnight UTC, so a period's spend is the sum of at most 31 of these rows
    instead of a sum over all of the period's ledger entries (workflows/services/periods.py).
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="daily_spend")
    day = models.DateField(help_text="UTC date of the ledger entries' created_at.")
    spent_usd = money_field(default=Decimal("0"), help_text="Sum of their cost_usd; unpriced entries add nothing.")

    class Meta:
        ordering = ["team", "day"]
        constraints = [models.UniqueConstraint(fields=["team", "day"], name="team_daily_spend_unique_day")]

    def __str__(self) -> str:
        return f"{self.team_id} {self.day}: {self.spent_usd}"


class SweepHeartbeat(models.Model):
    """When the sweeper last ran: one row, written at the end of every sweep, so that every process
    (the web process's readiness check among them) can tell whether beat and a worker are sweeping."""

    swept_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"last sweep at {self.swept_at:%Y-%m-%d %H:%M:%S}"
