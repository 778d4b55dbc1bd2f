"""Groups inside a sub-workflow, on a real worker, with the supplier-brief pair in this folder: the
brief's `scan` step runs supplier-quotes, whose for_each group asks three suppliers two at a time
and whose parallel group then checks the quotes. The groups run inside the sub-workflow's frame:
their steps are the run's own, named by path (`scan/quotes`, `scan/quoter`), gated and charged to
the run's one ledger, and their results are what the sub-workflow's templates and output see.

Prices (input free, output $1,000 per million tokens; every step reserves $0.10, its 100-token cap):
a quote costs $0.02, risk $0.03, pricing $0.04 (its validator's verdict as much, when it has one),
the brief $0.05."""

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.conductor.test_group_validator import Model, use_model
from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.errors import DefinitionInvalid
from workflows.models import EventType, LedgerEntry
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")
HERE = Path(__file__).parent
QUOTES = (HERE / "supplier_quotes.yaml").read_text()
BRIEF = (HERE / "supplier_brief.yaml").read_text()
SUPPLIERS = ["Acme", "Bolt & Co", "Cogs Ltd"]
COMPLETED = {"brief": "Buy from the first supplier.", "quotes": [{"usd": 12}] * 3, "risk": "low", "fair": True}
# In the order a serial worker charges them: the quotes, the checks, then the brief.
CHARGED = (
    [("scan/quoter", Decimal("0.020000"))] * 3
    + [("scan/risk", Decimal("0.030000")), ("scan/pricing", Decimal("0.040000")), ("brief", Decimal("0.050000"))]
)


def upload(api, quotes=QUOTES, brief=BRIEF):
    for source in (quotes, brief):
        response = api.post("/api/v1/workflows", {"definition": source}, format="json")
        assert response.status_code == 201, response.json()


def start(api, **limits):
    body = {"workflow": "supplier-brief", "inputs": {"part": "M8 bolt", "suppliers": SUPPLIERS}}
    response = api.post("/api/v1/runs", {**body, "limits": limits} if limits else body, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *TERMINAL)


