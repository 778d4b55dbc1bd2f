"""The spend ledger: what an attempt's call cost, its append-only entry, and the run's spend.

Callers hold the run and step locks (`locks.lock_rows`). An attempt is charged at most once: the
unique (step, attempt) constraint on charges refuses a second. An attempt whose outcome is unknown
is charged its reservation as an estimate (`ledger_charge_estimate`); its usage, should it arrive
later, corrects it (`ledger_correction`), once.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Sum

from workflows.definition import USAGE_FIELDS, cost_usd, is_count, usage_label, usage_problem, worst_case_counts
from workflows import metrics
from workflows.definition import TOOL_CALL_ROLE
from workflows.models import CHARGE_BASES, EventType, LedgerBasis, LedgerEntry, LedgerKind, Run, Step
from workflows.providers import Usage
from workflows.selectors import AWAITING_USAGE
from workflows.services.budgets import add
from workflows.services.escrow import held_after
from workflows.services.events import event_record, usd

if TYPE_CHECKING:
    from workflows.services.steps.kinds import PreparedStep

logger = logging.getLogger(__name__)

# What a tool call's ledger entry names as its provider: the protocol it was made through.
TOOL_PROVIDER = "mcp"


def ledger_charge(
    *, team_id: int, run: Run, step: Step, attempt: int, prepared: PreparedStep, usage: Usage, **run_deltas
) -> tuple[Usage, Decimal | None, LedgerEntry]:
    """The attempt's cost added to the run's spend, with `run_deltas` added to the run in the same
    UPDATE: the usage billed, its cost (None when unpriced), and its ledger entry, not yet written.

    The caller writes the entry (`ledger_record`) as the last write of its transaction: the trigger
    that keeps the daily sums locks the team's row of the day until commit, so every other
    settlement of the team waits for whatever the transaction does after the insert.

    Usage no call can have had (a count negative, not a whole number, or above
    PROVIDER_USAGE_MAX_TOKENS) is billed at the worst case the gate estimated, with a
    `usage_rejected` event that says why: the call returned, so it is charged, never dropped.
    """
    billed, cost = usage, None
    problem = unbillable_usage(usage)
    if problem is None:
        cost = attempt_cost(prepared=prepared, usage=usage)
    else:
        counts = worst_case_counts(
            prices=prepared.prices,
            input_tokens=prepared.estimated_input_tokens,
            max_output_tokens=prepared.request.max_tokens,
        )
        billed, cost = Usage(**counts, request_id=usage.request_id), prepared.estimate_usd
        logger.warning("Step %s attempt %s reported unbillable usage (%s).", step.pk, attempt, problem)
        event_record(
            run=run,
            type=EventType.USAGE_REJECTED,
            payload={
                **attempt_named(step, attempt),
                "model": prepared.model,
                "reason": problem,
                "reported": {field: _reported_count(getattr(usage, field)) for field in USAGE_FIELDS},
                "billed": counts,
                "cost_usd": usd(cost),
            },
        )
    entry = LedgerEntry(
        **_entry_fields(team_id=team_id, step=step, attempt=attempt, prepared=prepared, usage=billed, cost=cost)
    )
    # The spend leaves the run's slice of its team's budget (escrow.py) in the same UPDATE.
    held = held_after(run, cost=cost, released=-run_deltas.get("reserved_usd", Decimal("0")))
    add(
        run,
        assign={"held_usd": held},
        spent_usd=cost or Decimal("0"),
        unpriced_steps=0 if cost is not None else 1,
        **run_deltas,
    )
    return billed, cost, entry


def ledger_charge_tool(
    *, team_id: int, run: Run, step: Step, attempt: int, prepared: PreparedStep, **run_deltas
) -> tuple[Decimal, LedgerEntry]:
    """A priced tool call's price added to the run's spend, with `run_deltas` in the same UPDATE, as
    `ledger_charge` adds a model call's: its cost, and its ledger entry (kind tool), not yet written.
    The price is the one the gate reserved (`prepared.estimate_usd`): a price changed since the call
    was admitted applies from the next call on."""
    cost = prepared.estimate_usd
    entry = LedgerEntry(
        team_id=team_id,
        run_id=step.run_id,
        step_id=step.pk,
        attempt=attempt,
        kind=LedgerKind.TOOL,
        agent=usage_label(step.agent, step.role),
        provider=TOOL_PROVIDER,
        model="",
        tool_server=prepared.data["server_key"],
        tool=prepared.data["tool"],
        input_tokens=0,
        output_tokens=0,
        price_source=prepared.price_source,
        cost_usd=cost,
    )
    held = held_after(run, cost=cost, released=-run_deltas.get("reserved_usd", Decimal("0")))
    add(run, assign={"held_usd": held}, spent_usd=cost, **run_deltas)
    return cost, entry


def ledger_charge_estimate(
    *, team_id: int, run: Run, step: Step, attempt: int, prepared: PreparedStep | None, reason: str
) -> LedgerEntry | None:
    """Charge an attempt whose outcome is unknown its reservation, the worst case the gate priced:
    its call may have been made and billed, and no usage says for what. The reservation is released
    in the same UPDATE of the run that adds the spend. The entry, marked estimated, has no tokens;
    None when the attempt reserved nothing (a free or unpriced step). `prepared` names the provider
    and the tool, when the step could be prepared again. The caller writes the entry (`ledger_record`)
    and records the event (`estimate_event_record`)."""
    cost = step.reserved_usd
    if not cost:
        return None
    add(run, assign={"held_usd": held_after(run, cost=cost, released=cost)}, spent_usd=cost, reserved_usd=-cost)
    step.reserved_usd = Decimal("0")
    step.save(update_fields=["reserved_usd"])
    tool = prepared.data if prepared is not None and step.role == TOOL_CALL_ROLE else {}
    return LedgerEntry(
        team_id=team_id,
        run_id=step.run_id,
        step_id=step.pk,
        attempt=attempt,
        kind=LedgerKind.TOOL if step.role == TOOL_CALL_ROLE else LedgerKind.MODEL,
        agent=usage_label(step.agent, step.role),
        provider=prepared.provider if prepared is not None else "",
        model=step.model,
        tool_server=tool.get("server_key", ""),
        tool=tool.get("tool", ""),
        input_tokens=0,
        output_tokens=0,
        price_source=prepared.price_source if prepared is not None else "",
        cost_usd=cost,
        basis=LedgerBasis.ESTIMATED,
        reason=reason[:500],
    )


def estimate_event_record(*, run: Run, step: Step, entry: LedgerEntry) -> None:
    event_record(
        run=run,
        type=EventType.USAGE_ESTIMATED,
        payload={**attempt_named(step, entry.attempt), "cost_usd": usd(entry.cost_usd), "reason": entry.reason},
    )


def ledger_estimate_open(*, step: Step, attempt: int) -> LedgerEntry | None:
    """The attempt's estimated entry while its usage has not arrived (no correction yet), or None."""
    return LedgerEntry.objects.filter(AWAITING_USAGE, step=step, attempt=attempt).first()


