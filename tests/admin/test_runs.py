"""A run waiting at a human gate is answered on its admin page, in the staff user's name, by staff who
can see it and no one else."""

from pathlib import Path

import pytest
from django.urls import reverse

from tests.factories import TeamFactory
from tests.providers.conftest import drive
from tests.security.test_admin_scoping import staff_client
from workflows.models import Event, EventType, RunStatus
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
