"""A run is acted on from its admin page as over the API, in the staff user's name, by staff who may
change its team's runs and no one else: answered when it waits at a human gate, resumed with new limits,
cancelled, one at a time or in bulk. The page tells the run's story with the ledger's own figures."""

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.admin.conftest import ledger_entry, utc_days_ago
from tests.conftest import client_for
from tests.factories import TeamFactory, workflow_version
from tests.providers.conftest import drive
from tests.security.test_admin_scoping import staff_client
from workflows.admin.charts import nice_step
from workflows.admin.run_chart import LEFT, RIGHT
from workflows.models import Checkpoint, Event, EventType, LedgerEntry, Run, RunStatus, Step, StepStatus
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

GATED = """
workflow: {name: gated, entry_point: ask, runtime: {provider: fake, default_model: sim-model}}
agents:
  - name: ask
    type: human_gate
    prompt: "Ship <b>it</b>?"
    options:
      - {label: Ship, value: ship, route: ship}
      - {label: Hold, value: hold, route: $end, prompt_for: why}
  - name: ship
    type: set
    value: shipped
"""


@pytest.fixture
def waiting(team):
    workflow_create(team=team, definition=GATED)
    run = drive(run_start(team=team, workflow="gated"))
    assert run.status == RunStatus.WAITING_FOR_INPUT
    return run


def page(run):
    return reverse("admin:workflows_run_change", args=[run.pk])


def answer_url(run):
    return reverse("admin:workflows_run_answer", args=[run.pk])


def test_the_run_page_shows_the_question_escaped_and_an_answer_goes_on_in_the_users_name(admin_client, admin_user, waiting):
    shown = admin_client.get(page(waiting)).content.decode()
    assert "Ship &lt;b&gt;it&lt;/b&gt;?" in shown and 'value="hold"' in shown

    response = admin_client.post(answer_url(waiting), {"choice": "hold", "text": "Friday freeze"})

    assert response.status_code == 302
    waiting.refresh_from_db()
    assert waiting.status == RunStatus.COMPLETED
    received = Event.objects.get(run=waiting, type=EventType.INPUT_RECEIVED)
    assert received.actor == f"user:{admin_user.username}"
    assert received.payload["additional_input"] == {"why": "Friday freeze"}


def test_a_wrong_answer_is_a_message_and_changes_nothing(admin_client, waiting):
    response = admin_client.post(answer_url(waiting), {"choice": "hold"}, follow=True)

    assert "asks for a text" in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == RunStatus.WAITING_FOR_INPUT


def test_staff_of_another_team_cannot_answer(waiting):
    outsider = staff_client("other-ops", TeamFactory())

    assert outsider.post(answer_url(waiting), {"choice": "ship"}).status_code in (403, 404)
    waiting.refresh_from_db()
    assert waiting.status == RunStatus.WAITING_FOR_INPUT


ASKED = """
workflow: {name: asked, entry_point: ask, runtime: {provider: fake, default_model: sim-model}}
agents:
  - name: ask
    type: questions
    questions:
      - {id: region, text: "Which region?", choices: [eu, us], allow_free_text: false}
      - {id: owner, text: "Who owns it?"}
"""


def test_questions_are_answered_on_the_run_page_too(admin_client, team):
    workflow_create(team=team, definition=ASKED)
    run = drive(run_start(team=team, workflow="asked"))
    assert 'name="answers.region"' in admin_client.get(page(run)).content.decode()

    admin_client.post(answer_url(run), {"answers.region": "eu", "answers.owner": ""})

    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert run.steps.get(agent="ask").output["answers"] == {"region": "eu"}


def test_an_agent_s_dialog_is_shown_with_its_output_and_answered_on_the_run_page(admin_client, team):
    source = (Path(__file__).parent.parent / "conductor" / "refund_desk.yaml").read_text()
    workflow_create(team=team, definition=source)
    run = drive(run_start(team=team, workflow="refund-desk", inputs={"complaint": "Broken <b>blender</b>"}))
    assert run.status == RunStatus.WAITING_FOR_INPUT

    shown = admin_client.get(page(run)).content.decode()
    assert "Should the whole order be refunded?" in shown and "refund the order in full" in shown
    assert 'name="decline"' in shown

    admin_client.post(answer_url(run), {"dialog": "1", "text": "Refund one blender.", "decline": ""})

    run = drive(run)  # the assessor's re-run with the reply, and the writer
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.output["amount_usd"] == 320
    assert Event.objects.get(run=run, type=EventType.INPUT_RECEIVED).payload["text"] == "Refund one blender."


