"""The one statement a step transaction starts from (workflows/services/run_rows.py), and the parsed
definitions it relies on (selectors.definition_of): what they hand the engine must be what the ORM
would have read, on either backend."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from tests.factories import THREE_STEP_YAML, TeamFactory, workflow_version
from workflows.models import Checkpoint, Run, Step, Team, WorkflowVersion
from workflows.selectors import _DefinitionCache, definition_of
from workflows.services import run_rows
from workflows.services.runs import run_start

pytestmark = pytest.mark.django_db

TOPIC = {"topic": "budgets"}


def a_run_with_every_kind_of_value(team: Team) -> tuple[Run, Step]:
    """A run and its step whose columns hold each kind of value: decimals, JSON, times, durations, nulls."""
    run = run_start(
        team=team,
        workflow=workflow_version(team=team).workflow_id,
        inputs=TOPIC,
        limits={"budget_usd": "1.25", "budget_mode": "enforce", "timeout_seconds": 600},
    )
    Run.objects.filter(pk=run.pk).update(
        spent_usd=Decimal("0.123456"),
        reserved_usd=Decimal("0.000001"),
        held_usd=Decimal("0.5"),
        active_time=timedelta(seconds=90, microseconds=5),
        active_since=timezone.now(),
        output={"nested": [1, 2.5, None, "é"]},
    )
    step = run.steps.get()
    Step.objects.filter(pk=step.pk).update(
        status="running", estimate_usd=Decimal("0.01"), output={"n": 1}, error={"type": "X"}, started_at=timezone.now()
    )
    Checkpoint.objects.create(
        run=run, reason="step_completed", outputs={"researcher": {"findings": "ok"}}, iterations=1,
        spent_usd=Decimal("0.123456"), active_time=timedelta(seconds=1),
    )  # fmt: skip
    return run, step


def field_values(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


@pytest.mark.parametrize("lock", [False, True])
def test_the_rows_are_what_the_orm_reads(team, lock):
    run, step = a_run_with_every_kind_of_value(team)

    with transaction.atomic():
        read_run, read_step = run_rows.read(step_id=step.pk, lock=lock)

    assert field_values(read_run) == field_values(Run.objects.get(pk=run.pk))
    assert field_values(read_step) == field_values(Step.objects.get(pk=step.pk))
    assert field_values(read_run.team) == field_values(Team.objects.get(pk=team.pk))
    assert read_run.latest_outputs == {"researcher": {"findings": "ok"}}
    assert read_step.run is read_run
    assert isinstance(read_run.spent_usd, Decimal) and read_run.spent_usd == Decimal("0.123456")


def test_a_run_without_a_checkpoint_has_no_latest_outputs(team):
    run, step = a_run_with_every_kind_of_value(team)
    Checkpoint.objects.filter(run=run).delete()

    assert run_rows.read(run_id=run.pk)[0].latest_outputs is None


def test_a_step_of_another_run_or_team_is_not_read(team):
    run, step = a_run_with_every_kind_of_value(team)
    other_run, other_step = a_run_with_every_kind_of_value(TeamFactory(name="other"))

    assert run_rows.read(run_id=run.pk, step_id=other_step.pk) is None
    assert run_rows.read(run_id=run.pk, team_id=other_run.team_id) is None
    assert run_rows.read(step_id=step.pk + other_step.pk + 1000) is None
    assert run_rows.read(run_id=run.pk, step_id=step.pk, team_id=team.pk)[1].pk == step.pk


def test_the_definition_of_a_version_read_with_its_run_costs_no_query(team, django_assert_num_queries):
    run, step = a_run_with_every_kind_of_value(team)
    expected = definition_of(WorkflowVersion.objects.get(pk=run.workflow_version_id))

    read_run, _ = run_rows.read(step_id=step.pk)
    with django_assert_num_queries(0):
        assert definition_of(read_run.workflow_version) == expected


def test_a_version_that_takes_an_earlier_ones_id_is_not_answered_with_its_definition(team):
    """SQLite gives a rolled-back row's id to the next insert: the cache tells versions apart by their
    creation time as well."""
    first = workflow_version(team=team)
    second = workflow_version(team=team, source=THREE_STEP_YAML.replace("research-pipeline", "second-pipeline"))
    cache = _DefinitionCache(max_bytes=10**6)
    assert cache.get(first).name == "research-pipeline"

    second.pk = first.pk  # as if it had been given the id of a version rolled back since
    assert cache.get(second).name == "second-pipeline"


def test_the_cache_holds_no_more_than_its_bound(team, django_assert_num_queries):
    versions = [workflow_version(team=team, source=THREE_STEP_YAML.replace("research-pipeline", f"p{n}")) for n in range(3)]
    one = len(json.dumps(versions[0].definition))
    cache = _DefinitionCache(max_bytes=2 * one + one // 2)  # room for two of these

    def unread(version: WorkflowVersion) -> WorkflowVersion:
        """The version as the step transaction has it: its definition not read yet."""
        return WorkflowVersion.objects.defer("definition").get(pk=version.pk)

    for version in versions:
        cache.get(unread(version))

    assert cache.size <= cache.max_bytes
    assert len(cache.entries) == 2
    recent, least_recent = unread(versions[2]), unread(versions[0])
    with django_assert_num_queries(0):
        assert cache.get(recent).name == "p2"  # the most recent stays
    with django_assert_num_queries(1):
        assert cache.get(least_recent).name == "p0"  # the least recent was let go, and is read again
