"""Outbound requests go only where they should: team webhooks and provider base URLs are refused at
save time and again at connect time when their host resolves to an internal address, redirects are
not followed, and a refusal is a clear, definitive failure that charges nothing.

DNS is played by the tests' resolver (tests/resolver.py), the one boundary the check asks; the
servers the requests would reach are real, on 127.0.0.1.
"""

import json
import threading
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from tests.admin.test_teams import change_url, form_data
from tests.factories import workflow_version
from tests.invariants import assert_invariants
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, definition, drive, start
from tests.providers.wire import Answer, WireServer, openai_completion, openai_error, openai_usage
from tests.resolver import PUBLIC_ADDRESS
from workflows.errors import OutboundRefused
from workflows.models import DeliveryStatus, EventType, Price, ProviderCredential, Run, Team, WebhookDelivery
from workflows.services.alerts import alert_send, check_webhook_url
from workflows.services.credentials import credential_set
from workflows.services.events import event_record
from workflows.services.runs import run_start
from workflows.services.webhooks import webhook_attempt
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

ANSWER = json.dumps({"summary": "Budgets hold.", "score": 7})

# One address of each kind the check refuses, and how its refusal names it.
REFUSED_ADDRESSES = [
    ("127.0.0.1", "a loopback address"),
    ("127.255.0.9", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.0.10", "a private address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("169.254.170.2", "a cloud metadata address"),
    ("169.254.1.1", "a link-local address"),
    ("100.64.0.1", "a shared (CGNAT) address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("168.63.129.16", "a cloud metadata address"),
    ("224.0.0.1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("240.0.0.1", "a reserved address"),
    ("192.0.2.1", "a private address"),  # documentation, in IANA's special-purpose registry
    ("::1", "a loopback address"),
    ("::", "an unspecified address"),
    ("fe80::1", "a link-local address"),
    ("fc00::1", "a private address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("ff02::1", "a multicast address"),
    ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("::ffff:10.0.0.1", "a private address"),
    ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),  # NAT64 of 169.254.169.254
    ("2002:a00:1::", "a private address"),  # 6to4 of 10.0.0.1
]


@pytest.fixture(autouse=True)
def nothing_allowed(settings):
    """The operator's allowlist as shipped: empty (tests/settings.py allows 127.0.0.1 for the others)."""
    settings.OUTBOUND_ALLOWED_HOSTS = []
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    return settings


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records what it is sent and answers `status` (with
    `location` for a redirect)."""

    def __init__(
        self,
        *,
        status: int = 200,
        reason: str | None = None,
        location: str = "",
        body: bytes = b"{}",
        content_type: str = "application/json",
        endless: bool = False,
    ):
        self.hits: list[str] = []
        self.stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.hits.append(self.path)
                self.send_response(status, reason)
                if location:
                    self.send_header("location", location)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(10**12 if endless else len(body)))
                self.end_headers()
                self.wfile.write(body)
                if endless:  # a trickle that never ends, until the test is over
                    while not receiver.stop.wait(0.05):
                        self.wfile.write(b" ")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def wire():
    with WireServer() as server:
        yield server


@pytest.fixture
def priced(db):
    Price.objects.create(model="gpt-4o", input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal("10"), valid_from=date(2024, 1, 1))
    Price.objects.create(model="claude-wire-test", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"), valid_from=date(2025, 1, 1))


def start_with_saved_credentials(team: Team, *, provider: str = "openai", model: str = "gpt-4o") -> Run:
    """A run of a workflow on `provider`, with the credentials already saved (the team's or the environment's)."""
    workflow_create(team=team, definition=definition(provider=provider, model=model))
    return run_start(team=team, workflow=f"real-{provider}", inputs={"topic": "budgets"})


def delivery_for(team: Team) -> WebhookDelivery:
    """An alert queued for the team's webhook, as a threshold crossing queues one."""
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team))
    return alert_send(team=team, event=event_record(run=run, type=EventType.BUDGET_THRESHOLD_CROSSED, payload={"threshold_pct": 80}))


# Save time: the service, then the admin.


@pytest.mark.parametrize(("address", "kind"), REFUSED_ADDRESSES)
def test_a_provider_base_url_on_a_refused_address_is_not_saved(team, resolver, address, kind):
    resolver.names["llm.example"] = [address]
    literal = f"[{address}]" if ":" in address else address
    for url, told in (
        ("https://llm.example/v1", f"The host llm.example resolves to {kind}"),  # never which address: that maps the network
        (f"http://{literal}:8000/v1", f"The address {address} is {kind}"),
    ):
        with pytest.raises(OutboundRefused) as refused:
            credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url=url)
        assert refused.value.type == "validation_error" and refused.value.status_code == 400
        assert refused.value.message == (
            f"{told}, which outbound requests may not reach; an operator can allow it with "
            "OUTBOUND_ALLOWED_HOSTS or OUTBOUND_ALLOWED_NETWORKS."
        )
        assert refused.value.details == [{"path": "base_url", "message": refused.value.message}]
    assert not ProviderCredential.objects.exists()