# Resuming, cancelling and the story the page tells, on a run of three $0.30 steps.


@pytest.fixture
def stopped(team):
    """A run its $0.50 enforce budget stopped before its second step, with $0.30 spent."""
    version = workflow_version(team=team)
    run = drive(run_start(team=team, workflow=version.workflow_id, inputs={"topic": "tea"}, limits=ENFORCE_50))
    assert run.status == RunStatus.BUDGET_EXCEEDED and run.spent_usd == Decimal("0.30")
    return run


ENFORCE_50 = {"budget_usd": "0.50", "budget_mode": "enforce"}


def resume_url(run):
    return reverse("admin:workflows_run_resume", args=[run.pk])


def cancel_url(run):
    return reverse("admin:workflows_run_cancel", args=[run.pk])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_a_run_stopped_by_its_budget_is_resumed_with_a_raise_in_the_staff_user_s_name(admin_client, admin_user, stopped):
    shown = admin_client.get(page(stopped)).content.decode()
    assert 'id="run-resume"' in shown and 'id="run-cancel"' in shown

    response = admin_client.post(resume_url(stopped), {"budget_usd": "1.00", "reason": "approved by finance"}, follow=True)

    assert messages_of(response) == ["Resumed: the run is queued and goes on from writer."]
    stopped.refresh_from_db()
    assert stopped.status == RunStatus.QUEUED and stopped.budget_usd == Decimal("1.00")
    assert stopped.budget_mode == "enforce"  # left blank: kept
    resumed = Event.objects.get(run=stopped, type=EventType.RUN_RESUMED)
    assert resumed.actor == f"user:{admin_user.username}"
    assert resumed.payload["by"] == f"user:{admin_user.username}"
    assert resumed.payload["reason"] == "approved by finance"
    assert resumed.payload["new_limits"]["budget_usd"] == "1.000000"

    run = drive(stopped)
    assert run.status == RunStatus.COMPLETED and run.spent_usd == Decimal("0.90")


def test_a_resume_the_api_refuses_with_409_is_refused_with_the_api_s_words_and_changes_nothing(admin_client, team, stopped):
    api = client_for(team)
    refused = api.post(f"/api/v1/runs/{stopped.pk}/resume", {"reason": "same budget"}, format="json")
    assert refused.status_code == 409

    response = admin_client.post(resume_url(stopped), {"reason": "same budget"}, follow=True)

    assert messages_of(response) == [refused.json()["error"]["message"]]
    assert "Resuming would stop again at once" in messages_of(response)[0]
    stopped.refresh_from_db()
    assert stopped.status == RunStatus.BUDGET_EXCEEDED and stopped.budget_usd == Decimal("0.50")
    assert not Event.objects.filter(run=stopped, type=EventType.RUN_RESUMED).exists()


def test_a_resume_needs_a_reason_and_valid_limits(admin_client, stopped):
    no_reason = admin_client.post(resume_url(stopped), {"budget_usd": "1.00"}, follow=True)
    bad_budget = admin_client.post(resume_url(stopped), {"budget_usd": "-1", "reason": "oops"}, follow=True)

    assert messages_of(no_reason) == ["Not resumed: reason: This field is required."]
    assert messages_of(bad_budget)[0].startswith("The limits are invalid. budget_usd: ")
    stopped.refresh_from_db()
    assert stopped.status == RunStatus.BUDGET_EXCEEDED and stopped.budget_usd == Decimal("0.50")


def test_the_actions_are_posts_only(admin_client, stopped):
    assert admin_client.get(resume_url(stopped)).status_code == 405
    assert admin_client.get(cancel_url(stopped)).status_code == 405


def test_cancel_records_the_staff_user_and_the_reason_and_a_finished_run_is_refused_as_the_api_does(
    admin_client, admin_user, team, stopped
):
    response = admin_client.post(cancel_url(stopped), {"reason": "not needed"}, follow=True)

    assert messages_of(response) == ["Cancelled."]
    stopped.refresh_from_db()
    assert stopped.status == RunStatus.CANCELLED
    cancelled = Event.objects.get(run=stopped, type=EventType.RUN_CANCELLED)
    assert (cancelled.actor, cancelled.payload["reason"]) == (f"user:{admin_user.username}", "not needed")

    again = admin_client.post(cancel_url(stopped), {"reason": "twice"}, follow=True)
    api_says = client_for(team).post(f"/api/v1/runs/{stopped.pk}/cancel", {}, format="json")
    assert api_says.status_code == 409
    assert messages_of(again) == [api_says.json()["error"]["message"]] == ["Cannot cancel a run that is in 'cancelled' status."]
    assert Event.objects.filter(run=stopped, type=EventType.RUN_CANCELLED).count() == 1


