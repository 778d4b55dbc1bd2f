from decimal import Decimal

from workflows.definition import MONEY_PLACES
from workflows.models import Event, Run

SYSTEM_ACTOR = "system"


def usd(value: Decimal | None) -> str | None:
    """Money as it appears in events and errors: a decimal string with 6 places."""
    return None if value is None else format(value.quantize(MONEY_PLACES), "f")


def event_record(*, run: Run, type: str, payload: dict | None = None, actor: str = SYSTEM_ACTOR) -> Event:
    return Event.objects.create(team_id=run.team_id, run=run, type=type, payload=payload or {}, actor=actor)
