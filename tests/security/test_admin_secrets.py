"""What the admin lets nobody do with a secret, superusers included: move an API key to another team,
send a stored provider key to a new host, or read a webhook secret after it was shown once."""

import pytest
from django.urls import reverse

from tests.factories import TeamFactory
from tests.webhook_receiver import receiving, signatures_by
from workflows.errors import ValidationFailed
from workflows.models import ApiKey, BudgetChange, Event, EventType, ProviderCredential, Team
from workflows.providers import Credentials
from workflows.services.credentials import credential_set, credential_update, credentials_for
from workflows.services.teams import api_key_create, api_key_rename
from workflows.services.webhooks import webhook_attempt, webhook_delivery_create, webhook_secret_rotate

pytestmark = pytest.mark.django_db

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
NEW_KEY = "sk-proj-zyxwvutsrqponmlkjihgfedcba9876"


def page_of(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def shown_once(response, text: str) -> str:
    """The secret in the one message that shows it."""
    [message] = [str(m) for m in response.context["messages"] if text in str(m)]
    return message.split(text)[1].split(" ")[0]


# API keys


def test_an_api_keys_team_is_read_only_once_created_even_for_superusers(admin_client, team):
    api_key, _ = api_key_create(team=team, name="ci")
    other = TeamFactory(name="other")
    change = reverse("admin:workflows_apikey_change", args=[api_key.pk])

    assert "team" not in admin_client.get(change).context["adminform"].form.fields
    response = admin_client.post(change, {"team": other.pk, "name": "ci-2"})

    assert response.status_code == 302
    assert ApiKey.objects.filter(pk=api_key.pk).values_list("team", "name").get() == (team.pk, "ci-2")


def test_the_service_refuses_to_move_a_key_and_saves_nothing(team):
    api_key, _ = api_key_create(team=team, name="ci")
    api_key.team = TeamFactory(name="other")

    with pytest.raises(ValidationFailed) as refused:
        api_key_rename(api_key=api_key, name="moved")

    assert refused.value.details == [{"path": "team", "message": "cannot be changed"}]
    assert ApiKey.objects.filter(pk=api_key.pk).values_list("team", "name").get() == (team.pk, "ci")


# Provider credentials


def credential_change(admin_client, credential, **posted):
    url = reverse("admin:workflows_providercredential_change", args=[credential.pk])
    return admin_client.post(url, {"team": credential.team_id, "provider": credential.provider, **posted})


def test_a_new_base_url_without_the_key_is_a_form_error_and_changes_nothing(admin_client, team):
    credential = credential_set(team=team, provider="openai", api_key=KEY, base_url="https://gateway.example/v1")
    stored = ProviderCredential.objects.values().get()

    response = credential_change(admin_client, credential, api_key="", base_url="https://collector.example/v1")

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "api_key": ["enter the key again to change the base URL"]
    }
    assert ProviderCredential.objects.values().get() == stored


def test_a_new_base_url_with_the_key_entered_again_is_saved(admin_client, team):
    credential = credential_set(team=team, provider="openai", api_key=KEY, base_url="https://gateway.example/v1")

    response = credential_change(admin_client, credential, api_key=NEW_KEY, base_url="https://other.example/v1")

    assert response.status_code == 302
    assert credentials_for(team_id=team.pk, provider="openai") == Credentials(NEW_KEY, "https://other.example/v1")
    assert ProviderCredential.objects.get().api_key_hint == "…9876"


def test_a_new_key_alone_keeps_the_base_url(admin_client, team):
    credential = credential_set(team=team, provider="openai", api_key=KEY, base_url="https://gateway.example/v1")

    assert credential_change(admin_client, credential, api_key=NEW_KEY, base_url="https://gateway.example/v1").status_code == 302

    assert credentials_for(team_id=team.pk, provider="openai") == Credentials(NEW_KEY, "https://gateway.example/v1")