def test_only_the_actions_possible_in_the_run_s_status_are_offered(admin_client, team, stopped, waiting):
    completed = drive(run_start(team=team, workflow=stopped.workflow_version.workflow_id, inputs={"topic": "tea"}))
    assert completed.status == RunStatus.COMPLETED

    finished = admin_client.get(page(completed)).content.decode()
    asking = admin_client.get(page(waiting)).content.decode()

    assert 'id="run-resume"' not in finished and 'id="run-cancel"' not in finished
    assert 'id="run-resume"' not in asking and 'id="run-cancel"' in asking and 'id="run-answer"' in asking


def test_staff_of_another_team_cannot_see_resume_or_cancel_a_run_and_staff_without_the_permission_are_refused(stopped):
    outsider = staff_client("other-ops", TeamFactory())
    assert outsider.get(page(stopped)).status_code in (302, 403, 404)
    assert outsider.post(resume_url(stopped), {"budget_usd": "5", "reason": "mine now"}).status_code == 404
    assert outsider.post(cancel_url(stopped), {"reason": "mine now"}).status_code == 404

    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_run"))
    stopped.team.staff.add(viewer)
    reader = Client()
    reader.force_login(viewer)
    shown = reader.get(page(stopped))
    assert shown.status_code == 200 and 'id="run-resume"' not in shown.content.decode()
    assert reader.post(resume_url(stopped), {"budget_usd": "5", "reason": "I only read"}).status_code == 403
    assert reader.post(cancel_url(stopped), {"reason": "I only read"}).status_code == 403

    stopped.refresh_from_db()
    assert stopped.status == RunStatus.BUDGET_EXCEEDED and stopped.budget_usd == Decimal("0.50")
    assert not Event.objects.filter(run=stopped, type__in=[EventType.RUN_RESUMED, EventType.RUN_CANCELLED]).exists()


def test_the_team_s_own_staff_resume_its_runs(stopped):
    ops = staff_client("acme-ops", stopped.team)

    ops.post(resume_url(stopped), {"budget_usd": "1.00", "budget_mode": "audit", "reason": "audit from here"})

    stopped.refresh_from_db()
    assert (stopped.status, stopped.budget_mode) == (RunStatus.QUEUED, "audit")
    assert Event.objects.get(run=stopped, type=EventType.RUN_RESUMED).actor == "user:acme-ops"


def bulk_cancel(client, runs, **posted):
    return client.post(
        reverse("admin:workflows_run_changelist"),
        {"action": "cancel_runs", "_selected_action": [run.pk for run in runs], **posted},
        follow=True,
    )


def test_bulk_cancel_asks_for_a_reason_then_cancels_the_unfinished_runs_and_counts_the_skipped(admin_client, team, stopped, waiting):
    completed = drive(run_start(team=team, workflow=stopped.workflow_version.workflow_id, inputs={"topic": "tea"}))
    runs = [stopped, waiting, completed]

    asked = bulk_cancel(admin_client, runs)
    assert asked.templates[0].name == "admin/workflows/run/cancel_selected.html"
    assert "1 of them already finished" in asked.content.decode()
    no_reason = bulk_cancel(admin_client, runs, confirm="yes", reason="")
    assert "This field is required" in no_reason.content.decode()
    assert Run.objects.filter(status=RunStatus.CANCELLED).count() == 0

    done = bulk_cancel(admin_client, runs, confirm="yes", reason="tidying up")

    assert messages_of(done) == ["Cancelled 2 runs; skipped 1 already finished."]
    assert {run.pk: run.status for run in Run.objects.all()} == {
        stopped.pk: RunStatus.CANCELLED, waiting.pk: RunStatus.CANCELLED, completed.pk: RunStatus.COMPLETED
    }
    assert set(Event.objects.filter(type=EventType.RUN_CANCELLED).values_list("payload__reason", flat=True)) == {"tidying up"}


