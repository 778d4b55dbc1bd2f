"""Conductor's `validator:` on the agent of a group, on a real worker, with the listing-translations
workflow in this folder: a for_each group of three phrases at most two at a time, whose translator
has a validator, then a parallel group of two reviews, one of which (tone) has a validator that sends
it back. A branch is a chain of steps (its agent's, its validator's, perhaps a re-run), each gated
and charged; the group's result holds each branch's final output, in item order; a validator or a
re-run that fails leaves the graded output standing and fails neither its branch nor its group.

Prices (input is free, output $1,000 per million tokens on both models): the translator reserves
$0.20 (a 200-token cap) and costs $0.02, its validator reserves $0.512 (the 512 tokens a verdict is
given) and costs $0.01; tone costs $0.03 (and its re-run as much), tone's validator $0.01, terms
$0.04, the publisher $0.05."""

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.definition import VERDICT_SCHEMA
from workflows.models import EventType, LedgerEntry
from workflows.providers import ProviderError
from workflows.providers.fake import FakeProvider

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")
SOURCE = (Path(__file__).parent / "listing_translations.yaml").read_text()
PHRASES = ["rain jacket", "waterproof to 10,000 mm", "two zipped pockets"]
DRAFT, FIXED = {"text": "Une traduction"}, {"text": "Une traduction corrigée"}
LOUD, CALM = {"line": "Achetez-le !"}, {"line": "Découvrez-le."}
TONE_ISSUES = ["Drop the exclamation mark"]


class Model(FakeProvider):
    """The fake provider, with a grader that fails the calls `fails` picks and calls `broken` picks
    raising as a model that is down does; it keeps every prompt it is sent."""

    def __init__(self, *, fails=None, broken=None):
        self.fails, self.broken, self.prompts = fails, broken, []

    def complete(self, request, *, credentials=None):
        self.prompts.append(request.prompt)
        if self.broken is not None and self.broken(request):
            raise ProviderError("The model is unavailable.", status_code=400)
        if self.fails is not None and self.fails(request):
            verdict = {"passed": False, "issues": ["Say 'waterproof' as a shopper would"]}
            request = replace(request, options={"mock": {**request.options["mock"], "output": verdict}})
        return super().complete(request, credentials=credentials)


def use_model(monkeypatch, model: Model) -> Model:
    monkeypatch.setattr("workflows.services.steps.kinds.agent.get_provider", lambda name: model)
    return model


def is_validator(request) -> bool:
    return request.output_schema == VERDICT_SCHEMA


def upload(api, *, tone_passes: bool = False) -> None:
    source = SOURCE
    if tone_passes:
        data = yaml.safe_load(SOURCE)
        data["agents"][0]["validator"]["mock"]["output"] = {"passed": True, "issues": []}
        source = yaml.safe_dump(data, sort_keys=False)
    response = api.post("/api/v1/workflows", {"definition": source}, format="json")
    assert response.status_code == 201, response.json()


def start(api, **limits):
    body = {"workflow": "listing-translations", "inputs": {"phrases": PHRASES}}
    response = api.post("/api/v1/runs", {**body, "limits": limits} if limits else body, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *TERMINAL)


def chains(api, run) -> dict[tuple, list[tuple]]:
    """Each branch's steps, (role, status), in the order they were created; steps outside groups under ("", "")."""
    listed = api.get(f"/api/v1/runs/{run.pk}/steps").json()["results"]
    found: dict[tuple, list[tuple]] = {}
    for step in listed:
        found.setdefault((step["group"], step["branch_key"]), []).append((step["agent"], step["role"], step["status"]))
    return found


def ledger(run) -> list[tuple]:
    return list(LedgerEntry.objects.filter(run=run).order_by("step__sequence").values_list("agent", "cost_usd"))


def payloads(run, event_type) -> list[dict]:
    return [event.payload for event in run.events.filter(type=event_type).order_by("id")]


