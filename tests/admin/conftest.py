from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db.models import F

from tests.factories import LOOP_YAML, TeamFactory, workflow_version
from workflows.models import LedgerEntry, Run, RunStatus, Step, StepStatus


def utc_days_ago(days: int) -> datetime:
    today = datetime.now(UTC).date()
    return datetime.combine(today - timedelta(days=days), time(12), tzinfo=UTC)


def ledger_entry(
    *, run: Run, agent: str, model: str, cost: str | None, at: datetime, tokens=(1000, 200)
) -> LedgerEntry:
    """A settled step of `run` at `at`, with the run's counters kept equal to its ledger."""
    step = Step.objects.create(
        run=run, sequence=run.steps.count() + 1, agent=agent, iteration=1, status=StepStatus.SUCCEEDED, model=model
    )
    # created_at is auto_now_add and the ledger refuses updates: the only way to date an entry is the clock.
    with mock.patch("django.utils.timezone.now", return_value=at):
        entry = LedgerEntry.objects.create(
            team=run.team,
            run=run,
            step=step,
            attempt=1,
            agent=agent,
            provider="fake",
            model=model,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            price_source="table" if cost is not None else "",
            cost_usd=Decimal(cost) if cost is not None else None,
        )
    Run.objects.filter(pk=run.pk).update(
        spent_usd=F("spent_usd") + (entry.cost_usd or 0), unpriced_steps=F("unpriced_steps") + int(cost is None)
    )
    return entry


@pytest.fixture
def spend_ledger(db) -> list[LedgerEntry]:
    """Two teams, three workflows, four runs, priced and unpriced steps over 40 days."""
    acme, globex = TeamFactory(name="acme"), TeamFactory(name="globex")
    research, loop = workflow_version(team=acme), workflow_version(team=acme, source=LOOP_YAML)
    globex_research = workflow_version(team=globex)
    run_1, run_2, run_3, old_run = (
        Run.objects.create(team=version.workflow.team, workflow_version=version, status=RunStatus.COMPLETED)
        for version in (research, loop, globex_research, research)
    )
    return [
        ledger_entry(run=run_1, agent="researcher", model="sim-model", cost="0.30", at=utc_days_ago(2)),
        ledger_entry(run=run_1, agent="writer", model="sim-model", cost="0.30", at=utc_days_ago(2)),
        ledger_entry(run=run_1, agent="reviewer", model="big-model", cost="1.25", at=utc_days_ago(1)),
        ledger_entry(run=run_2, agent="thinker", model="sim-model", cost="0.000150", at=utc_days_ago(1)),
        ledger_entry(run=run_2, agent="thinker", model="mystery-model", cost=None, at=utc_days_ago(0)),
        ledger_entry(run=run_3, agent="researcher", model="sim-model", cost="2.50", at=utc_days_ago(0)),
        ledger_entry(run=old_run, agent="researcher", model="sim-model", cost="7.00", at=utc_days_ago(40)),
    ]


@pytest.fixture
def admin_browser(live_server, django_user_model, tmp_path):
    """Headless Chromium logged in to the live server's admin as a superuser: (browser, page session).

    Skips, with the reason, where Chromium is not installed."""
    from django.conf import settings
    from django.test import Client

    from tests.admin.chromium import CHROMIUM, Chromium

    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("operator", password="unused"))
    cookie = {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value}
    with Chromium(profile=tmp_path / "profile", log=tmp_path / "chromium.log") as browser:
        browser.command("Storage.setCookies", cookies=[{**cookie, "url": live_server.url}])
        yield browser, browser.open_page(width=1400, height=1000)
