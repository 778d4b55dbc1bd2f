"""Operators' corrections of the ledger: an adjustment entry beside the entry it corrects, naming who
made it and why.

A wrong price, a provider's refund, or the usage of an estimated attempt read off the provider's
console: the entry stays as it was (the ledger is append-only), and the difference is added as an
entry of its own, to the run's spend and its team's in the same transaction.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum

from workflows.definition import to_exact_money
from workflows.definition.bounds import MAX_BUDGET_USD
from workflows.errors import ValidationFailed
from workflows.models import CHARGE_BASES, EventType, LedgerBasis, LedgerEntry
from workflows.services.alerts import alerts_after_spend
from workflows.services.budgets import add
from workflows.services.escrow import ZERO, held_after
from workflows.services.events import event_record, usd
from workflows.services.ledger import ledger_record
from workflows.services.locks import lock_rows

REASON_CHARS = 500


@dataclass(frozen=True)
class Adjustment:
    amount_usd: Decimal
    reason: str


def check_adjustment(*, amount_usd: object, reason: object) -> Adjustment:
    """An adjustment as asked for, bounded: a non-zero amount in USD to 6 places, at most the
    largest budget either way, and a reason. ValidationFailed names each problem."""
    problems = []
    amount = None
    try:
        amount = to_exact_money(amount_usd)
    except ValueError as exc:
        problems.append({"path": "amount_usd", "message": str(exc)})
    else:
        if not amount:
            problems.append({"path": "amount_usd", "message": "must not be 0"})
        elif abs(amount) > MAX_BUDGET_USD:
            problems.append({"path": "amount_usd", "message": f"must be at most {MAX_BUDGET_USD} either way"})
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        problems.append({"path": "reason", "message": "say why the entry is adjusted"})
    elif len(text) > REASON_CHARS:
        problems.append({"path": "reason", "message": f"at most {REASON_CHARS} characters"})
    if problems:
        raise ValidationFailed("The adjustment is invalid.", details=problems)
    return Adjustment(amount_usd=amount, reason=text)


def ledger_adjust(*, entry: LedgerEntry, adjustment: Adjustment, actor: str) -> LedgerEntry:
    """Add `adjustment` to the charge `entry`, as `actor`: an entry of its own, a `ledger_adjusted`
    event, and the run's spend. Refused when `entry` is itself a correction (adjust the charge it
    corrects), or when it would take the charge, with its corrections, below zero."""
    if entry.basis not in CHARGE_BASES:
        raise ValidationFailed(
            f"Entry {entry.pk} corrects entry {entry.corrects_id}: adjust that one.",
            details=[{"path": "entry", "message": "must be a charge, not a correction"}],
        )
    with transaction.atomic(durable=True):
        locked = lock_rows(team_id=entry.team_id, run_id=entry.run_id, step_id=entry.step_id, lock_team=False)
        run = locked.run
        # Every entry of the run is written under its lock: the total read here stands until commit.
        corrected = entry.corrections.aggregate(total=Sum("cost_usd"))["total"] or ZERO
        standing = (entry.cost_usd or ZERO) + corrected
        if standing + adjustment.amount_usd < 0:
            raise ValidationFailed(
                f"Entry {entry.pk} stands at ${usd(standing)}: an adjustment of ${usd(adjustment.amount_usd)} "
                "would take it below $0.",
                details=[{"path": "amount_usd", "message": f"must be at least -{usd(standing)}"}],
            )
        # Bounded as a budget is, so that no number of adjustments can overflow a money column.
        if max(standing, run.spent_usd) + adjustment.amount_usd > MAX_BUDGET_USD:
            raise ValidationFailed(
                f"An adjustment of ${usd(adjustment.amount_usd)} would take entry {entry.pk} or its run past "
                f"${MAX_BUDGET_USD}.",
                details=[{"path": "amount_usd", "message": f"must keep the entry and its run within {MAX_BUDGET_USD}"}],
            )
        # A refund gives the run's budget back, never its team's slice (escrow.py): the hold only shrinks.
        held = held_after(run, cost=max(adjustment.amount_usd, ZERO), released=ZERO)
        add(run, assign={"held_usd": held}, spent_usd=adjustment.amount_usd)
        made = LedgerEntry(
            team_id=entry.team_id,
            run_id=entry.run_id,
            step_id=entry.step_id,
            attempt=entry.attempt,
            kind=entry.kind,
            agent=entry.agent,
            provider=entry.provider,
            model=entry.model,
            tool_server=entry.tool_server,
            tool=entry.tool,
            input_tokens=0,
            output_tokens=0,
            cost_usd=adjustment.amount_usd,
            basis=LedgerBasis.ADJUSTMENT,
            corrects=entry,
            actor=actor[:200],
            reason=adjustment.reason,
        )
        event_record(
            run=run,
            type=EventType.LEDGER_ADJUSTED,
            payload={
                "entry": entry.pk,
                "agent": entry.agent,
                "attempt": entry.attempt,
                "amount_usd": usd(adjustment.amount_usd),
                "entry_stands_at_usd": usd(standing + adjustment.amount_usd),
                "spent_usd": usd(run.spent_usd),
                "reason": adjustment.reason,
            },
            actor=actor,
        )
        # Last, as a settlement writes its entry: the daily sum's row stays locked until commit.
        ledger_record(made)
        alerts_after_spend(team=locked.team, run=run)
    return made