def without_step(payload: dict) -> dict:
    return {key: value for key, value in payload.items() if key != "step"}


def test_each_branch_is_graded_and_the_group_s_result_holds_its_final_output(api, team, celery_worker):
    upload(api, tone_passes=True)

    # Validators' calls and re-runs never count: 3 translations, 2 reviews and the publisher are 6.
    run = start(api, max_iterations=6)

    assert run.status == "completed", run.error
    translator = [("translator", "", "succeeded"), ("translator", "validator", "succeeded")]
    assert chains(api, run) == {
        ("translations", "0"): translator,
        ("translations", "1"): translator,
        ("translations", "2"): translator,
        ("reviews", "tone"): [("tone", "", "succeeded"), ("tone", "validator", "succeeded")],
        ("reviews", "terms"): [("terms", "", "succeeded")],
        ("", ""): [("publisher", "", "succeeded")],
    }
    assert run.output == {"lines": [DRAFT] * 3, "opening": LOUD["line"], "url": "https://shop.example/listing/1"}
    assert run.iterations == 6
    # Numbered as they were created, the publisher after every step of the groups.
    sequences = list(run.steps.order_by("sequence").values_list("sequence", "agent"))
    assert [sequence for sequence, _ in sequences] == list(range(1, 11))
    assert sequences[-1] == (10, "publisher")
    assert sorted(ledger(run)) == sorted(
        [("translator", Decimal("0.020000"))] * 3
        + [("translator (validator)", Decimal("0.010000"))] * 3
        + [("tone", Decimal("0.030000")), ("tone (validator)", Decimal("0.010000"))]
        + [("terms", Decimal("0.040000")), ("publisher", Decimal("0.050000"))]
    )
    assert run.spent_usd == Decimal("0.220000")
    # Each validator graded its own branch's prompt, rendered with its phrase.
    graded = run.steps.filter(agent="translator", role="validator").order_by("branch_index")
    assert [step.validation["prompt"] for step in graded] == [
        f"Translate phrase {index} of the listing into French: {phrase}" for index, phrase in enumerate(PHRASES)
    ]
    passed = [without_step(payload) for payload in payloads(run, EventType.AGENT_VALIDATION_PASSED)]
    assert sorted(passed, key=lambda payload: payload["branch"]) == [
        {"agent": "translator", "group": "translations", "branch": key, "errored": False} for key in "012"
    ] + [{"agent": "tone", "group": "reviews", "branch": "tone", "errored": False}]
    completed = payloads(run, EventType.GROUP_COMPLETED)
    assert completed == [
        {"group": "translations", "succeeded": 3, "failed": 0},
        {"group": "reviews", "succeeded": 2, "failed": 0},
    ]
    assert_invariants(run)


def test_a_branch_that_fails_its_validation_is_written_again_and_the_result_holds_the_re_run_s_output(
    api, team, celery_worker, monkeypatch
):
    model = use_model(monkeypatch, Model(fails=lambda request: is_validator(request) and PHRASES[1] in request.prompt))
    upload(api)

    run = start(api)

    assert run.status == "completed", run.error
    found = chains(api, run)
    assert found[("translations", "1")] == [
        ("translator", "", "succeeded"),
        ("translator", "validator", "succeeded"),
        ("translator", "rerun", "succeeded"),
    ]
    assert found[("translations", "0")] == found[("translations", "2")] == [
        ("translator", "", "succeeded"),
        ("translator", "validator", "succeeded"),
    ]
    assert found[("reviews", "tone")] == [("tone", "", "succeeded"), ("tone", "validator", "succeeded"), ("tone", "rerun", "succeeded")]
    # In item order, the re-run's output in its item's place; the parallel group's by agent.
    assert run.output["lines"] == [DRAFT, FIXED, DRAFT]
    assert run.output["opening"] == CALM["line"]
    assert run.checkpoints.latest().outputs["reviews"]["outputs"] == {"tone": CALM, "terms": {"forbidden": []}}
    # The re-run was asked its own phrase again, with the validator's feedback.
    [rerun_prompt] = [prompt for prompt in model.prompts if "## Validation feedback" in prompt and "phrase 1" in prompt]
    assert rerun_prompt.startswith(f"Translate phrase 1 of the listing into French: {PHRASES[1]}")
    assert "- Say 'waterproof' as a shopper would" in rerun_prompt
    failed = [without_step(payload) for payload in payloads(run, EventType.AGENT_VALIDATION_FAILED)]
    assert sorted(failed, key=lambda payload: payload["agent"]) == [
        {"agent": "tone", "group": "reviews", "branch": "tone", "issues": TONE_ISSUES, "will_retry": True},
        {
            "agent": "translator",
            "group": "translations",
            "branch": "1",
            "issues": ["Say 'waterproof' as a shopper would"],
            "will_retry": True,
        },
    ]
    # 0.22 with every output passed, plus a translator's re-run and tone's.
    assert run.spent_usd == Decimal("0.270000")
    assert run.iterations == 6
    assert_invariants(run)


