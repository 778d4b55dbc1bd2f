"""Team provider credentials: encrypted at rest, the environment as the fallback, refusal at start."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.factories import TeamFactory
from tests.providers.conftest import definition
from workflows.models import ProviderCredential, Run
from workflows.providers import Credentials
from workflows.services.credentials import CredentialsUnreadable, credential_set, credentials_for
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"


def test_the_key_is_stored_encrypted_and_read_back_whole(team):
    credential_set(team=team, provider="openai", api_key=KEY, base_url="https://gateway.example/v1")

    stored = ProviderCredential.objects.get(team=team)
    assert KEY not in stored.api_key_encrypted and KEY[-12:] not in stored.api_key_encrypted
    assert stored.api_key_hint == "…0123"
    assert credentials_for(team_id=team.pk, provider="openai") == Credentials(KEY, "https://gateway.example/v1")
    assert KEY not in repr(credentials_for(team_id=team.pk, provider="openai"))


def test_a_key_rotated_in_still_reads_what_the_old_key_wrote(team, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIALS_ENCRYPTION_KEYS = [old]
    credential_set(team=team, provider="openai", api_key=KEY)

    settings.CREDENTIALS_ENCRYPTION_KEYS = [new, old]
    assert credentials_for(team_id=team.pk, provider="openai").api_key == KEY


def test_rotate_credentials_re_encrypts_every_key_so_the_old_one_can_be_dropped(team, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIALS_ENCRYPTION_KEYS = [old]
    credential_set(team=team, provider="openai", api_key=KEY)
    credential_set(team=TeamFactory(), provider="anthropic", api_key=KEY + "-2")

    settings.CREDENTIALS_ENCRYPTION_KEYS = [new, old]
    out = io.StringIO()
    call_command("rotate_credentials", stdout=out)
    assert out.getvalue().splitlines()[-1] == "2"

    settings.CREDENTIALS_ENCRYPTION_KEYS = [new]
    assert credentials_for(team_id=team.pk, provider="openai").api_key == KEY
    assert sorted(Fernet(new).decrypt(c.api_key_encrypted.encode()).decode() for c in ProviderCredential.objects.all()) == [
        KEY,
        KEY + "-2",
    ]


def test_rotate_credentials_refuses_and_changes_nothing_when_a_key_cannot_be_read(team, settings):
    settings.CREDENTIALS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    credential_set(team=team, provider="openai", api_key=KEY)
    before = ProviderCredential.objects.get().api_key_encrypted

    settings.CREDENTIALS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="cannot be decrypted"):
        call_command("rotate_credentials", stdout=io.StringIO())
    assert ProviderCredential.objects.get().api_key_encrypted == before


def test_deploy_checks_warn_when_no_encryption_key_is_set(settings):
    settings.CREDENTIALS_ENCRYPTION_KEYS = []
    assert [message.id for message in run_checks(include_deployment_checks=True) if message.id.startswith("workflows")] == [
        "workflows.W001"
    ]
    settings.CREDENTIALS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert not [m for m in run_checks(include_deployment_checks=True) if m.id.startswith("workflows")]


def test_the_wrong_key_fails_clearly_and_never_yields_a_key(team, settings):
    settings.CREDENTIALS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    credential_set(team=team, provider="anthropic", api_key=KEY)

    settings.CREDENTIALS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CredentialsUnreadable, match="cannot be decrypted with CREDENTIALS_ENCRYPTION_KEYS"):
        credentials_for(team_id=team.pk, provider="anthropic")


def test_the_environment_is_the_fallback_and_a_teams_own_credentials_win(team, settings):
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-env-0123456789", "http://127.0.0.1:9/v1"
    assert credentials_for(team_id=team.pk, provider="openai") == Credentials("sk-env-0123456789", "http://127.0.0.1:9/v1")
    assert credentials_for(team_id=team.pk, provider="anthropic") is None
    assert credentials_for(team_id=team.pk, provider="fake") is None

    credential_set(team=team, provider="openai", api_key=KEY)
    assert credentials_for(team_id=team.pk, provider="openai") == Credentials(KEY, "")


@pytest.mark.parametrize("provider,setting", [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")])
def test_a_run_whose_provider_has_no_credentials_is_refused_at_start(api, team, settings, provider, setting):
    workflow_create(team=team, definition=definition(provider=provider, model="gpt-4o"))

    response = api.post("/api/v1/runs", {"workflow": f"real-{provider}", "inputs": {"topic": "x"}}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "missing_credentials"
    assert error["details"] == {"providers": [provider]}
    assert setting in error["message"]
    assert not Run.objects.exists()

    setattr(settings, setting, "sk-env-0123456789")
    response = api.post("/api/v1/runs", {"workflow": f"real-{provider}", "inputs": {"topic": "x"}}, format="json")
    assert response.status_code == 202


def test_the_api_never_shows_a_key(api, team, settings):
    credential_set(team=team, provider="openai", api_key=KEY)
    workflow_create(team=team, definition=definition(provider="openai", model="gpt-4o"))
    run_id = api.post("/api/v1/runs", {"workflow": "real-openai", "inputs": {"topic": "x"}}, format="json").json()["id"]

    for url in ["/api/v1/team", f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/events", "/api/v1/workflows"]:
        assert KEY not in api.get(url).content.decode()


def test_admin_writes_a_key_encrypted_and_never_shows_it_back(admin_client, team):
    add = reverse("admin:workflows_providercredential_add")
    response = admin_client.post(add, {"team": team.pk, "provider": "openai", "api_key": KEY, "base_url": ""})
    assert response.status_code == 302
    stored = ProviderCredential.objects.get()
    assert credentials_for(team_id=team.pk, provider="openai").api_key == KEY

    change = reverse("admin:workflows_providercredential_change", args=[stored.pk])
    page = admin_client.get(change).content.decode()
    assert KEY not in page and stored.api_key_encrypted not in page and "…0123" in page

    # Saved with the key left empty, the stored key stays.
    assert admin_client.post(change, {"team": team.pk, "provider": "openai", "api_key": "", "base_url": ""}).status_code == 302
    assert credentials_for(team_id=team.pk, provider="openai") == Credentials(KEY, "")


def test_admin_never_moves_a_stored_key_to_another_team_or_provider(admin_client, team):
    credential = credential_set(team=team, provider="openai", api_key=KEY)
    other = TeamFactory()

    change = reverse("admin:workflows_providercredential_change", args=[credential.pk])
    response = admin_client.post(change, {"team": other.pk, "provider": "anthropic", "api_key": "", "base_url": ""})

    assert response.status_code == 302
    assert list(ProviderCredential.objects.values_list("team", "provider")) == [(team.pk, "openai")]
