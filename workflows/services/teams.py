import hashlib
import logging
import secrets
from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from workflows.definition import check_limits
from workflows.errors import ValidationFailed, problems_as_details
from workflows.models import ApiKey, BudgetChange, BudgetMode, Period, Run, Team, Workflow
from workflows.services.escrow import slices_revoke
from workflows.services.locks import lock_rows, lock_team_runs, update_unless_locked

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "bsk_"
# Recording every request's time would make each API call a write; once a minute is enough to audit keys.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_api_key(raw_key: str) -> str:
    # Keys are 256 random bits, so a fast unsalted hash is enough; a password hash would slow every request.
    return hashlib.sha256(raw_key.encode()).hexdigest()


# The team fields that are budgets or budget defaults; each change to one is kept in the audit trail.
TEAM_BUDGET_FIELDS = (
    "default_budget_usd",
    "default_budget_mode",
    "default_max_iterations",
    "default_timeout_seconds",
    "period_budget_usd",
    "period",
    "period_mode",
    "alert_thresholds",
    # Not budgets, but they decide what the team's steps cost and do: who allowed them is kept the same way.
    "may_override_prices",
    "may_run_scripts",
)


# Alert thresholds are whole percentages of a budget up to this: 1000% alerts on a tenfold overrun.
MAX_ALERT_THRESHOLD_PCT = 1000


def _shown(value) -> str:
    return "" if value is None else str(value)


def budget_changes_record(
    *, team: Team, old: dict, new: dict, actor: str, reason: str = "", run: Run | None = None,
    workflow: Workflow | None = None,
) -> list[BudgetChange]:
    """One audit-trail row for each field whose value differs between `old` and `new`."""
    return BudgetChange.objects.bulk_create(
        BudgetChange(
            team=team,
            run=run,
            workflow=workflow,
            field=field,
            old_value=_shown(old.get(field)),
            new_value=_shown(new[field]),
            actor=actor,
            reason=reason,
        )
        for field in new
        if _shown(old.get(field)) != _shown(new[field])
    )


def check_team_budgets(*, changes: dict) -> dict:
    """Validate changes to a team's budget fields; the cleaned values, or ValidationFailed naming each problem."""
    unknown = sorted(set(changes) - set(TEAM_BUDGET_FIELDS))
    problems = [{"path": field, "message": "not a budget field"} for field in unknown]
    defaults = {
        field.removeprefix("default_"): changes[field] for field in changes if field.startswith("default_")
    }
    clean_defaults, limit_problems = check_limits(defaults, path="defaults")
    problems += problems_as_details(limit_problems)
    clean = {f"default_{field}": value for field, value in clean_defaults.items()}
    clean.update({field: None for field, value in changes.items() if field.startswith("default_") and value is None})
    if "period_budget_usd" in changes:
        value = changes["period_budget_usd"]
        budget, budget_problems = check_limits({"budget_usd": value}, path="period")
        problems += [{"path": "period_budget_usd", "message": p.message} for p in budget_problems]
        clean["period_budget_usd"] = budget.get("budget_usd")
    for field, choices in (("period", Period.values), ("period_mode", BudgetMode.values)):
        if field in changes:
            if changes[field] not in choices:
                problems.append({"path": field, "message": f"must be one of {', '.join(choices)}"})
            clean[field] = changes[field]
    if "alert_thresholds" in changes:
        thresholds = changes["alert_thresholds"]
        if not isinstance(thresholds, list) or not all(
            isinstance(pct, int) and not isinstance(pct, bool) and 1 <= pct <= MAX_ALERT_THRESHOLD_PCT
            for pct in thresholds
        ):
            problems.append({"path": "alert_thresholds", "message": f"must be a list of whole percentages, 1 to {MAX_ALERT_THRESHOLD_PCT}"})
        else:
            clean["alert_thresholds"] = sorted(set(thresholds))
    for permission in ("may_override_prices", "may_run_scripts"):
        if permission in changes:
            if not isinstance(changes[permission], bool):
                problems.append({"path": permission, "message": "must be true or false"})
            clean[permission] = changes[permission]
    if problems:
        raise ValidationFailed("The team's budgets are invalid.", details=problems)
    return clean