def test_a_validator_whose_call_fails_leaves_the_output_standing_and_a_fail_fast_group_goes_on(
    api, team, celery_worker, monkeypatch
):
    use_model(monkeypatch, Model(broken=lambda request: is_validator(request) and "Translate phrase" in request.prompt))
    upload(api, tone_passes=True)

    run = start(api)

    assert run.status == "completed", run.error
    found = chains(api, run)
    for key in "012":
        assert found[("translations", key)] == [("translator", "", "succeeded"), ("translator", "validator", "failed")]
    assert run.output["lines"] == [DRAFT] * 3
    [completed, _] = payloads(run, EventType.GROUP_COMPLETED)
    assert completed == {"group": "translations", "succeeded": 3, "failed": 0}  # fail_fast, and nothing failed
    passed = [payload for payload in payloads(run, EventType.AGENT_VALIDATION_PASSED) if payload["agent"] == "translator"]
    assert sorted(payload["branch"] for payload in passed) == ["0", "1", "2"]
    assert all(payload["errored"] and payload["error"]["type"] == "ProviderError" for payload in passed)
    assert run.spent_usd == Decimal("0.190000")  # failed calls that reported no usage cost nothing
    assert_invariants(run)


def test_a_re_run_that_fails_leaves_the_graded_output_standing_and_its_group_succeeds(
    api, team, celery_worker, monkeypatch
):
    use_model(monkeypatch, Model(broken=lambda request: "## Validation feedback" in request.prompt))
    upload(api)

    run = start(api)

    assert run.status == "completed", run.error
    assert chains(api, run)[("reviews", "tone")] == [
        ("tone", "", "succeeded"),
        ("tone", "validator", "succeeded"),
        ("tone", "rerun", "failed"),
    ]
    assert run.output["opening"] == LOUD["line"]
    assert payloads(run, EventType.GROUP_COMPLETED)[1] == {"group": "reviews", "succeeded": 2, "failed": 0}
    [_, rerun_failed] = payloads(run, EventType.AGENT_VALIDATION_FAILED)
    assert (rerun_failed["group"], rerun_failed["branch"], rerun_failed["will_retry"]) == ("reviews", "tone", False)
    assert rerun_failed["rerun_error"]["type"] == "ProviderError"
    assert_invariants(run)


