"""An operator in a real browser, with a real worker executing the runs: resumes from the admin a run its
enforce budget stopped, and answers a run waiting at a human gate, by filling in and clicking the run page."""

import pytest
from django.urls import reverse

from tests.admin.chromium import CHROMIUM
from tests.admin.test_runs import GATED
from tests.conftest import wait_for_run
from tests.factories import workflow_version
from tests.integration.conftest import celery_worker  # noqa: F401  (a fixture)
from workflows.models import Event, EventType, RunStatus
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)"),
]

SETTLED = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "waiting_for_input", "cancelled")

RUN_PAGE = """(() => ({
  status: document.querySelector("#run-status")?.dataset.status,
  spent: document.querySelector("#run-spent")?.textContent,
  messages: [...document.querySelectorAll(".messagelist li")].map(item => item.textContent.trim()),
  resumable: !!document.querySelector("#run-resume"),
  answerable: !!document.querySelector("#run-answer"),
  enforceMark: !!document.querySelector("svg.run-spend-chart .mark-enforce"),
  budgetLines: document.querySelectorAll("svg.run-spend-chart .budget-line").length,
  marksInside: [...document.querySelectorAll("svg.run-spend-chart .mark-label")].every(label => {
    const chart = label.ownerSVGElement.getBoundingClientRect(), box = label.getBoundingClientRect();
    return box.left >= chart.left && box.right <= chart.right;
  }),
  events: [...document.querySelectorAll("#run-events tr[data-event-id]")].map(row => row.cells[1].title),
}))()"""


def run_page(live_server, run) -> str:
    return f"{live_server.url}{reverse('admin:workflows_run_change', args=[run.pk])}"


def test_an_operator_raises_a_stopped_run_s_budget_and_the_worker_completes_it(
    transactional_db, admin_browser, live_server, team, celery_worker  # noqa: F811
):
    browser, page = admin_browser
    version = workflow_version(team=team)
    run = run_start(
        team=team, workflow=version.workflow_id, inputs={"topic": "tea"}, limits={"budget_usd": "0.50", "budget_mode": "enforce"}
    )
    assert wait_for_run(run.pk, *SETTLED).status == RunStatus.BUDGET_EXCEEDED

    browser.navigate(page, run_page(live_server, run))
    before = browser.evaluate(page, RUN_PAGE)
    assert (before["status"], before["spent"], before["resumable"]) == ("budget_exceeded", "$0.30", True), before
    assert before["enforceMark"] and before["budgetLines"] == 1
    assert before["marksInside"]  # the stop is at the chart's right edge; its label reads leftwards from it

    browser.fill(page, "#run-resume [name=budget_usd]", "1.00")
    browser.fill(page, "#run-resume [name=reason]", "Finance approved a top-up")
    browser.click(page, "#run-resume [type=submit]")

    after = browser.evaluate(page, RUN_PAGE)
    assert after["messages"][0].startswith("Resumed: the run is queued and goes on from writer"), after
    assert wait_for_run(run.pk, *SETTLED).status == RunStatus.COMPLETED
    browser.navigate(page, run_page(live_server, run))
    done = browser.evaluate(page, RUN_PAGE)
    assert (done["status"], done["spent"], done["resumable"]) == ("completed", "$0.90", False), done
    assert done["budgetLines"] == 2  # $0.50, then the $1.00 the operator gave
    assert "run_resumed" in done["events"] and done["events"][-1] == "run_completed", done["events"]
    resumed = Event.objects.get(run=run, type=EventType.RUN_RESUMED)
    assert (resumed.actor, resumed.payload["reason"]) == ("user:operator", "Finance approved a top-up")


def test_an_operator_answers_a_waiting_run_and_the_worker_takes_it_on(
    transactional_db, admin_browser, live_server, team, celery_worker  # noqa: F811
):
    browser, page = admin_browser
    workflow_create(team=team, definition=GATED)
    run = run_start(team=team, workflow="gated")
    assert wait_for_run(run.pk, *SETTLED).status == RunStatus.WAITING_FOR_INPUT

    browser.navigate(page, run_page(live_server, run))
    before = browser.evaluate(page, RUN_PAGE)
    assert (before["status"], before["answerable"], before["resumable"]) == ("waiting_for_input", True, False), before

    browser.evaluate(page, 'document.querySelector("#run-answer input[name=choice][value=ship]").click()')
    browser.click(page, "#run-answer [type=submit]")

    assert browser.evaluate(page, RUN_PAGE)["messages"] == ["Answered; the run goes on."]
    assert wait_for_run(run.pk, *SETTLED).status == RunStatus.COMPLETED
    browser.navigate(page, run_page(live_server, run))
    done = browser.evaluate(page, RUN_PAGE)
    assert (done["status"], done["answerable"]) == ("completed", False), done
    assert "input_received" in done["events"] and done["events"][-1] == "run_completed", done["events"]
    assert Event.objects.get(run=run, type=EventType.INPUT_RECEIVED).actor == "user:operator"