@pytest.mark.parametrize(("address", "kind"), REFUSED_ADDRESSES)
def test_a_webhook_url_on_a_refused_address_is_refused(resolver, address, kind):
    resolver.names["hooks.example"] = [address]
    with pytest.raises(OutboundRefused) as refused:
        check_webhook_url(url="https://hooks.example/budget")
    assert refused.value.details == [{"path": "webhook_url", "message": refused.value.message}]
    assert kind in refused.value.message


def test_one_refused_address_among_public_ones_refuses_the_host(team, resolver):
    resolver.names["mixed.example"] = [PUBLIC_ADDRESS, "10.0.0.7"]
    with pytest.raises(OutboundRefused, match="a private address"):
        credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url="https://mixed.example/v1")
    assert not ProviderCredential.objects.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.example/hook", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("gopher://hooks.example.com:70/_POST", "must start with http:// or https://"),
        ("javascript:alert(1)", "must start with http:// or https://"),
        ("hooks.example.com/budget", "must start with http:// or https://"),
        ("http:///budget", "has no host"),
        ("http://hooks.example.com:99999/budget", "port is not a number"),
        ("https://unknown.invalid/budget", "could not be resolved"),
    ],
)
def test_only_http_urls_to_hosts_that_resolve_are_saved(team, url, message):
    with pytest.raises(OutboundRefused, match=message):
        check_webhook_url(url=url)
    with pytest.raises(OutboundRefused, match=message):
        credential_set(team=team, provider="anthropic", api_key=SECRET_KEY_FOR_TESTS, base_url=url)
    assert not ProviderCredential.objects.exists()


@pytest.mark.parametrize("address", [PUBLIC_ADDRESS, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_a_url_on_a_public_address_is_saved(team, resolver, address):
    resolver.names["gateway.example"] = [address]
    check_webhook_url(url="https://gateway.example/budget")
    credential = credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url="https://gateway.example/v1")
    assert credential.base_url == "https://gateway.example/v1"


def test_the_admin_refuses_a_webhook_on_the_metadata_address(admin_client, team, resolver):
    resolver.names["metadata.example"] = ["169.254.169.254"]
    response = admin_client.post(change_url(team), form_data(admin_client, team, webhook_url="http://metadata.example/latest"))

    assert response.status_code == 200  # the form again, with the error
    assert "resolves to a cloud metadata address" in response.context["adminform"].form.errors["webhook_url"][0]
    team.refresh_from_db()
    assert team.webhook_url == ""


def test_the_admin_refuses_a_provider_base_url_on_a_private_address(admin_client, team):
    add = reverse("admin:workflows_providercredential_add")
    response = admin_client.post(
        add, {"team": team.pk, "provider": "openai", "api_key": SECRET_KEY_FOR_TESTS, "base_url": "http://10.0.0.5:8000/v1"}
    )

    assert response.status_code == 200
    assert "a private address" in response.context["adminform"].form.errors["base_url"][0]
    assert not ProviderCredential.objects.exists()


def test_the_admin_refuses_moving_a_stored_key_to_a_loopback_base_url(admin_client, team):
    credential = credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url="https://gateway.example/v1")
    change = reverse("admin:workflows_providercredential_change", args=[credential.pk])
    response = admin_client.post(change, {"team": team.pk, "provider": "openai", "api_key": "", "base_url": "http://[::1]:11434/v1"})

    assert response.status_code == 200
    assert "a loopback address" in response.context["adminform"].form.errors["base_url"][0]
    credential.refresh_from_db()
    assert credential.base_url == "https://gateway.example/v1"