def test_an_enforce_budget_stops_at_a_branch_s_validator_and_a_resume_goes_on_without_repeating_a_call(
    api, team, celery_worker
):
    upload(api)

    # Two translations fit ($0.20 reserved each, $0.02 spent each); their validators do not ($0.04
    # spent + $0.512 > $0.50): the first to reach the gate stops the run, and the other waits with it.
    run = start(api, budget_usd="0.50")

    assert run.status == "budget_exceeded"
    assert chains(api, run) == {
        ("translations", "0"): [("translator", "", "succeeded"), ("translator", "validator", "blocked")],
        ("translations", "1"): [("translator", "", "succeeded"), ("translator", "validator", "blocked")],
    }
    assert (run.error["type"], run.error["current_agent"]) == ("BudgetExceededError", "translator")
    [exceeded] = payloads(run, EventType.BUDGET_EXCEEDED)
    assert (exceeded["spent_usd"], exceeded["projected_usd"]) == ("0.040000", "0.552000")
    checkpoint = run.checkpoints.latest()  # at whichever validator's step the broker delivered first
    assert (checkpoint.next_step.role, checkpoint.next_step.status, checkpoint.next_agent) == (
        "validator",
        "blocked",
        "translations",
    )
    assert run.spent_usd == Decimal("0.040000")
    assert_invariants(run)

    refused = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "0.55", "reason": "a bit more"}, format="json")
    assert refused.status_code == 409
    resumed = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "2", "reason": "grade them"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output["lines"] == [DRAFT] * 3
    assert run.output["opening"] == CALM["line"]
    # No call was made twice: one attempt and one ledger entry per step.
    assert set(run.steps.values_list("attempts", flat=True)) == {1}
    assert LedgerEntry.objects.filter(run=run).count() == run.steps.count() == 11
    assert sorted(ledger(run)) == sorted(
        [("translator", Decimal("0.020000"))] * 3
        + [("translator (validator)", Decimal("0.010000"))] * 3
        + [("tone", Decimal("0.030000"))] * 2
        + [("tone (validator)", Decimal("0.010000")), ("terms", Decimal("0.040000")), ("publisher", Decimal("0.050000"))]
    )
    assert run.spent_usd == Decimal("0.250000")  # spend kept across the resume
    assert_invariants(run)


def test_audit_mode_reports_at_a_branch_s_validator_where_enforce_would_stop_and_goes_on(api, team, celery_worker):
    upload(api)

    run = start(api, budget_usd="0.50", budget_mode="audit")

    assert run.status == "completed", run.error
    [exceeded] = payloads(run, EventType.BUDGET_EXCEEDED)
    assert (exceeded["budget_mode"], exceeded["current_agent"], exceeded["projected_usd"]) == ("audit", "translator", "0.552000")
    first_graded = run.events.filter(type=EventType.AGENT_COMPLETED, payload__role="validator").order_by("id").first()
    assert first_graded.payload["group"] == "translations"
    assert run.events.get(type=EventType.BUDGET_EXCEEDED).pk < first_graded.pk
    assert run.spent_usd == Decimal("0.250000")
    assert LedgerEntry.objects.filter(run=run).count() == 11
    assert_invariants(run)


def test_a_resume_after_a_fail_fast_failure_runs_the_failed_branch_again_but_no_validator_that_failed_open(
    api, team, celery_worker, monkeypatch
):
    failed_once = []

    def broken(request) -> bool:
        if is_validator(request):
            return PHRASES[0] in request.prompt  # the first phrase's grade fails, open
        if PHRASES[2] in request.prompt and not failed_once:
            failed_once.append(request.prompt)  # the third translation fails once, and fails the group
            return True
        return False

    model = use_model(monkeypatch, Model(broken=broken))
    upload(api, tone_passes=True)
    run = start(api)
    assert run.status == "failed"
    assert (run.error["group"], run.error["branch"]) == ("translations", "2")
    [first_grade] = run.steps.filter(role="validator", branch_key="0")
    assert first_grade.status == "failed"

    resumed = api.post(f"/api/v1/runs/{run.pk}/resume", {"reason": "the model is back"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    first_grade.refresh_from_db()
    assert (first_grade.status, first_grade.attempts) == ("failed", 1)  # not graded again
    grades = [prompt for prompt in model.prompts if PHRASES[0] in prompt and "What the agent was asked" in prompt]
    assert len(grades) == 1
    assert run.steps.get(role="", branch_key="2").attempts == 2
    assert run.output["lines"] == [DRAFT] * 3
    assert_invariants(run)
