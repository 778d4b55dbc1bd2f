"""Management commands: the last line of output is the value."""

import json
import stat
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from workflows.models import Price, Team
from workflows.services.teams import api_key_authenticate

pytestmark = pytest.mark.django_db


def last_line(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def test_create_team_with_budget_defaults():
    name = last_line(
        "create_team", "research", "--budget-usd", "2.50", "--budget-mode", "enforce",
        "--max-iterations", "20", "--timeout-seconds", "600",
    )
    team = Team.objects.get(name=name)
    assert team.limit_defaults() == {
        "budget_usd": Decimal("2.500000"),
        "budget_mode": "enforce",
        "max_iterations": 20,
        "timeout_seconds": 600,
    }


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budget-usd", "0"], "budget_usd"),
        (["--budget-usd", "NaN"], "budget_usd"),
        (["--max-iterations", "501"], "max_iterations"),
        (["--timeout-seconds", "0"], "timeout_seconds"),
    ],
)
def test_create_team_refuses_bad_defaults(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_team", "research", *args)
    assert not Team.objects.exists()


def test_create_team_refuses_a_name_that_is_not_a_slug():
    with pytest.raises(CommandError, match="name"):
        call_command("create_team", "bad name")


def test_create_team_refuses_a_duplicate_name():
    call_command("create_team", "research", stdout=StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_team", "research")


def test_create_api_key_prints_a_key_that_authenticates_as_the_team():
    call_command("create_team", "research", stdout=StringIO())
    raw_key = last_line("create_api_key", "--team", "research")
    assert api_key_authenticate(raw_key=raw_key).team.name == "research"
    with pytest.raises(CommandError, match="No team named 'nobody'"):
        call_command("create_api_key", "--team", "nobody")


def test_loadprices_loads_the_shipped_table_and_is_idempotent():
    count = int(last_line("loadprices"))
    assert count > 10
    assert int(last_line("loadprices")) == count
    assert Price.objects.count() == count
    gpt4o = Price.objects.get(model="gpt-4o")
    assert (gpt4o.input_per_mtok, gpt4o.output_per_mtok) == (Decimal("2.500000"), Decimal("10.000000"))


def test_loadprices_reads_a_file_and_refuses_a_bad_one(tmp_path):
    good = tmp_path / "prices.json"
    good.write_text(json.dumps({"prices": [
        {"model": "house-model", "input_per_mtok": "1.5", "output_per_mtok": 3, "valid_from": "2026-01-01"}
    ]}))
    assert last_line("loadprices", str(good)) == "1"
    assert Price.objects.get(model="house-model").input_per_mtok == Decimal("1.5")

    too_precise = tmp_path / "precise.json"
    too_precise.write_text(json.dumps({"prices": [{"model": "x", "input_per_mtok": "0.0000001", "output_per_mtok": 1, "valid_from": "2026-01-01"}]}))
    with pytest.raises(CommandError, match="6 decimal places"):
        call_command("loadprices", str(too_precise))

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prices": [{"model": "x", "input_per_mtok": "-1", "output_per_mtok": 1, "valid_from": "2026-01-01"}]}))
    with pytest.raises(CommandError, match="negative"):
        call_command("loadprices", str(bad))
    with pytest.raises(CommandError, match="Cannot load prices"):
        call_command("loadprices", str(tmp_path / "missing.json"))


def test_bootstrap_demo_creates_the_team_and_reuses_its_key(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    first = StringIO()
    call_command("bootstrap_demo", stdout=first)
    key = first.getvalue().strip().splitlines()[-1]
    assert "Admin login (shown once): admin / " in first.getvalue()

    second = StringIO()
    call_command("bootstrap_demo", stdout=second)
    assert second.getvalue().strip().splitlines()[-1] == key
    assert "Admin login" not in second.getvalue()
    assert api_key_authenticate(raw_key=key).team.name == "demo"
    assert stat.S_IMODE((tmp_path / "demo-api-key").stat().st_mode) == 0o600


def test_bootstrap_demo_names_the_key_file_relative_to_the_current_directory_when_under_it(
    settings, tmp_path, monkeypatch
):
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    monkeypatch.chdir(tmp_path)
    under = StringIO()
    call_command("bootstrap_demo", stdout=under)
    assert "Its API key (also in var/demo-api-key):" in under.getvalue()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outside = StringIO()
    call_command("bootstrap_demo", stdout=outside)
    assert f"Its API key (also in {tmp_path / 'var' / 'demo-api-key'}):" in outside.getvalue()


def test_loadprices_loads_cache_rates_output_limits_and_aliases_and_old_files_still_load(tmp_path):
    from workflows.models import ModelAlias, Price

    new = tmp_path / "new.json"
    new.write_text(
        '{"prices": [{"model": "c", "input_per_mtok": "3", "output_per_mtok": "15", "cached_input_per_mtok": "0.3",'
        ' "cache_write_per_mtok": "3.75", "max_output_tokens": 64000, "valid_from": "2025-01-01"}],'
        ' "aliases": {"c-20250101": "c"}}'
    )
    assert last_line("loadprices", str(new)) == "1"
    row = Price.objects.get(model="c")
    assert (row.cache_write_per_mtok, row.max_output_tokens) == (Decimal("3.75"), 64000)
    assert ModelAlias.objects.get(alias="c-20250101").model == "c"

    old = tmp_path / "old.json"
    old.write_text('{"prices": [{"model": "o", "input_per_mtok": "1", "output_per_mtok": "2", "valid_from": "2024-01-01"}]}')
    assert last_line("loadprices", str(old)) == "1"
    assert Price.objects.get(model="o").cache_write_per_mtok is None

    looping = tmp_path / "looping.json"
    looping.write_text('{"prices": [], "aliases": {"x": "x"}}')
    with pytest.raises(CommandError, match="alias cannot name itself"):
        call_command("loadprices", str(looping))