@pytest.mark.django_db(transaction=True)
def test_the_admin_looks_a_url_up_before_its_transaction_not_inside_it(admin_client, team, resolver, monkeypatch):
    """On SQLite the admin's transaction holds the database's write lock: a slow resolver must not hold it too."""
    from django.db import connection

    in_transaction = []

    def watched(host, port):
        in_transaction.append(connection.in_atomic_block)
        return resolver(host, port)

    monkeypatch.setattr("workflows.outbound.resolve", watched)
    credential = credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url="https://gateway.example/v1")
    in_transaction.clear()

    change = reverse("admin:workflows_providercredential_change", args=[credential.pk])
    admin_client.post(change, {"team": team.pk, "provider": "openai", "api_key": "sk-new-0123456789abcdef", "base_url": "https://hooks.example.com/v1"})
    response = admin_client.post(change_url(team), form_data(admin_client, team, webhook_url="http://metadata.invalid/latest"))

    assert "could not be resolved" in response.context["adminform"].form.errors["webhook_url"][0]
    credential.refresh_from_db()
    assert credential.base_url == "https://hooks.example.com/v1"
    assert in_transaction == [False, False]  # the base URL, then the webhook URL: each looked up once, outside


# Connect time: the name was public when saved, and resolves elsewhere when the request is made.


@pytest.mark.parametrize(("provider", "model", "path", "name"), [("openai", "gpt-4o", "/v1", "OpenAI"), ("anthropic", "claude-wire-test", "", "Anthropic")])
def test_a_base_url_that_resolves_to_loopback_after_saving_is_never_called(team, wire, priced, resolver, provider, model, path, name):
    resolver.names["rebind.example"] = [PUBLIC_ADDRESS]
    port = wire.url.rsplit(":", 1)[1]
    credential_set(team=team, provider=provider, api_key=SECRET_KEY_FOR_TESTS, base_url=f"http://rebind.example:{port}{path}")
    resolver.names["rebind.example"] = ["127.0.0.1"]  # where the stand-in provider listens
    run = start_with_saved_credentials(team, provider=provider, model=model)

    run = drive(run)

    assert wire.received == []  # never reached
    assert run.status == "failed"
    assert run.error["type"] == "ProviderError"
    assert run.error["message"] == (
        f"{name} was not called: The host rebind.example resolves to a loopback address, which outbound requests "
        "may not reach; an operator can allow it with OUTBOUND_ALLOWED_HOSTS or OUTBOUND_ALLOWED_NETWORKS."
    )
    assert not run.events.filter(type=EventType.PROVIDER_RETRY).exists()  # definitive: not retried
    assert run.ledger_entries.count() == 0 and run.spent_usd == 0 and run.reserved_usd == 0
    assert_invariants(run)


def test_a_webhook_that_resolves_to_loopback_after_saving_is_dead_at_once(team, resolver, receivers):
    receiver = receivers()
    resolver.names["hook.example"] = [PUBLIC_ADDRESS]
    check_webhook_url(url=f"http://hook.example:{receiver.port}/budget")
    team.webhook_url = f"http://hook.example:{receiver.port}/budget"
    team.save(update_fields=["webhook_url"])
    delivery = delivery_for(team)
    resolver.names["hook.example"] = [PUBLIC_ADDRESS, "127.0.0.1"]

    assert webhook_attempt(delivery_id=delivery.pk) == DeliveryStatus.DEAD  # not tried again

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 1)
    [attempt] = delivery.attempt_log.all()
    assert attempt.status_code is None
    assert attempt.error.startswith("Refused: The host hook.example resolves to a loopback address")
    assert receiver.hits == []


