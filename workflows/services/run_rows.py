"""The rows a step transaction starts from, read in one statement: a run, its team, one of its steps,
and the outputs of its latest checkpoint.

Every step is read this way twice, once without locks to render ahead (renders.py) and once locking
the run and the step (`locks.lock_rows`), so it is one statement written once, in SQL that only
moves data. The columns are the models' own; the values go through the same converters as the
ORM's, so the instances are what a queryset would have made. The run's workflow version comes with
its id and creation time only: `selectors.definition_of` keeps parsed definitions by those.

The latest outputs are current under the lock: a statement that waited for the run's lock, because a
transaction holding it changed the run (every writer of a checkpoint does, and holds the lock until
it commits), reads them again after the wait (`dialect.row_unchanged`).
"""

from functools import cache

from django.db import connection
from django.db.models import Model

from workflows import dialect
from workflows.models import Checkpoint, Run, Step, Team, WorkflowVersion


def read(
    *,
    run_id: int | None = None,
    step_id: int | None = None,
    team_id: int | None = None,
    team: Team | None = None,
    lock: bool = False,
) -> tuple[Run, Step | None] | None:
    """The run (by `run_id`, else the one `step_id` belongs to) with its team (`team` when the caller
    has it already) and `latest_outputs`, and the step if `step_id` is given; None when a row named
    is gone or the step is not the run's. With `lock`, the run and step rows are locked, in that
    order, at the strength `locks.py` argues for."""
    statement, columns = _statement(
        by_run=run_id is not None,
        with_step=step_id is not None,
        with_team=team is None,
        by_team=team_id is not None,
        lock=lock,
    )
    params = [value for value in (step_id, run_id, team_id) if value is not None]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
        if row is None:
            return None
        if lock and not row[-1]:
            # The run changed while this statement waited for its lock: the row locked is the newest,
            # but the checkpoint subquery read the snapshot from before the wait. Read them again.
            cursor.execute(_latest_outputs("%s"), [row[0]])
            latest = cursor.fetchone()
            row = (*row[:-2], latest[0] if latest else None, True)
    values = iter(_converted(columns, row[:-1] if lock else row))
    run = _instance(Run, values)
    run.workflow_version = _instance(WorkflowVersion, values, fields=("id", "created_at"))
    run.team = team if team is not None else _instance(Team, values)
    step = None
    if step_id is not None:
        step = _instance(Step, values)
        step.run = run
    run.latest_outputs = next(values)
    return run, step


@cache
def _statement(*, by_run: bool, with_step: bool, with_team: bool, by_team: bool, lock: bool) -> tuple[str, list]:
    """The statement for one shape of read, and the fields its columns are, in order. A locking one
    ends with whether the run's row it locked is the one its snapshot saw (`dialect.row_unchanged`)."""
    fields = [*_fields(Run), *_fields(WorkflowVersion, ("id", "created_at"))]
    tables = [
        f"{_table(Run)} r",
        f"JOIN {_table(WorkflowVersion)} v ON v.{_column(WorkflowVersion, 'id')} = r.{_column(Run, 'workflow_version')}",
    ]
    if with_team:
        fields += _fields(Team)
        tables.append(f"JOIN {_table(Team)} t ON t.{_column(Team, 'id')} = r.{_column(Run, 'team')}")
    if with_step:
        fields += _fields(Step)
        tables.append(f"JOIN {_table(Step)} s ON s.{_column(Step, 'run')} = r.{_column(Run, 'id')}")
    checkpoint = f"({_latest_outputs('r.' + _column(Run, 'id'))})"
    conditions = []
    if with_step:
        conditions.append(f"s.{_column(Step, 'id')} = %s")
    if by_run:
        conditions.append(f"r.{_column(Run, 'id')} = %s")
    if by_team:
        conditions.append(f"r.{_column(Run, 'team')} = %s")
    aliases = {Run: "r", WorkflowVersion: "v", Team: "t", Step: "s"}
    selected = ", ".join(f"{aliases[field.model]}.{connection.ops.quote_name(field.column)}" for field in fields)
    statement = f"SELECT {selected}, {checkpoint}"
    if lock:
        statement += f", {dialect.row_unchanged(_table(Run), 'r')}"
    statement += f" FROM {' '.join(tables)} WHERE {' AND '.join(conditions)}"
    if lock:
        statement += dialect.row_lock_clause("r", "s") if with_step else dialect.row_lock_clause("r")
    return statement, [*fields, Checkpoint._meta.get_field("outputs")]


@cache
def _latest_outputs(run: str) -> str:
    """The outputs of the latest checkpoint of the run whose id `run` is (SQL: a column or %s)."""
    outputs = connection.ops.quote_name(Checkpoint._meta.get_field("outputs").column)
    return (
        f"SELECT c.{outputs} FROM {_table(Checkpoint)} c WHERE c.{_column(Checkpoint, 'run')} = {run}"
        f" ORDER BY c.{_column(Checkpoint, 'id')} DESC LIMIT 1"
    )


def _fields(model: type[Model], names: tuple[str, ...] | None = None) -> list:
    return [field for field in model._meta.concrete_fields if names is None or field.name in names]


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type[Model], name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def _converted(fields: list, row: tuple) -> list:
    """The row's values as the ORM would hand them to a model: through the backend's converters and
    the fields' own (JSON decoded, decimals and times parsed on SQLite)."""
    values = []
    for field, value in zip(fields, row, strict=True):
        expression, converters = _converters(field)
        for converter in converters:
            value = converter(value, expression, connection)
        values.append(value)
    return values


@cache
def _converters(field) -> tuple:
    expression = field.get_col(field.model._meta.db_table)
    return expression, (*connection.ops.get_db_converters(expression), *field.get_db_converters(connection))


def _instance(model: type[Model], values, fields: tuple[str, ...] | None = None) -> Model:
    names = [field.attname for field in _fields(model, fields)]
    return model.from_db(connection.alias, names, [next(values) for _ in names])
