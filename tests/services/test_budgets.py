from decimal import Decimal

import pytest

from tests.factories import LOOP_YAML, TeamFactory, workflow_version
from workflows.models import Run
from workflows.services.budgets import add
from workflows.services.runs import run_start

pytestmark = pytest.mark.django_db


@pytest.fixture
def run() -> Run:
    team = TeamFactory()
    return run_start(team=team, workflow=workflow_version(team=team, source=LOOP_YAML).workflow_id)


def test_reservations_taken_and_released_in_any_order_return_to_exactly_zero(run):
    # On SQLite the database adds these as binary floats: 0.3 + 0.6 - 0.3 - 0.6 is -1.1e-16 there,
    # which the reserved >= 0 check would refuse.
    for delta in ("0.3", "0.6", "-0.3", "-0.6"):
        add(run, reserved_usd=Decimal(delta))

    assert run.reserved_usd == 0
    assert type(run).objects.filter(pk=run.pk, reserved_usd=0).exists()


def test_rounding_keeps_every_micro_dollar(run):
    add(run, reserved_usd=Decimal("0.000001"))
    add(run, reserved_usd=Decimal("0.000002"))

    assert run.reserved_usd == Decimal("0.000003")


def test_the_counters_add_leaves_on_the_instance_are_those_in_the_database(run):
    # add() no longer reads the row back: what it computes in memory must be what was stored.
    for delta in ("0.3", "0.000001", "0.123456", "-0.2"):
        add(run, reserved_usd=Decimal(delta))
        assert run.reserved_usd == type(run).objects.get(pk=run.pk).reserved_usd


def test_add_assigns_other_fields_in_the_same_update_on_the_row_and_the_instance(run):
    add(run, reserved_usd=Decimal("0.25"), assign={"current_agent": "after"})

    stored = type(run).objects.get(pk=run.pk)
    assert (stored.current_agent, stored.reserved_usd) == ("after", Decimal("0.25"))
    assert (run.current_agent, run.reserved_usd) == ("after", Decimal("0.25"))