def test_bulk_cancel_by_staff_of_another_team_cancels_nothing(stopped):
    outsider = staff_client("other-ops", TeamFactory())

    bulk_cancel(outsider, [stopped], confirm="yes", reason="not yours")

    stopped.refresh_from_db()
    assert stopped.status == RunStatus.BUDGET_EXCEEDED


def test_the_story_s_figures_are_the_ledger_s(admin_client, team):
    version = workflow_version(team=team)
    run = drive(run_start(team=team, workflow=version.workflow_id, inputs={"topic": "tea"}, limits={"budget_usd": "0.50"}))
    assert run.status == RunStatus.COMPLETED  # audit: reported at writer, went on

    response = admin_client.get(page(run))
    shown = response.content.decode()

    story = response.context["story"]
    ledger_sum = sum(entry.cost_usd for entry in LedgerEntry.objects.filter(run=run))
    assert ledger_sum == run.spent_usd == Decimal("0.90")
    assert sum(line.cost_usd for line in story.steps) == ledger_sum
    assert [point.spent_usd for point in story.spend] == [Decimal("0.30"), Decimal("0.60"), Decimal("0.90")]
    assert '<td id="run-spent">$0.90</td>' in shown
    assert '<td id="run-remaining">-$0.40</td>' in shown and '<td id="run-percent">180.0%</td>' in shown
    assert '<th class="money" id="run-ledger-total">$0.900000</th>' in shown
    before_checkpoints = shown.split('id="run-checkpoints"')[0]
    assert before_checkpoints.count('<td class="money">$0.300000</td>') == 6  # three steps, three ledger rows
    # The audit report sits after the first entry: where enforce would have stopped, before writer.
    assert [(mark.after_entries, mark.stopped, mark.agent) for mark in story.marks] == [(1, False, "writer")]
    assert "audit: over budget at writer" in shown and "budget $0.50" in shown
    event_ids = list(Event.objects.filter(run=run).order_by("id").values_list("id", flat=True))
    assert 'id="run-events"' in shown and 'id="run-status" data-status="completed"' in shown
    assert all(f'data-event-id="{event_id}"' in shown for event_id in event_ids)


def test_the_chart_marks_where_enforce_stopped_and_the_budget_a_resume_raised(admin_client, stopped):
    admin_client.post(resume_url(stopped), {"budget_usd": "1.00", "reason": "raise"})
    run = drive(stopped)

    story = admin_client.get(page(run)).context["story"]

    assert [(mark.after_entries, mark.stopped, mark.agent) for mark in story.marks] == [(1, True, "writer")]
    assert story.budgets == [(0, Decimal("0.50")), (1, Decimal("1.00"))]
    chart = admin_client.get(page(run)).context["spend_chart"]
    assert chart.count('class="budget-line"') == 2 and 'class="mark mark-enforce"' in chart
    assert "enforce stopped before writer" in chart and chart.count('class="spend-point"') == 3


def test_a_ledger_entry_is_labelled_with_its_step_s_sequence_as_the_step_is(team):
    version = workflow_version(team=team)
    earlier = Run.objects.create(team=team, workflow_version=version)
    for sequence in (1, 2, 3):  # so that the step's primary key is not its sequence
        Step.objects.create(run=earlier, sequence=sequence, agent="padding", iteration=1)
    run = Run.objects.create(team=team, workflow_version=version)
    entry = LedgerEntry.objects.get(pk=ledger_entry(run=run, agent="writer", model="sim-model", cost="0.30", at=utc_days_ago(0)).pk)
    assert entry.step.pk != entry.step.sequence == 1

    assert str(entry) == f"sim-model 0.300000 (run {run.pk} step 1)"
    assert str(entry.step) == f"run {run.pk} step 1 (writer)"


def test_an_answer_to_a_run_no_longer_waiting_is_refused_with_the_api_s_words(admin_client, team, waiting):
    admin_client.post(answer_url(waiting), {"choice": "ship"}, follow=True)  # its message read
    assert drive(waiting).status == RunStatus.COMPLETED

    again = admin_client.post(answer_url(waiting), {"choice": "hold", "text": "too late"}, follow=True)

    api_says = client_for(team).post(f"/api/v1/runs/{waiting.pk}/input", {"choice": "hold"}, format="json")
    assert api_says.status_code == 409
    assert messages_of(again) == [api_says.json()["error"]["message"]]
    assert Event.objects.filter(run=waiting, type=EventType.INPUT_RECEIVED).count() == 1