def test_the_service_refuses_a_new_base_url_without_the_key(team):
    credential = credential_set(team=team, provider="openai", api_key=KEY, base_url="")
    stored = ProviderCredential.objects.values().get()

    with pytest.raises(ValidationFailed) as refused:
        credential_update(credential=credential, base_url="https://collector.example/v1")

    assert refused.value.details == [{"path": "api_key", "message": "enter the key again to change the base URL"}]
    assert ProviderCredential.objects.values().get() == stored


def test_the_service_refuses_to_move_a_credential_to_another_team(team):
    credential = credential_set(team=team, provider="openai", api_key=KEY, base_url="")
    stored = ProviderCredential.objects.values().get()
    credential.team = TeamFactory(name="other")

    with pytest.raises(ValidationFailed):
        credential_update(credential=credential, base_url="", api_key=NEW_KEY)

    assert ProviderCredential.objects.values().get() == stored


# Webhook secrets

SECRET_SHOWN = "webhook secret of team initech is "
ROTATED_SHOWN = "new webhook secret of team initech is "


@pytest.fixture
def initech(admin_client) -> tuple[Team, str]:
    """A team added in the admin, and the secret its one message showed."""
    response = admin_client.post(
        reverse("admin:workflows_team_add"),
        {"name": "initech", "period": "month", "period_mode": "audit", "alert_thresholds": "[50, 100]"},
        follow=True,
    )
    team = Team.objects.get(name="initech")
    return team, shown_once(response, SECRET_SHOWN)


def test_a_new_teams_secret_is_shown_once_then_only_its_last_characters(admin_client, initech):
    team, shown = initech
    assert shown == team.webhook_secret and shown.startswith("whsec_")

    for url in (
        reverse("admin:workflows_team_change", args=[team.pk]),
        reverse("admin:workflows_team_changelist"),
        reverse("admin:workflows_budgetchange_changelist"),
    ):
        page = page_of(admin_client.get(url))
        assert team.webhook_secret not in page
    assert f"…{team.webhook_secret[-4:]}" in page_of(admin_client.get(reverse("admin:workflows_team_change", args=[team.pk])))


def test_rotating_shows_the_new_secret_once_and_keeps_who_and_when(admin_client, initech):
    team, old = initech
    response = admin_client.post(
        reverse("admin:workflows_team_changelist"),
        {"action": "rotate_webhook_secret", "_selected_action": [team.pk]},
        follow=True,
    )

    new = shown_once(response, ROTATED_SHOWN)
    team.refresh_from_db()
    assert team.webhook_secret == new != old
    [rotation] = BudgetChange.objects.filter(team=team, field="webhook_secret")
    assert (rotation.actor, rotation.old_value, rotation.new_value) == ("user:admin", f"…{old[-4:]}", f"…{new[-4:]}")
    page = page_of(admin_client.get(reverse("admin:workflows_team_change", args=[team.pk])))
    assert new not in page and old not in page
    assert f"The previous secret, …{old[-4:]}, signs every attempt too until" in page


def test_deliveries_after_a_rotation_carry_the_new_secrets_signature_first(team):
    old = team.webhook_secret
    event = Event.objects.create(team=team, type=EventType.BUDGET_EXCEEDED, payload={})
    with receiving(204) as receiver:
        team.webhook_url = receiver.url
        team.save(update_fields=["webhook_url"])
        queued = webhook_delivery_create(team=team, event=event, body='{"queued": true}')

        new = webhook_secret_rotate(team=team, actor="user:ops").secret
        later = webhook_delivery_create(team=team, event=event, body='{"later": true}')
        assert webhook_attempt(delivery_id=queued.pk) == webhook_attempt(delivery_id=later.pk) == "delivered"

    assert [signatures_by(received, new, old) for received in receiver.received] == [[new, old], [new, old]]
    assert [received.body for received in receiver.received] == [b'{"queued": true}', b'{"later": true}']