def ledger_correction(*, run: Run, estimated: LedgerEntry, charged: LedgerEntry | None) -> LedgerEntry:
    """Turn what the late usage of an attempt charged as an estimate was just charged as (`charged`,
    by its kind's `settle`, which added its cost to the run; None: it charged nothing) into the
    estimate's correction: the difference that brings the attempt, operators' adjustments of the
    estimate included, to what it cost, with the tokens; and what the attempt stood at taken back
    from the run's spend in the same transaction. Usage that cannot be priced leaves the estimate
    standing. The caller writes the entry last (`ledger_record`)."""
    if charged is None:
        charged = LedgerEntry(
            **{name: getattr(estimated, name) for name in _CHARGE_NAMES},
            input_tokens=0,
            output_tokens=0,
            cost_usd=Decimal("0"),
        )
    if charged.cost_usd is not None:
        adjusted = estimated.corrections.filter(basis=LedgerBasis.ADJUSTMENT).aggregate(total=Sum("cost_usd"))["total"]
        standing = estimated.cost_usd + (adjusted or Decimal("0"))
        add(run, spent_usd=-standing)
        charged.cost_usd -= standing
    charged.basis = LedgerBasis.CORRECTION
    charged.corrects = estimated
    return charged


def correction_event_record(*, run: Run, step: Step, entry: LedgerEntry) -> None:
    event_record(
        run=run,
        type=EventType.USAGE_CORRECTED,
        payload={
            **attempt_named(step, entry.attempt),
            "estimate_usd": usd(entry.corrects.cost_usd),
            "correction_usd": usd(entry.cost_usd),
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
        },
    )