# A long run's page: the latest rows of each table, said so, and sums over them all.


def long_run(team, steps: int) -> Run:
    """A completed run of `steps` steps of $0.01 each, a ledger entry and a checkpoint after each."""
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team), status=RunStatus.COMPLETED)
    now = timezone.now()
    made = Step.objects.bulk_create(
        Step(run=run, sequence=n, agent=f"agent-{n}", iteration=1, status=StepStatus.SUCCEEDED, model="m")
        for n in range(1, steps + 1)
    )
    LedgerEntry.objects.bulk_create(
        LedgerEntry(team=team, run=run, step=step, attempt=1, agent=step.agent, provider="fake", model="m",
                    input_tokens=1, output_tokens=1, price_source="table", cost_usd=Decimal("0.01"), booked_at=now)
        for step in made
    )  # fmt: skip
    Checkpoint.objects.bulk_create(
        Checkpoint(run=run, reason="step_completed", next_agent="", iterations=n, spent_usd=Decimal("0.01") * n,
                   active_time=timedelta(0))
        for n in range(1, steps + 1)
    )  # fmt: skip
    Run.objects.filter(pk=run.pk).update(spent_usd=Decimal("0.01") * steps, iterations=steps)
    return run


def test_a_long_run_s_page_lists_its_latest_rows_says_so_and_totals_them_all(admin_client, team):
    run = long_run(team, 600)

    shown = admin_client.get(page(run)).content.decode()

    steps = shown.split('id="run-steps"')[1].split("</table>")[0]
    assert steps.count("<tr data-step-id=") == 500
    assert "agent-600" in steps and "agent-100<" not in steps and ">agent-101<" in steps
    assert f"(the latest 500 of 600: <a href=\"/admin/workflows/step/?run__id__exact={run.pk}\">all</a>)" in shown
    ledger = shown.split('id="run-ledger"')[1].split("</table>")[0]
    assert ledger.count("<tr data-ledger-id=") == 500 and "agent-600" in ledger
    assert f"(the latest 500 of 600: <a href=\"/admin/workflows/ledgerentry/?run__id__exact={run.pk}\">all</a>)" in shown
    assert 'Total, all 600 entries</th><th class="money" id="run-ledger-total">$6.000000</th>' in ledger
    # The chart draws at most 500 points, and the last one is the whole spend, after the 600th entry.
    chart = shown.split('id="run-chart"')[1]
    assert chart.count('class="spend-point"') <= 500
    assert "$6.000000 in all</title></circle>" in chart
    # Checkpoints: the latest few and a link to them all, not one row each on the page.
    checkpoints = shown.split('id="run-checkpoints"')[1].split("</table>")[0]
    assert checkpoints.count("<tr data-checkpoint-id=") == 5
    assert f"(the latest 5 of 600: <a href=\"/admin/workflows/checkpoint/?run__id__exact={run.pk}\">all</a>)" in shown
    assert 'id="checkpoints-' not in shown
    assert admin_client.get(f"/admin/workflows/checkpoint/?run__id__exact={run.pk}").status_code == 200
    assert admin_client.get(f"/admin/workflows/step/?run__id__exact={run.pk}").status_code == 200


def test_a_run_s_page_reads_a_number_of_queries_that_does_not_grow_with_its_steps(admin_client, team):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for steps in (5, 50):
        run = long_run(team, steps)
        with CaptureQueriesContext(connection) as queries:
            admin_client.get(page(run))
        counts.append(len(queries.captured_queries))

    assert counts[0] == counts[1], counts


def chart_of(client, run) -> str:
    return str(client.get(page(run)).context["spend_chart"])


def test_a_team_budget_s_mark_is_named_and_its_team_figures_do_not_set_the_run_chart_s_scale(admin_client, team, stopped):
    Event.objects.create(run=stopped, team=team, type=EventType.BUDGET_EXCEEDED, payload={
        "scope": "team", "budget_usd": "5000.000000", "spent_usd": "4999.900000", "projected_usd": "5000.500000",
        "budget_mode": "audit", "current_agent": "writer",
    })  # fmt: skip

    chart = chart_of(admin_client, stopped)

    labels = re.findall(r'class="y-label"[^>]*>([^<]*)<', chart)
    assert labels[-1] == "$0.60"  # what the run's next step would have cost tops the scale, not the team's $5,000
    assert "team budget reported over at writer</text>" in chart
    assert "the team's period spend $4,999.90, projected $5,000.50, budget $5,000.00" in chart