def test_a_name_that_stops_resolving_is_tried_again_not_refused(team, wire, priced, resolver, receivers, nothing_allowed):
    """No answer from DNS may be a passing failure: the webhook try and the provider call are retried."""
    nothing_allowed.PROVIDER_MAX_RETRIES = 1
    resolver.names["flaky.test"] = [PUBLIC_ADDRESS]
    credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url="https://flaky.test/v1")
    team.webhook_url = "https://flaky.test/budget"
    team.save(update_fields=["webhook_url"])
    delivery = delivery_for(team)
    del resolver.names["flaky.test"]

    assert webhook_attempt(delivery_id=delivery.pk) == DeliveryStatus.FAILED  # tried again later
    [attempt] = delivery.attempt_log.all()
    assert attempt.error == "The host flaky.test could not be resolved."

    run = drive(start_with_saved_credentials(team))
    assert run.events.filter(type=EventType.PROVIDER_RETRY).count() == 1
    assert run.status == "failed"
    assert run.error["message"] == (
        "The provider failed 2 times in a row; the last error: OpenAI could not be reached: "
        "The host flaky.test could not be resolved."
    )
    assert run.ledger_entries.count() == 0 and run.reserved_usd == 0
    assert_invariants(run)


def test_the_request_goes_to_the_address_that_was_checked(team, receivers, monkeypatch, nothing_allowed):
    """Resolved once per request: a resolver that would answer differently the second time is not asked again."""
    receiver = receivers()
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    lookups = []

    def rebinding(host, port):
        lookups.append(host)
        return next(answers)

    monkeypatch.setattr("workflows.outbound.resolve", rebinding)
    nothing_allowed.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    team.webhook_url = f"http://twice.example:{receiver.port}/budget"
    team.save(update_fields=["webhook_url"])
    delivery = delivery_for(team)

    assert webhook_attempt(delivery_id=delivery.pk) == DeliveryStatus.DELIVERED
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert lookups == ["twice.example"] and receiver.hits == ["/budget"]


# Redirects: loopback allowed, so only the redirect itself stops the request.


def test_a_webhook_redirect_is_not_followed(team, receivers, nothing_allowed):
    nothing_allowed.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    target = receivers()
    redirecting = receivers(status=302, location=f"http://127.0.0.1:{target.port}/elsewhere")
    team.webhook_url = f"http://127.0.0.1:{redirecting.port}/budget"
    team.save(update_fields=["webhook_url"])
    delivery = delivery_for(team)

    assert webhook_attempt(delivery_id=delivery.pk) == DeliveryStatus.FAILED  # tried again later

    [attempt] = delivery.attempt_log.all()
    assert attempt.status_code == 302
    assert attempt.error == "HTTP 302 Found: redirects are not followed"
    assert redirecting.hits == ["/budget"] and target.hits == []


@pytest.mark.parametrize(
    ("provider", "model", "path", "name"),
    [("openai", "gpt-4o", "/v1", "OpenAI"), ("anthropic", "claude-wire-test", "", "Anthropic")],
)
def test_a_provider_redirect_is_not_followed_and_its_target_is_not_shown(
    team, wire, priced, receivers, nothing_allowed, provider, model, path, name
):
    nothing_allowed.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    redirecting = receivers(status=307, location=f"{wire.url}/elsewhere", body=b"<html>see 10.9.8.7</html>", content_type="text/html")
    credential_set(team=team, provider=provider, api_key=SECRET_KEY_FOR_TESTS, base_url=f"http://127.0.0.1:{redirecting.port}{path}")
    run = drive(start_with_saved_credentials(team, provider=provider, model=model))

    assert wire.received == [] and len(redirecting.hits) == 1
    assert run.status == "failed"
    assert run.error["status_code"] == 307
    assert run.error["message"] == (
        f"{name} answered 307: a redirect, which is not followed; set the base URL to the address it points to"
    )
    assert run.ledger_entries.count() == 0 and run.reserved_usd == 0
    assert_invariants(run)


