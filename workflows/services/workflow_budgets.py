"""An operator's budget for a workflow: set (the cost profile's recommendation, in one click) or cleared.

It is stored on the Workflow, not written into a version: versions are the team's immutable uploads,
and the team keeps uploading its own YAML. Runs started after the change resolve it as the
`workflow_setting` limit source (definition/limits.py); runs already started keep their limits.
"""

from decimal import Decimal

from django.db import transaction

from workflows.definition import check_limits
from workflows.errors import ValidationFailed, problems_as_details
from workflows.models import BudgetMode, EventType, Workflow
from workflows.selectors import definition_of
from workflows.services.events import team_event_record, usd
from workflows.services.runs import check_models_priced
from workflows.services.teams import budget_changes_record

MAX_REASON_CHARS = 2000
SETTING_FIELDS = ("budget_usd", "budget_mode")


def check_workflow_budget(*, workflow: Workflow, budget_usd, budget_mode: str, reason: str) -> tuple[Decimal, str, str]:
    """The cleaned budget, mode and reason, or ValidationFailed naming each problem. An enforce budget
    needs every model of the latest version priced, as a run under it would (UnpricedModel)."""
    cleaned, problems = check_limits({"budget_usd": budget_usd, "budget_mode": budget_mode}, path="")
    details = problems_as_details(problems)
    for field in SETTING_FIELDS:
        if field not in cleaned and not any(detail["path"] == field for detail in details):
            details.append({"path": field, "message": "is required"})
    details += _reason_problems(reason)
    if details:
        raise ValidationFailed("The workflow's budget is invalid.", details=details)
    latest = workflow.versions.order_by("-version").first()
    if latest is not None:
        check_models_priced(
            definition=definition_of(latest),
            team=workflow.team,
            budget_usd=cleaned["budget_usd"],
            budget_mode=cleaned["budget_mode"],
        )
    return cleaned["budget_usd"], cleaned["budget_mode"], reason.strip()


def workflow_budget_apply(
    *, workflow: Workflow, budget_usd: Decimal | str, budget_mode: str = BudgetMode.ENFORCE, actor: str, reason: str
) -> Workflow:
    """Set the budget every later run of `workflow` gets unless its request sets its own."""
    budget, mode, why = check_workflow_budget(workflow=workflow, budget_usd=budget_usd, budget_mode=budget_mode, reason=reason)
    return _workflow_budget_set(workflow=workflow, new={"budget_usd": budget, "budget_mode": mode}, actor=actor, reason=why)


def workflow_budget_clear(*, workflow: Workflow, actor: str, reason: str) -> Workflow:
    """Remove the operator's budget: later runs resolve their budget from the definition, the team or the system."""
    if problems := _reason_problems(reason):
        raise ValidationFailed("The workflow's budget is invalid.", details=problems)
    return _workflow_budget_set(workflow=workflow, new={"budget_usd": None, "budget_mode": None}, actor=actor, reason=reason.strip())


def _reason_problems(reason: str) -> list[dict]:
    if not isinstance(reason, str) or not reason.strip():
        return [{"path": "reason", "message": "is required: say why the budget changes"}]
    if len(reason) > MAX_REASON_CHARS:
        return [{"path": "reason", "message": f"must be at most {MAX_REASON_CHARS} characters"}]
    return []


def _workflow_budget_set(*, workflow: Workflow, new: dict, actor: str, reason: str) -> Workflow:
    with transaction.atomic():
        locked = Workflow.objects.select_for_update(of=("self",)).select_related("team").get(pk=workflow.pk)
        old = locked.limit_setting()
        if old == {"budget_usd": new["budget_usd"], "budget_mode": new["budget_mode"]}:
            # An audit trail of changes only: applying the budget in force, or clearing none, is not one.
            raise ValidationFailed(
                "Nothing to change: the workflow's budget is already "
                + (f"{usd(old['budget_usd'])}, {old['budget_mode']}." if old["budget_usd"] is not None else "unset.")
            )
        locked.budget_usd = new["budget_usd"]
        locked.budget_mode = new["budget_mode"] or ""
        locked.save(update_fields=list(SETTING_FIELDS))
        budget_changes_record(team=locked.team, workflow=locked, old=old, new=new, actor=actor, reason=reason)
        team_event_record(
            team=locked.team,
            type=EventType.WORKFLOW_BUDGET_SET,
            actor=actor,
            payload={
                "workflow": {"id": locked.pk, "name": locked.name},
                "old": _shown(old),
                "new": _shown(new),
                "reason": reason,
            },
        )
    return locked


def _shown(setting: dict) -> dict:
    return {"budget_usd": usd(setting["budget_usd"]), "budget_mode": setting["budget_mode"]}
