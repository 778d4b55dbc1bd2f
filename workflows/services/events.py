from decimal import Decimal

from budgetsvc.request_id import current_request_id

from workflows.definition import MONEY_PLACES
from workflows.models import Event, Run, Team

SYSTEM_ACTOR = "system"


def usd(value: Decimal | None) -> str | None:
    """Money as it appears in events and errors: a decimal string with 6 places."""
    return None if value is None else format(value.quantize(MONEY_PLACES), "f")


def event_record(*, run: Run, type: str, payload: dict | None = None, actor: str = SYSTEM_ACTOR) -> Event:
    """Records the event with the id of the request, or of the task, that caused it."""
    return Event.objects.create(
        team_id=run.team_id, run=run, type=type, payload=payload or {}, actor=actor, request_id=current_request_id()
    )


def team_event_record(*, team: Team, type: str, payload: dict, actor: str) -> Event:
    """An event of the team's own, of no run (an operator's change to a workflow's budget), recorded as
    event_record records a run's."""
    return Event.objects.create(team=team, type=type, payload=payload, actor=actor, request_id=current_request_id())
