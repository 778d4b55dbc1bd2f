"""The common case of `step_begin` and `step_settle` in one database call each, on PostgreSQL.

A plain step (not a group's branch) that its run and team have room for under every limit is
admitted by `workflows_step_admit`, and settled, when its routes lead to another plain step or to
the end, by `workflows_step_settle` (migration 0008). Each is one statement, so the team's lock is
held for one round trip instead of a dozen. Every other case the functions decline, having written
nothing, and `workflows/services/steps.py` takes its general path: a stop, an audit report, a
failure, a takeover, a group, an alert threshold, a cancelled run.

The functions repeat two conditions of the Python rules, to know when to decline: "every budget
has room for the estimate and no limit is reached" (`gate_decide` admits without a report) and "no
alert threshold is newly reached" (`alerts_after_spend` records nothing). Python still routes,
renders and prices, and builds the rows they insert from the models.
`tests/services/test_step_functions.py` holds both paths to the same rows, and the conditions to
the Python ones. A database error in a call (say, functions older than this code) is logged and the
step goes the general way: the call ran alone in its transaction, so it wrote nothing.
"""

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import Model

from workflows.definition import WorkflowDefinition

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepBasis:
    """What a pending step is rendered from, read without locks; `checkpoint_id` lets the functions
    check under their locks that it still holds."""

    step_id: int
    run_id: int
    team_id: int
    agent: str
    sequence: int
    pending_plain_step: bool
    may_override_prices: bool
    inputs: dict
    definition: WorkflowDefinition
    checkpoint_id: int | None
    outputs: dict


def step_functions_enabled() -> bool:
    return connection.vendor == "postgresql" and settings.STEP_FUNCTIONS


def step_basis(step_id: int) -> StepBasis | None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT s.run_id, r.team_id, s.agent, s.sequence, s.status = 'pending' AND s."group" = '',
                   t.may_override_prices, r.inputs, v.definition, c.id, c.outputs
            FROM workflows_step AS s
            JOIN workflows_run AS r ON r.id = s.run_id
            JOIN workflows_team AS t ON t.id = r.team_id
            JOIN workflows_workflowversion AS v ON v.id = r.workflow_version_id
            LEFT JOIN LATERAL (
                SELECT id, outputs FROM workflows_checkpoint WHERE run_id = r.id ORDER BY id DESC LIMIT 1
            ) AS c ON true
            WHERE s.id = %s
            """,
            [step_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    # Django has psycopg hand jsonb over as text, for its JSONField to decode.
    run_id, team_id, agent, sequence, pending_plain_step, may_override_prices, inputs, definition, checkpoint_id, outputs = row
    return StepBasis(
        step_id=step_id,
        run_id=run_id,
        team_id=team_id,
        agent=agent,
        sequence=sequence,
        pending_plain_step=pending_plain_step,
        may_override_prices=may_override_prices,
        inputs=json.loads(inputs),
        definition=WorkflowDefinition.from_dict(json.loads(definition)),
        checkpoint_id=checkpoint_id,
        outputs=json.loads(outputs) if outputs else {},
    )


def admit(*, basis: StepBasis, estimate: Decimal, model: str, worker: str, at: datetime) -> int | None:
    """The attempt's number, or None when the general path must decide."""
    row = _call(
        "admit",
        "SELECT workflows_step_admit(%s, %s, %s, %s, %s, %s)",
        [basis.step_id, estimate, model, worker, basis.checkpoint_id, at],
    )
    return row[0] if row else None


def settle(
    *,
    basis: StepBasis,
    attempt: int,
    at: datetime,
    output,
    ledger_entry: Model,
    events: list[Model],
    next_step: Model | None,
    checkpoint: Model,
    run_output=None,
) -> tuple[bool, int | None]:
    """Whether the attempt was settled, and the id of the next step it created. `next_step` None ends
    the run with `run_output`. The function fills in what only the locked rows know: the spend after
    the charge (in each event too), the counters, the next step's iteration, and the time."""
    row = _call(
        "settle",
        "SELECT settled, next_step_id FROM workflows_step_settle("
        "%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s::jsonb, %s::jsonb, %s::jsonb)",
        [
            basis.step_id,
            attempt,
            basis.checkpoint_id,
            at,
            _json(output),
            _json(_row(ledger_entry)),
            _json([_row(event) for event in events]),
            _json(_row(next_step) if next_step else None),
            _json(_row(checkpoint)),
            _json(run_output),
        ],
    )
    return tuple(row) if row else (False, None)


def _call(what: str, sql: str, params: list) -> tuple | None:
    """The call's one row; None when it failed, which left nothing written: it ran alone in its
    transaction. Inside a caller's transaction the error goes up, as that transaction is aborted;
    a lost connection goes up too, for the task to retry."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        if connection.in_atomic_block:
            raise
        logger.exception("The step %s function failed; the step takes the general path.", what)
        return None


def _json(value) -> str | None:
    return None if value is None else json.dumps(value)


def _row(instance: Model) -> dict:
    """The instance's columns as JSON, its defaults applied, for `jsonb_populate_record`."""
    return {
        field.column: _json_value(field.value_from_object(instance))
        for field in instance._meta.concrete_fields
        if not field.primary_key
    }


def _json_value(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.total_seconds()} seconds"
    return value