# What a correction keeps of the entry it corrects when the late attempt charged nothing.
_CHARGE_NAMES = ("team_id", "run_id", "step_id", "attempt", "kind", "agent", "provider", "model", "tool_server", "tool")


def ledger_record(entry: LedgerEntry) -> None:
    """Write an entry `ledger_charge` made. A second entry for one attempt breaks the unique (step,
    attempt) constraint, and the transaction that charged it with it."""
    entry.save(force_insert=True)
    metrics.spend_recorded(team_id=entry.team_id, cost_usd=entry.cost_usd)


def ledger_has_entry(*, step: Step, attempt: int) -> bool:
    """Whether the attempt has been charged, as reported or as an estimate."""
    return LedgerEntry.objects.filter(step=step, attempt=attempt, basis__in=CHARGE_BASES).exists()


def cost_ahead(*, prepared: PreparedStep, usage: Usage) -> Decimal:
    """What `ledger_charge` will add to the run's spend for an agent's `usage`: for rendering ahead of
    the settlement (renders.py). Usage it cannot bill is billed at the estimate; no price adds nothing."""
    cost = attempt_cost(prepared=prepared, usage=usage) if unbillable_usage(usage) is None else prepared.estimate_usd
    return cost or Decimal("0")


def unbillable_usage(usage: Usage) -> str | None:
    """Why the reported usage cannot be billed as it stands, or None."""
    counts = {field: getattr(usage, field) for field in USAGE_FIELDS}
    return usage_problem(counts, max_tokens=settings.PROVIDER_USAGE_MAX_TOKENS)


def attempt_cost(*, prepared: PreparedStep, usage: Usage) -> Decimal | None:
    prices = prepared.prices
    if prices is None:
        return None
    return cost_usd(
        prices=prices,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )


def branch_of(step: Step) -> dict:
    """How events name a group's branch: nothing for a plain step."""
    return {"group": step.group, "branch": step.branch_key} if step.group else {}


def attempt_named(step: Step, attempt: int) -> dict:
    """How events name an attempt at a step: by its agent, and its role when it is its validator's
    call or its re-run."""
    role = {"role": step.role} if step.role else {}
    return {"agent": step.agent, "step": step.sequence, **branch_of(step), **role, "attempt": attempt}


def storable(text: str) -> str:
    """Text from a provider as the database can store it: NULs dropped, lone surrogates replaced."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _reported_count(value: object) -> int | str:
    """A reported count as the event can hold it: a whole number as is, anything else as a short repr."""
    if is_count(value) and abs(value) < 2**53:
        return value
    try:
        return repr(value)[:40]
    except ValueError:  # an int beyond Python's str-conversion digit limit
        return f"<{type(value).__name__}>"


def _entry_fields(
    *, team_id: int, step: Step, attempt: int, prepared: PreparedStep, usage: Usage, cost: Decimal | None
) -> dict:
    prices = prepared.prices
    return dict(
        team_id=team_id,
        run_id=step.run_id,
        step_id=step.pk,
        attempt=attempt,
        agent=usage_label(step.agent, step.role),
        provider=prepared.provider,
        model=prepared.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        input_per_mtok=prices.input_per_mtok if prices else None,
        output_per_mtok=prices.output_per_mtok if prices else None,
        cached_input_per_mtok=(
            _rate_used(prices.cached_input_per_mtok, prices.cache_read_rate, usage.cached_input_tokens) if prices else None
        ),
        cache_write_per_mtok=(
            _rate_used(prices.cache_write_per_mtok, prices.cache_write_rate, usage.cache_write_tokens) if prices else None
        ),
        price_source=prepared.price_source,
        cost_usd=cost,
        request_id=storable(usage.request_id)[:200] if isinstance(usage.request_id, str) else "",
    )


def _rate_used(listed: Decimal | None, fallback: Decimal, tokens: int) -> Decimal | None:
    """The rate a kind of cached input was billed at: its listed rate, or the fallback when it had tokens."""
    if listed is not None:
        return listed
    return fallback if tokens else None