def team_budgets_update(*, team: Team, changes: dict, actor: str, reason: str = "") -> Team:
    """Change a team's budgets and defaults, keeping who changed what, when and why."""
    clean = check_team_budgets(changes=changes)
    with transaction.atomic():
        team = lock_rows(team_id=team.pk).team
        old = {field: getattr(team, field) for field in clean}
        for field, value in clean.items():
            setattr(team, field, value if value is not None or field != "default_budget_mode" else "")
        fields = list(clean)
        if "period_budget_usd" in clean and clean["period_budget_usd"] != old["period_budget_usd"]:
            # Audit reports afresh against the new budget, as a run's do when a resume changes its budget.
            team.period_audit_rearm_at_usd = None
            fields.append("period_audit_rearm_at_usd")
        team.save(update_fields=fields)
        if clean.keys() & {"period_budget_usd", "period", "period_mode"}:
            # Holds drawn under the old budget would admit steps it no longer has room for.
            slices_revoke(team)
            # Steps being admitted under the old settings without the team's lock: the new ones
            # apply once they have committed (steps/execute.py reads them again under the run's lock).
            lock_team_runs(team)
        budget_changes_record(team=team, old=old, new=clean, actor=actor, reason=reason)
    return team


def team_create(
    *,
    name: str,
    budget_usd: Decimal | str | None = None,
    budget_mode: str | None = None,
    max_iterations: int | None = None,
    timeout_seconds: int | None = None,
    period_budget_usd: Decimal | str | None = None,
    period: str | None = None,
    period_mode: str | None = None,
) -> Team:
    given = {
        "default_budget_usd": budget_usd,
        "default_budget_mode": budget_mode,
        "default_max_iterations": max_iterations,
        "default_timeout_seconds": timeout_seconds,
        "period_budget_usd": period_budget_usd,
        "period": period,
        "period_mode": period_mode,
    }
    budgets = check_team_budgets(changes={field: value for field, value in given.items() if value is not None})
    if Team.objects.filter(name=name).exists():
        raise ValidationFailed(f"A team named '{name}' already exists.")
    team = Team(name=name, **budgets)
    try:
        team.full_clean()
    except DjangoValidationError as exc:
        details = [{"path": field, "message": " ".join(messages)} for field, messages in exc.message_dict.items()]
        raise ValidationFailed("The team is invalid.", details=details) from exc
    team.save()
    return team


def api_key_create(*, team: Team, name: str = "") -> tuple[ApiKey, str]:
    """A new key for the team; the raw key is returned once and only its hash is kept."""
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        team=team, name=name, prefix=raw_key[: len(API_KEY_PREFIX) + 8], key_hash=hash_api_key(raw_key)
    )
    return api_key, raw_key


def api_key_rename(*, api_key: ApiKey, name: str) -> ApiKey:
    """Change a key's label, the one thing about a key that changes. Its team never does: a key moved to
    another team would start runs and spend under that team's budgets. Make a key for the other team."""
    with transaction.atomic():
        stored = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if api_key.team_id != stored.team_id:
            raise ValidationFailed(
                "An API key's team cannot be changed; create a key for the other team instead.",
                details=[{"path": "team", "message": "cannot be changed"}],
            )
        stored.name = name
        stored.save(update_fields=["name"])
    return stored


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key`, or None."""
    api_key = (
        ApiKey.objects.select_related("team")
        .filter(key_hash=hash_api_key(raw_key), revoked_at__isnull=True)
        .first()
    )
    if api_key is None:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        _note_use(api_key=api_key, now=now)
    return api_key


def _note_use(*, api_key: ApiKey, now) -> None:
    """Record when the key was used, unless that means waiting for a lock: a request, even a read,
    must never queue behind another team's write for an audit timestamp. A skipped update is made
    by a later request."""
    if not update_unless_locked(ApiKey.objects.filter(pk=api_key.pk), last_used_at=now):
        logger.info("API key %s was used while its row or the database was locked; last_used_at waits.", api_key.prefix)