def resume(api, run, **limits):
    response = api.post(f"/api/v1/runs/{run.pk}/resume", {"reason": "more room", **limits}, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(run.pk, *TERMINAL)


def ledger(run) -> list[tuple]:
    return list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", "cost_usd"))


def steps(run) -> list[tuple]:
    return list(run.steps.order_by("sequence").values_list("agent", "role", "group", "branch_key", "status"))


def payloads(run, event_type) -> list[dict]:
    return [event.payload for event in run.events.filter(type=event_type).order_by("id")]


def test_groups_run_inside_the_subworkflow_and_its_output_carries_their_results(api, team, celery_worker, monkeypatch):
    model = use_model(monkeypatch, Model())
    upload(api)

    run = start(api)

    assert run.status == "completed", run.error
    assert run.output == COMPLETED
    assert steps(run) == [
        ("scan", "", "", "", "succeeded"),
        ("scan/quoter", "", "scan/quotes", "0", "succeeded"),
        ("scan/quoter", "", "scan/quotes", "1", "succeeded"),
        ("scan/quoter", "", "scan/quotes", "2", "succeeded"),  # created when a slot freed: two at a time
        ("scan/risk", "", "scan/checks", "risk", "succeeded"),
        ("scan/pricing", "", "scan/checks", "pricing", "succeeded"),
        ("brief", "", "", "", "succeeded"),
    ]
    assert run.steps.get(agent="scan").output == {"part": "M8 bolt", "suppliers": SUPPLIERS}  # the inputs it bound
    # Each branch saw the sub-workflow's inputs and its own item; the checks saw the quotes' result.
    assert sorted(prompt for prompt in model.prompts if prompt.startswith("Quote")) == [
        f"Quote M8 bolt from {supplier} (supplier {index}, key {index})." for index, supplier in enumerate(SUPPLIERS)
    ]
    assert "Rate the risk of buying M8 bolt from 3 suppliers." in model.prompts
    assert "Are these prices fair for M8 bolt: 12, 12, 12?" in model.prompts
    assert "3 suppliers asked,\n3 quoted, risk low, fair prices: True." in model.prompts[-1]
    assert sorted(ledger(run)) == sorted(CHARGED)
    assert run.spent_usd == Decimal("0.180000")
    assert run.iterations == 7  # the scan step, three quotes, two checks, the brief
    assert payloads(run, EventType.GROUP_COMPLETED) == [
        {"group": "scan/quotes", "succeeded": 3, "failed": 0},
        {"group": "scan/checks", "succeeded": 2, "failed": 0},
    ]
    # Once the sub-workflow ended, its output is the step's, and the frame's outputs left with it.
    outputs = run.checkpoints.order_by("-id").first().outputs
    assert outputs["scan"] == {"quotes": [{"usd": 12}] * 3, "quoted": 3, "risk": "low", "fair": True}
    assert not [name for name in outputs if "/" in name]
    assert_invariants(run)


def test_an_enforce_stop_at_a_branch_inside_the_subworkflow_resumes_there_paying_for_nothing_twice(
    api, team, celery_worker
):
    upload(api)

    # $0.13: two quotes pass the gate ($0.10 reserved each, $0.02 spent each); the third would
    # project $0.04 + $0.10 and is stopped before its call.
    run = start(api, budget_usd="0.13")

    assert run.status == "budget_exceeded", run.error
    assert run.current_agent == "scan/quotes"
    assert run.error["current_agent"] == "scan/quoter"
    assert run.spent_usd == Decimal("0.040000")
    assert ledger(run) == CHARGED[:2]
    assert [(agent, key, status) for agent, _, _, key, status in steps(run)] == [
        ("scan", "", "succeeded"),
        ("scan/quoter", "0", "succeeded"),
        ("scan/quoter", "1", "succeeded"),
        ("scan/quoter", "2", "blocked"),
    ]
    assert run.reserved_usd == Decimal("0")

    run = resume(api, run, budget_usd="1")

    assert run.status == "completed", run.error
    assert run.output == COMPLETED
    assert sorted(ledger(run)) == sorted(CHARGED)  # each call once
    assert run.spent_usd == Decimal("0.180000")
    assert run.steps.count() == 7
    assert_invariants(run)


def test_continue_on_error_inside_the_subworkflow_goes_on_without_the_failed_item(api, team, celery_worker, monkeypatch):
    use_model(monkeypatch, Model(broken=lambda request: "Bolt & Co" in request.prompt))
    upload(api, quotes=QUOTES.replace("    failure_mode: fail_fast\n    agent:", "    failure_mode: continue_on_error\n    agent:"))

    run = start(api)

    assert run.status == "completed", run.error
    assert run.output == {**COMPLETED, "quotes": [{"usd": 12}] * 2}
    failed = run.steps.get(agent="scan/quoter", branch_key="1")
    assert (failed.status, failed.group) == ("failed", "scan/quotes")
    assert payloads(run, EventType.GROUP_COMPLETED)[0] == {"group": "scan/quotes", "succeeded": 2, "failed": 1}
    # The failed call is charged nothing (the fake reports no usage for it); the others are.
    assert run.spent_usd == sum(cost for _, cost in ledger(run))
    assert [agent for agent, _ in ledger(run)].count("scan/quoter") == 2
    assert_invariants(run)


def test_fail_fast_inside_the_subworkflow_fails_the_run_naming_the_group_by_its_path(api, team, celery_worker, monkeypatch):
    use_model(monkeypatch, Model(broken=lambda request: request.prompt.startswith("Rate the risk")))
    upload(api)

    run = start(api)

    assert run.status == "failed"
    assert (run.error["type"], run.error["group"], run.error["branch"]) == ("ProviderError", "scan/checks", "risk")
    assert not run.steps.filter(agent="brief").exists()
    assert_invariants(run)


def test_a_parallel_group_inside_the_subworkflow_is_refused_whole_past_max_iterations(api, team, celery_worker):
    upload(api)

    # The scan step and three quotes are 4; the checks would make 6.
    run = start(api, max_iterations=5)

    assert run.status == "iteration_limit", run.error
    assert run.current_agent == "scan/checks"
    checks = list(run.steps.filter(group="scan/checks").order_by("branch_index").values_list("agent", "status"))
    assert checks == [("scan/risk", "blocked"), ("scan/pricing", "blocked")]  # neither ran
    assert [agent for agent, _ in ledger(run)] == ["scan/quoter"] * 3
    refused = api.post(f"/api/v1/runs/{run.pk}/resume", {"reason": "no more room", "max_iterations": 5}, format="json")
    assert refused.status_code == 409, refused.json()
    assert "the group 'scan/checks' would run 2 steps after the 4 executed" in refused.json()["error"]["message"]

    run = resume(api, run, max_iterations=7)

    assert run.status == "completed", run.error
    assert run.output == COMPLETED
    assert sorted(ledger(run)) == sorted(CHARGED)
    assert_invariants(run)


def test_a_validator_on_a_group_agent_grades_its_branch_inside_the_subworkflow(api, team, celery_worker, monkeypatch):
    model = use_model(monkeypatch, Model())
    quotes = yaml.safe_load(QUOTES)
    pricing = next(agent for agent in quotes["agents"] if agent["name"] == "pricing")
    pricing["validator"] = {
        "criteria": "Say why.",
        "max_retries": 1,
        "mock": {"output": {"passed": False, "issues": ["Say why"]}, "output_tokens": 40},
    }
    upload(api, quotes=yaml.safe_dump(quotes, sort_keys=False))

    run = start(api)

    assert run.status == "completed", run.error
    assert run.output == {**COMPLETED, "fair": False}  # the re-run's answer is the branch's final output
    chain = list(run.steps.filter(group="scan/checks", branch_key="pricing").order_by("sequence").values_list("agent", "role"))
    assert chain == [("scan/pricing", ""), ("scan/pricing", "validator"), ("scan/pricing", "rerun")]
    graded = run.steps.get(agent="scan/pricing", role="validator")
    assert graded.validation["prompt"] == "Are these prices fair for M8 bolt: 12, 12, 12?"
    assert [prompt for prompt in model.prompts if "Say why" in prompt]  # the re-run was told the issues
    assert sorted(ledger(run)) == sorted(
        CHARGED + [("scan/pricing (validator)", Decimal("0.040000")), ("scan/pricing", Decimal("0.040000"))]
    )
    assert run.iterations == 7  # the validator's call and the re-run count for none
    assert_invariants(run)


def test_an_empty_for_each_inside_the_subworkflow_ends_at_once_and_the_run_goes_on(api, team, celery_worker):
    upload(api)
    body = {"workflow": "supplier-brief", "inputs": {"part": "M8 bolt", "suppliers": []}}
    response = api.post("/api/v1/runs", body, format="json")
    assert response.status_code == 202, response.json()

    run = wait_for_run(response.json()["id"], *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output == {**COMPLETED, "quotes": []}
    assert sorted(agent for agent, _ in ledger(run)) == ["brief", "scan/pricing", "scan/risk"]
    assert_invariants(run)


ROUND = """
workflow:
  name: buying-round
  entry_point: round
  input: {part: {type: string}, suppliers: {type: array}}
  runtime: {provider: fake, default_model: sim-buyer, max_tokens: 100}
  cost: {pricing: {sim-buyer: {input_per_mtok: 0, output_per_mtok: 1000}}}
agents:
  - name: round
    type: workflow
    workflow: ./supplier-brief.yaml
output:
  brief: "{{ round.output.brief }}"
  risk: "{{ round.output.risk }}"
"""


def test_groups_two_sub_workflows_deep_are_named_by_their_whole_path(api, team, celery_worker):
    upload(api)
    response = api.post("/api/v1/workflows", {"definition": ROUND}, format="json")
    assert response.status_code == 201, response.json()
    body = {"workflow": "buying-round", "inputs": {"part": "M8 bolt", "suppliers": SUPPLIERS}}
    response = api.post("/api/v1/runs", body, format="json")
    assert response.status_code == 202, response.json()

    run = wait_for_run(response.json()["id"], *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output == {"brief": COMPLETED["brief"], "risk": "low"}
    assert sorted(ledger(run)) == sorted((f"round/{agent}", cost) for agent, cost in CHARGED)
    assert [payload["group"] for payload in payloads(run, EventType.GROUP_COMPLETED)] == ["round/scan/quotes", "round/scan/checks"]
    assert_invariants(run)


# Upload refusals need no worker.
upload_only = pytest.mark.django_db


@upload_only
def test_a_subworkflow_cannot_read_a_group_of_its_caller(team):
    workflow_create(team=team, definition=QUOTES)
    caller = yaml.safe_load(BRIEF)
    inline = yaml.safe_load(QUOTES)
    inline["agents"][0]["prompt"] = "Rate the risk given {{ offers.outputs }}."
    caller["agents"][0]["workflow"] = inline
    caller["agents"][0]["routes"] = [{"to": "offers"}]
    caller["agents"][1]["prompt"] = "Brief on {{ offers.outputs | length }} offers."
    caller["for_each"] = [
        {"name": "offers", "source": "workflow.input.suppliers", "agent": {"prompt": "Offer from {{ item }}"}, "routes": [{"to": "brief"}]}
    ]

    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=yaml.safe_dump(caller, sort_keys=False))

    [problem] = refused.value.details
    assert problem["path"] == "agents[0].workflow.agents[0].prompt"
    assert "offers" in problem["message"]


def _group_renamed(source, name):
    return (
        source.replace("entry_point: quotes", f"entry_point: {name}")
        .replace("  - name: quotes\n", f"  - name: {name}\n")
        .replace("{{ quotes.", f"{{{{ {name}.")
    )


@upload_only
@pytest.mark.parametrize(
    ("quotes", "step_chars"),
    [
        (_group_renamed(QUOTES, "g" * 98), 90),  # the group's own path
        (QUOTES.replace("name: quoter", "name: " + "b" * 100), 88),  # its branches' agent's
    ],
)
def test_a_group_or_branch_agent_whose_path_is_too_long_is_refused_at_upload(team, quotes, step_chars):
    workflow_create(team=team, definition=quotes)

    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=BRIEF.replace("scan", "s" * step_chars))

    assert any("reach 189 characters" in d["message"] for d in refused.value.details), refused.value.details
    workflow_create(team=team, definition=BRIEF.replace("scan", "s" * (step_chars - 1)))  # 188 fit
