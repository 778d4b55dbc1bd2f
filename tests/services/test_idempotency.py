"""The Idempotency-Key rules, without HTTP: claim, record, replay, refuse, release and expire."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from tests.factories import TeamFactory
from workflows.errors import IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidRunState, ValidationFailed
from workflows.models import IdempotencyKey
from workflows.services.idempotency import (
    IDEMPOTENCY_CLAIM_TIMEOUT,
    IDEMPOTENCY_KEY_TTL,
    IdempotentResponse,
    check_idempotency_key,
    idempotency_key_execute,
    idempotency_keys_purge,
    request_fingerprint,
)

pytestmark = pytest.mark.django_db

START = request_fingerprint(method="POST", path="/api/v1/runs", body={"workflow": "w", "inputs": {"topic": "x"}})
OTHER = request_fingerprint(method="POST", path="/api/v1/runs", body={"workflow": "w", "inputs": {"topic": "y"}})


class Endpoint:
    """Stands in for a view: counts how often it really runs and answers what it is told to."""

    def __init__(self, status: int = 202):
        self.status = status
        self.calls = 0

    def __call__(self) -> IdempotentResponse:
        self.calls += 1
        return IdempotentResponse(status=self.status, body={"id": self.calls})


def call(team, endpoint, *, key: str = "k-1", fingerprint: str = START) -> IdempotentResponse:
    return idempotency_key_execute(team=team, key=key, fingerprint=fingerprint, execute=endpoint)


def test_the_fingerprint_ignores_key_order_spacing_and_the_trailing_slash():
    assert request_fingerprint(method="post", path="/api/v1/runs/", body={"inputs": {"topic": "x"}, "workflow": "w"}) == START


def test_any_json_body_has_a_fingerprint_even_text_that_is_not_valid_utf_8():
    # JSON may escape a lone surrogate, which no UTF-8 encoder accepts.
    assert len(request_fingerprint(method="POST", path="/api/v1/runs", body={"topic": "mar\u00e9es \ud800"})) == 64


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("PUT", "/api/v1/runs", {"workflow": "w", "inputs": {"topic": "x"}}),
        ("POST", "/api/v1/runs/1/resume", {"workflow": "w", "inputs": {"topic": "x"}}),
        ("POST", "/api/v1/runs", {"workflow": "w", "inputs": {"topic": "x"}, "version": 1}),
        ("POST", "/api/v1/runs", {"workflow": "w", "inputs": {"topic": "X"}}),
    ],
)
def test_the_fingerprint_changes_with_the_method_the_path_or_the_body(method, path, body):
    assert request_fingerprint(method=method, path=path, body=body) != START


@pytest.mark.parametrize("key", ["a", "k" * 200, "3f0c9a52-7d1e-4b8e-9d7a-0e4f1c2b3a45", "order #42: retry ~1"])
def test_keys_of_1_to_200_printable_ascii_characters_are_accepted(key):
    check_idempotency_key(key=key)


@pytest.mark.parametrize("key", ["", "k" * 201, "clé", "tab\there", "line\nbreak", "del\x7f"])
def test_other_keys_are_refused_naming_the_header(key):
    with pytest.raises(ValidationFailed) as refused:
        check_idempotency_key(key=key)
    assert refused.value.details == [
        {"path": "Idempotency-Key", "message": "must be 1 to 200 printable ASCII characters"}
    ]


def test_a_retry_gets_the_first_response_and_runs_nothing(team):
    endpoint = Endpoint()
    first = call(team, endpoint)
    retry = call(team, endpoint)

    assert first == IdempotentResponse(status=202, body={"id": 1}, replayed=False)
    assert retry == IdempotentResponse(status=202, body={"id": 1}, replayed=True)
    assert endpoint.calls == 1


def test_the_same_key_for_another_request_is_refused_naming_the_key(team):
    endpoint = Endpoint()
    call(team, endpoint)
    with pytest.raises(IdempotencyKeyReused) as refused:
        call(team, endpoint, fingerprint=OTHER)

    assert "'k-1'" in refused.value.message
    assert refused.value.details == {"key": "k-1"}
    assert endpoint.calls == 1


def test_keys_belong_to_a_team(team):
    endpoint = Endpoint()
    call(team, endpoint)
    elsewhere = call(TeamFactory(name="globex"), endpoint, fingerprint=OTHER)

    assert elsewhere == IdempotentResponse(status=202, body={"id": 2})
    assert IdempotencyKey.objects.filter(key="k-1").count() == 2


def test_a_request_with_a_key_still_in_progress_is_refused_and_does_not_run(team):
    inner = Endpoint()

    def concurrent_retry() -> IdempotentResponse:
        with pytest.raises(IdempotencyKeyInProgress) as refused:
            call(team, inner)
        assert refused.value.details == {"key": "k-1"}
        return IdempotentResponse(status=202, body={"id": "first"})

    call(team, concurrent_retry)
    assert inner.calls == 0
    assert call(team, inner).body == {"id": "first"}


def test_a_different_request_is_refused_as_a_reuse_even_while_the_first_is_in_progress(team):
    def concurrent_other() -> IdempotentResponse:
        with pytest.raises(IdempotencyKeyReused):
            call(team, Endpoint(), fingerprint=OTHER)
        return IdempotentResponse(status=202, body={})

    call(team, concurrent_other)


@pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
def test_a_refusal_or_failure_is_not_recorded_so_a_retry_runs_again(team, status):
    call(team, Endpoint(status=status))
    assert not IdempotencyKey.objects.exists()

    # Not even the first request's body is kept: the corrected request may use the key.
    assert call(team, Endpoint(), fingerprint=OTHER) == IdempotentResponse(status=202, body={"id": 1})


def test_an_exception_releases_the_key(team):
    def refused() -> IdempotentResponse:
        raise InvalidRunState("Cannot resume a run that is in 'queued' status.")

    with pytest.raises(InvalidRunState):
        call(team, refused)
    assert call(team, Endpoint()).replayed is False


def test_a_key_expires_after_24_hours_and_then_starts_afresh(team):
    endpoint = Endpoint()
    with time_machine.travel(timezone.now(), tick=False) as clock:
        call(team, endpoint)
        clock.shift(IDEMPOTENCY_KEY_TTL - timedelta(seconds=1))
        assert call(team, endpoint).replayed is True

        clock.shift(timedelta(seconds=1))
        fresh = call(team, endpoint, fingerprint=OTHER)  # expired: even another request may use it
        assert fresh == IdempotentResponse(status=202, body={"id": 2})
        assert call(team, endpoint, fingerprint=OTHER).body == {"id": 2}
    assert IdempotencyKey.objects.get(key="k-1").request_fingerprint == OTHER


def test_expired_keys_are_purged_and_live_ones_kept(team):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        call(team, Endpoint(), key="old")
        clock.shift(timedelta(hours=1))
        call(team, Endpoint(), key="recent")
        clock.shift(IDEMPOTENCY_KEY_TTL - timedelta(hours=1))

        assert idempotency_keys_purge() == 1
        assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["recent"]
        assert call(team, Endpoint(), key="recent").replayed is True


def test_a_claim_left_by_a_request_that_died_is_taken_over_after_the_claim_timeout(team):
    endpoint = Endpoint()
    with time_machine.travel(timezone.now(), tick=False) as clock:
        IdempotencyKey.objects.create(team=team, key="k-1", request_fingerprint=START)  # its process was killed
        clock.shift(IDEMPOTENCY_CLAIM_TIMEOUT - timedelta(seconds=1))
        with pytest.raises(IdempotencyKeyInProgress):
            call(team, endpoint)

        clock.shift(timedelta(seconds=1))
        assert call(team, endpoint) == IdempotentResponse(status=202, body={"id": 1})
        assert call(team, endpoint).replayed is True


def test_a_request_whose_claim_was_taken_over_does_not_overwrite_the_new_response(team):
    with time_machine.travel(timezone.now(), tick=False) as clock:

        def outlived_its_claim() -> IdempotentResponse:
            clock.shift(IDEMPOTENCY_CLAIM_TIMEOUT)
            assert call(team, Endpoint()).body == {"id": 1}
            return IdempotentResponse(status=202, body={"id": "late"})

        assert call(team, outlived_its_claim).body == {"id": "late"}
        assert call(team, Endpoint()) == IdempotentResponse(status=202, body={"id": 1}, replayed=True)
