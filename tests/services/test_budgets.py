from decimal import Decimal

import pytest

from tests.factories import TeamFactory
from workflows.services.budgets import add

pytestmark = pytest.mark.django_db


def test_reservations_taken_and_released_in_any_order_return_to_exactly_zero():
    # On SQLite the database adds these as binary floats: 0.3 + 0.6 - 0.3 - 0.6 is -1.1e-16 there,
    # which the reserved >= 0 check would refuse.
    team = TeamFactory()
    for delta in ("0.3", "0.6", "-0.3", "-0.6"):
        add(team, reserved_usd=Decimal(delta))

    assert team.reserved_usd == 0
    assert type(team).objects.filter(pk=team.pk, reserved_usd=0).exists()


def test_rounding_keeps_every_micro_dollar():
    team = TeamFactory()
    add(team, reserved_usd=Decimal("0.000001"))
    add(team, reserved_usd=Decimal("0.000002"))

    assert team.reserved_usd == Decimal("0.000003")


def test_the_counters_add_leaves_on_the_instance_are_those_in_the_database():
    # add() no longer reads the row back: what it computes in memory must be what was stored.
    team = TeamFactory()
    for delta in ("0.3", "0.000001", "0.123456", "-0.2"):
        add(team, reserved_usd=Decimal(delta))
        assert team.reserved_usd == type(team).objects.get(pk=team.pk).reserved_usd


def test_add_assigns_other_fields_in_the_same_update_on_the_row_and_the_instance():
    team = TeamFactory(name="before")
    add(team, reserved_usd=Decimal("0.25"), assign={"name": "after"})

    stored = type(team).objects.get(pk=team.pk)
    assert (stored.name, stored.reserved_usd) == ("after", Decimal("0.25"))
    assert (team.name, team.reserved_usd) == ("after", Decimal("0.25"))