def test_a_webhook_answer_is_never_read_so_an_endless_body_cannot_hold_the_worker(team, receivers, nothing_allowed):
    nothing_allowed.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    receiver = receivers(endless=True)
    team.webhook_url = f"http://127.0.0.1:{receiver.port}/budget"
    team.save(update_fields=["webhook_url"])
    delivery = delivery_for(team)

    assert webhook_attempt(delivery_id=delivery.pk) == DeliveryStatus.DELIVERED

    [attempt] = delivery.attempt_log.all()
    assert (attempt.status_code, attempt.error) == (200, "")
    assert attempt.duration_ms < 2000


# The allowlist.


def test_an_allowed_host_and_port_is_reached_and_no_other_port(team, resolver, receivers, nothing_allowed):
    allowed, other = receivers(), receivers()
    resolver.names["hooks.internal"] = ["127.0.0.1"]
    nothing_allowed.OUTBOUND_ALLOWED_HOSTS = [f"HOOKS.internal:{allowed.port}"]

    check_webhook_url(url=f"http://hooks.internal:{allowed.port}/budget")
    with pytest.raises(OutboundRefused, match="a loopback address"):
        check_webhook_url(url=f"http://hooks.internal:{other.port}/budget")

    team.webhook_url = f"http://hooks.internal:{allowed.port}/budget"
    team.save(update_fields=["webhook_url"])
    delivery = delivery_for(team)
    assert webhook_attempt(delivery_id=delivery.pk) == DeliveryStatus.DELIVERED
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and allowed.hits == ["/budget"]


def test_an_allowed_network_lets_a_local_model_server_be_called(team, wire, priced, resolver, nothing_allowed):
    resolver.names["vllm.internal"] = ["127.0.0.1"]
    nothing_allowed.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url=f"http://vllm.internal:{wire.url.rsplit(':', 1)[1]}/v1")
    wire.script(openai_completion(ANSWER, openai_usage(prompt=1000, completion=100)))

    run = drive(start_with_saved_credentials(team))

    assert run.status == "completed"
    assert wire.received[0].headers["host"] == f"vllm.internal:{wire.url.rsplit(':', 1)[1]}"
    assert run.spent_usd == Decimal("0.003500")
    assert_invariants(run)


def test_the_operators_environment_base_url_passes_the_same_check(team, wire, priced, nothing_allowed):
    nothing_allowed.OPENAI_API_KEY, nothing_allowed.OPENAI_BASE_URL = SECRET_KEY_FOR_TESTS, f"{wire.url}/v1"
    wire.script(openai_completion(ANSWER, openai_usage(prompt=1000, completion=100)))

    run = drive(start_with_saved_credentials(team))

    assert run.status == "failed" and "The address 127.0.0.1 is a loopback address" in run.error["message"]
    assert wire.received == []


# What a team is shown of a provider's error.


def test_a_body_that_is_not_the_providers_json_error_is_not_shown(team, wire, priced, nothing_allowed):
    nothing_allowed.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    page = "<html><body>upstream proxy.internal.corp (10.20.30.40) refused</body></html>"
    wire.script(Answer(status=403, body={"detail": page}))  # JSON, but not an OpenAI error
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "failed"
    assert run.error["message"] == "OpenAI answered 403: Forbidden"


def test_the_servers_own_status_line_is_not_shown(team, priced, receivers, nothing_allowed):
    nothing_allowed.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    gateway = receivers(status=502, reason="upstream 10.20.30.40:8443 (billing-db.internal) down", body=b"<html>oops</html>")
    credential_set(team=team, provider="anthropic", api_key=SECRET_KEY_FOR_TESTS, base_url=f"http://127.0.0.1:{gateway.port}")
    nothing_allowed.PROVIDER_MAX_RETRIES = 0
    run = drive(start_with_saved_credentials(team, provider="anthropic", model="claude-wire-test"))

    assert run.status == "failed"
    assert run.error["message"] == "The provider failed 1 times in a row; the last error: Anthropic answered 502: Bad Gateway"


def test_the_providers_own_error_message_is_shown_short_and_on_one_line(team, wire, priced, nothing_allowed):
    nothing_allowed.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    wire.script(openai_error(400, "Bad model.\n" + "x" * 1000))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "failed"
    assert run.error["message"] == "OpenAI answered 400: Bad model. " + "x" * 289