def test_the_stop_s_label_past_the_middle_reads_leftwards_inside_the_chart(admin_client, stopped):
    chart = chart_of(admin_client, stopped)

    # The enforce stop is after the run's last entry: at the right edge of the plot.
    label = re.search(r'<text class="mark-label" x="([\d.]+)"[^>]*text-anchor="(\w+)"[^>]*>([^<]*)</text>', chart)
    assert label.group(3) == "enforce stopped before writer"
    assert label.group(2) == "end" and float(label.group(1)) <= 960 - RIGHT
    assert float(label.group(1)) > LEFT


def test_a_tiny_spend_s_scale_steps_by_a_micro_dollar_at_least_so_no_label_repeats(admin_client, team):
    assert nice_step(Decimal("0.000002")) == Decimal("0.000001")
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team), status=RunStatus.COMPLETED)
    ledger_entry(run=run, agent="writer", model="sim-model", cost="0.000002", at=utc_days_ago(0))

    labels = re.findall(r'class="y-label"[^>]*>([^<]*)<', chart_of(admin_client, run))

    assert len(labels) == len(set(labels)) and labels[-1] == "$0.000002", labels


def test_a_long_event_payload_is_cut_in_the_table_and_whole_on_the_event_s_page(admin_client, team, stopped):
    long = Event.objects.create(run=stopped, team=team, type=EventType.INPUT_REQUESTED, payload={"prompt": "x" * 10_000})

    shown = admin_client.get(page(stopped)).content.decode()

    row = shown.split(f'data-event-id="{long.pk}"')[1].split("</tr>")[0]
    assert "x" * 250 in row and "x" * 1000 not in row
    assert f'<a href="/admin/workflows/event/{long.pk}/change/">whole</a>' in row
    assert "x" * 10_000 in admin_client.get(f"/admin/workflows/event/{long.pk}/change/").content.decode()


def test_tokens_in_are_counted_alike_in_the_step_and_the_ledger_rows(admin_client, team):
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team), status=RunStatus.COMPLETED)
    step = Step.objects.create(run=run, sequence=1, agent="writer", iteration=1, status=StepStatus.SUCCEEDED)
    LedgerEntry.objects.create(
        team=team, run=run, step=step, attempt=1, agent="writer", provider="fake", model="sim-model", input_tokens=100,
        cached_input_tokens=30, cache_write_tokens=7, output_tokens=20, price_source="table", cost_usd=Decimal("0.30"),
    )

    shown = admin_client.get(page(run)).content.decode()

    step_row = shown.split("<tr data-step-id=")[1].split("</tr>")[0]
    ledger_row = shown.split("<tr data-ledger-id=")[1].split("</tr>")[0]
    assert '<td class="number">137</td>' in step_row
    assert '<td class="number">137 <small>of which 30 from the cache, 7 written to it</small></td>' in ledger_row


def test_the_spend_is_drawn_in_the_order_the_entries_were_written_by_their_ids(admin_client, team):
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team), status=RunStatus.COMPLETED)
    first = ledger_entry(run=run, agent="first", model="sim-model", cost="0.10", at=utc_days_ago(0))
    # Another worker's clock, a little behind: written second, stamped earlier.
    second = ledger_entry(run=run, agent="second", model="sim-model", cost="0.20", at=utc_days_ago(1))

    story = admin_client.get(page(run)).context["story"]

    assert [point.entry_id for point in story.spend] == [first.pk, second.pk]
    assert [entry.pk for entry in story.ledger] == [first.pk, second.pk]


def test_bulk_cancel_names_each_run_once_and_the_first_fifty_of_many(admin_client, team, stopped):
    many = [stopped] + [Run.objects.create(team=team, workflow_version=stopped.workflow_version) for _ in range(59)]

    asked = bulk_cancel(admin_client, many).content.decode()

    listed = asked.split('id="runs-to-cancel"')[1].split("</ul>")[0]
    assert f"<li>run {stopped.pk} (budget_exceeded)</li>" in listed
    assert listed.count("<li>") == 51 and "<li>and 10 more</li>" in listed
    assert asked.count(f'name="{helpers.ACTION_CHECKBOX_NAME}"') == 60  # all of them are cancelled
    assert "Cancel 60 runs." in asked
