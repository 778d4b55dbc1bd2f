"""Team provider credentials: encrypted at rest, the environment as the fallback, refusal at start."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.factories import TeamFactory
from tests.providers.conftest import definition, drive, priced  # noqa: F401 - a fixture
from workflows.errors import EndpointMismatch
from workflows.models import ProviderCredential, Run, Step
from workflows.providers import Credentials
from workflows.services.credentials import (
    CredentialsUnreadable,
    credential_endpoints,
    credential_set,
    credential_update,
    credentials_for,
)
from workflows.services.provider_routes import provider_routes_set
from workflows.services.runs import run_resume, run_start
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


def naming(endpoint: str) -> str:
    """The providers' tests' OpenAI workflow, its runtime naming the endpoint of its calls."""
    return definition(provider="openai", model="gpt-4o").replace(
        "runtime: {provider: openai,", f"runtime: {{provider: {{name: openai, base_url: '{endpoint}'}},"
    )


def test_an_upload_is_told_where_each_of_the_teams_credentials_calls(team):
    credential_set(team=team, provider="openai", api_key=KEY)
    credential_set(team=team, provider="anthropic", api_key=KEY, base_url="https://gateway.example/anthropic")

    assert credential_endpoints(team=team) == {"openai": "https://api.openai.com/v1", "anthropic": "https://gateway.example/anthropic"}
    assert credential_endpoints(team=TeamFactory(name="other")) == {}


def test_a_run_naming_its_endpoint_starts_while_the_credentials_point_there_and_is_refused_after(team):
    # No base URL on the credentials: they call OpenAI's own endpoint, which the workflow may name.
    credential = credential_set(team=team, provider="openai", api_key=KEY)
    workflow_create(team=team, definition=naming("https://API.openai.com/v1/"))
    assert run_start(team=team, workflow="real-openai", inputs={"topic": "x"}).status == "queued"

    credential_update(credential=credential, base_url="https://gateway.example/v1", api_key=KEY)
    runs, steps = Run.objects.count(), Step.objects.count()

    with pytest.raises(EndpointMismatch) as refused:
        run_start(team=team, workflow="real-openai", inputs={"topic": "x"})

    assert "provider 'openai' calls openai, and the base URL of the team's 'openai' credentials is " in refused.value.message
    assert refused.value.details == {
        "endpoints": [
            {
                "workflow": "real-openai",
                "provider": "openai",
                "backend": "openai",
                "base_url": "https://API.openai.com/v1/",
                "credentials_base_url": "https://gateway.example/v1",
            }
        ]
    }
    assert (Run.objects.count(), Step.objects.count()) == (runs, steps)


def test_a_resume_onto_a_version_naming_an_endpoint_the_credentials_left_is_refused(team, priced):
    credential = credential_set(team=team, provider="openai", api_key=KEY, base_url="https://gateway.example/v1")
    workflow_create(team=team, definition=definition(provider="openai", model="gpt-4o"))
    # The gate stops the first step before any call: $0.01 of output alone is over the budget.
    run = drive(run_start(team=team, workflow="real-openai", inputs={"topic": "x"}, limits={"budget_usd": "0.001", "budget_mode": "enforce"}))
    assert run.status == "budget_exceeded"
    version = workflow_create(team=team, definition=naming("https://gateway.example/v1"))
    credential_update(credential=credential, base_url="https://other.example/v1", api_key=KEY)

    with pytest.raises(EndpointMismatch):
        run_resume(run=run, limits={"budget_usd": "1"}, workflow_version=version.version)

    run.refresh_from_db()
    assert (run.status, run.workflow_version.version) == ("budget_exceeded", 1)


def test_a_stopped_run_naming_its_endpoint_resumes_only_while_the_credentials_still_point_there(team, priced):
    credential = credential_set(team=team, provider="openai", api_key=KEY, base_url="https://gateway.example/v1")
    workflow_create(team=team, definition=naming("https://gateway.example/v1"))
    run = drive(run_start(team=team, workflow="real-openai", inputs={"topic": "x"}, limits={"budget_usd": "0.001", "budget_mode": "enforce"}))
    assert run.status == "budget_exceeded"
    credential_update(credential=credential, base_url="https://other.example/v1", api_key=KEY)

    with pytest.raises(EndpointMismatch) as refused:
        run_resume(run=run, limits={"budget_usd": "1"})

    assert refused.value.details["endpoints"][0]["credentials_base_url"] == "https://other.example/v1"
    run.refresh_from_db()
    assert run.status == "budget_exceeded"
    credential_update(credential=credential, base_url="https://gateway.example/v1/", api_key=KEY)
    assert run_resume(run=run, limits={"budget_usd": "1"}).status == "queued"


def test_admin_warns_when_a_credentials_change_leaves_workflows_naming_the_old_endpoint(admin_client, team):
    credential = credential_set(team=team, provider="openai", api_key=KEY, base_url="http://127.0.0.1:11434/v1")
    workflow_create(team=team, definition=naming("http://127.0.0.1:11434/v1"))
    workflow_create(team=team, definition=definition(provider="openai", model="gpt-4o").replace("real-openai", "plain"))
    change = reverse("admin:workflows_providercredential_change", args=[credential.pk])

    def saved_with(base_url: str) -> list[str]:
        # A new base URL needs the key entered again (check_credential_update).
        form = {"team": team.pk, "provider": "openai", "api_key": KEY, "base_url": base_url}
        response = admin_client.post(change, form, follow=True)
        assert response.status_code == 200
        return [str(message) for message in response.context["messages"] if message.level_tag == "warning"]

    [warning] = saved_with("http://127.0.0.1:8000/v1")
    assert warning.startswith("Runs of 'real-openai' will be refused as they start: each names an endpoint")
    assert saved_with("http://127.0.0.1:11434/v1/") == []


def test_a_run_naming_its_wire_is_refused_at_start_once_a_route_change_sends_its_calls_to_another_backend(team, priced):
    credential_set(team=team, provider="openai", api_key=KEY)
    credential_set(team=team, provider="anthropic", api_key=KEY)
    provider_routes_set(team=team, routes={"copilot": "openai"})
    workflow_create(
        team=team,
        definition=definition(provider="openai", model="gpt-4o").replace(
            "runtime: {provider: openai,", "runtime: {provider: {name: copilot, type: openai, wire_api: completions},"
        ),
    )
    provider_routes_set(team=team, routes={"copilot": "anthropic"})
    runs = Run.objects.count()

    with pytest.raises(EndpointMismatch) as refused:
        run_start(team=team, workflow="real-openai", inputs={"topic": "x"})

    assert refused.value.message.startswith(
        "The workflow names a wire its calls no longer speak, since the team's routes changed: 'type: openai' names "
        "the openai wire, but provider 'copilot' reaches anthropic through the team's route (copilot=anthropic)"
    )
    assert refused.value.details == {
        "wires": [{"workflow": "real-openai", "provider": "copilot", "backend": "anthropic", "type": "openai", "wire_api": "completions"}]
    }
    assert Run.objects.count() == runs
