"""A hostile tenant's requests, across every endpoint of workflows/api/urls.py.

Each case is one bad request. It must be refused with a 4xx in the one error shape, leave no row
behind in any table, and, once every case has been sent, both teams' reads and the admin still answer.
"""

import base64
import json
from dataclasses import dataclass, field

import pytest
from django.conf import settings

from tests.security.conftest import TeamWorld, admin_reads, all_ok, row_counts, team_reads

pytestmark = pytest.mark.django_db

JSON = "application/json"
YAML = "application/yaml"
VALID_YAML = """
workflow:
  name: fine
  entry_point: only
  runtime: {provider: fake, default_model: sim-model, max_tokens: 10}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 1}}}
  {extra}
agents:
  - name: only
    prompt: "Hi."
"""


def yaml_with(extra: str) -> str:
    return VALID_YAML.replace("{extra}", extra)


def cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # {run}, {workflow}: the caller's own; {other_run}, {other_workflow}: another team's
    body: object = None  # a dict or list is sent as JSON; str or bytes as they are
    content_type: str = JSON
    headers: dict = field(default_factory=dict)
    authenticated: bool = True


# Stand-ins in a body for the caller's own workflow name, another team's, and another team's workflow id.
OWN_FLOW, OTHER_FLOW, OTHER_WORKFLOW_ID = "OWN-FLOW", "OTHER-FLOW", "OTHER-WORKFLOW-ID"


def run_body(**changes) -> dict:
    return {"workflow": OWN_FLOW, "inputs": {"topic": "tides"}, **changes}


def limits(**values) -> dict:
    return run_body(limits=values)


CASES = [
    # POST /workflows: JSON bodies
    Case("workflow-body-list", "POST", "/api/v1/workflows", []),
    Case("workflow-body-string", "POST", "/api/v1/workflows", '"text"'),
    Case("workflow-no-definition", "POST", "/api/v1/workflows", {}),
    Case("workflow-definition-number", "POST", "/api/v1/workflows", {"definition": 5}),
    Case("workflow-definition-list", "POST", "/api/v1/workflows", {"definition": ["a"]}),
    Case("workflow-unknown-field", "POST", "/api/v1/workflows", {"definition": yaml_with(""), "colour": "red"}),
    Case("workflow-name-too-long", "POST", "/api/v1/workflows", {"definition": yaml_with(""), "name": "n" * 201}),
    Case("workflow-name-digits", "POST", "/api/v1/workflows", {"definition": yaml_with(""), "name": "12345"}),
    Case("workflow-name-nul", "POST", "/api/v1/workflows", {"definition": yaml_with(""), "name": "a\x00b"}),
    Case("workflow-name-surrogate", "POST", "/api/v1/workflows", '{"definition": "workflow: {}", "name": "a\\ud800"}'),
    Case("workflow-definition-nul", "POST", "/api/v1/workflows", {"definition": yaml_with("") + "\x00"}),
    Case("workflow-yaml-surrogate-escape", "POST", "/api/v1/workflows", {"definition": yaml_with('description: "x\\ud800"')}),
    Case("workflow-yaml-nul-escape", "POST", "/api/v1/workflows", {"definition": yaml_with('description: "x\\0"')}),
    Case("workflow-object-surrogate-key", "POST", "/api/v1/workflows", '{"definition": {"workflow": {"\\udc00": 1}}}'),
    Case("workflow-malformed-json", "POST", "/api/v1/workflows", '{"definition": '),
    Case("workflow-json-nan", "POST", "/api/v1/workflows", '{"definition": NaN}'),
    Case("workflow-json-infinity", "POST", "/api/v1/workflows", '{"definition": Infinity}'),
    Case("workflow-json-too-deep", "POST", "/api/v1/workflows", "[" * 100_000 + "]" * 100_000),
    Case("workflow-json-huge-integer", "POST", "/api/v1/workflows", '{"definition": 1' + "0" * 5000 + "}"),
    Case("workflow-yaml-malformed", "POST", "/api/v1/workflows", "workflow: [unclosed", YAML),
    Case("workflow-yaml-not-utf8", "POST", "/api/v1/workflows", b"workflow: \xff\xfe", YAML),
    Case("workflow-yaml-budget-huge", "POST", "/api/v1/workflows", yaml_with("limits: {budget_usd: 1000000000000}"), YAML),
    Case("workflow-yaml-budget-negative", "POST", "/api/v1/workflows", yaml_with("limits: {budget_usd: -1}"), YAML),
    Case("workflow-yaml-budget-nan", "POST", "/api/v1/workflows", yaml_with("limits: {budget_usd: .nan}"), YAML),
    Case("workflow-yaml-budget-inf", "POST", "/api/v1/workflows", yaml_with("limits: {budget_usd: .inf}"), YAML),
    Case("workflow-yaml-timeout-huge", "POST", "/api/v1/workflows", yaml_with("limits: {timeout_seconds: 9223372036854775808}"), YAML),
    Case("workflow-yaml-iterations-huge", "POST", "/api/v1/workflows", yaml_with("limits: {max_iterations: 1000000}"), YAML),
    Case("workflow-yaml-max-tokens-huge", "POST", "/api/v1/workflows", yaml_with("").replace("max_tokens: 10}", "max_tokens: 1000000000000}"), YAML),
    Case("workflow-yaml-limits-list", "POST", "/api/v1/workflows", yaml_with("limits: [1, 2]"), YAML),
    Case(
        "workflow-yaml-price-huge",
        "POST",
        "/api/v1/workflows",
        yaml_with("").replace("output_per_mtok: 1", "output_per_mtok: 1000000000000"),
        YAML,
    ),
    Case(
        "workflow-yaml-price-negative",
        "POST",
        "/api/v1/workflows",
        yaml_with("").replace("output_per_mtok: 1", "output_per_mtok: -1"),
        YAML,
    ),
    Case("workflow-yaml-name-param-nul", "POST", "/api/v1/workflows?name=a%00b", yaml_with(""), YAML),
    Case("workflow-yaml-too-large", "POST", "/api/v1/workflows", "#" * (settings.DEFINITION_MAX_BYTES + 1), YAML),
    Case(
        "workflow-yaml-alias-bomb",
        "POST",
        "/api/v1/workflows",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)),
        YAML,
    ),
    Case("workflow-text-plain", "POST", "/api/v1/workflows", "workflow: {}", "text/plain"),
    Case("workflow-form-encoded", "POST", "/api/v1/workflows", "definition=x", "application/x-www-form-urlencoded"),
    Case("workflow-json-budget-overflow-float", "POST", "/api/v1/workflows", '{"definition": {"workflow": {"limits": {"budget_usd": 1e400}}}}'),
    # GET /workflows and /workflows/{id}
    Case("workflows-cursor-garbage", "GET", "/api/v1/workflows?cursor=%%%"),
    Case("workflows-cursor-position-text", "GET", f"/api/v1/workflows?cursor={cursor('p=abc')}"),
    Case("workflows-cursor-position-huge", "GET", f"/api/v1/workflows?cursor={cursor('p=' + '9' * 30)}"),
    Case("workflows-cursor-offset-negative", "GET", f"/api/v1/workflows?cursor={cursor('o=-1')}"),
    Case("workflows-cursor-not-ascii", "GET", f"/api/v1/workflows?cursor={base64.b64encode('p=١'.encode()).decode()}"),
    Case("workflows-page-size-zero", "GET", "/api/v1/workflows?page_size=0"),
    Case("workflows-page-size-too-big", "GET", "/api/v1/workflows?page_size=201"),
    Case("workflows-page-size-negative", "GET", "/api/v1/workflows?page_size=-5"),
    Case("workflows-page-size-exponent", "GET", "/api/v1/workflows?page_size=1e3"),
    Case("workflows-page-size-nan", "GET", "/api/v1/workflows?page_size=NaN"),
    Case("workflows-query-nul", "GET", "/api/v1/workflows?x=%00"),
    Case("workflow-id-zero", "GET", "/api/v1/workflows/0"),
    Case("workflow-other-team", "GET", "/api/v1/workflows/{other_workflow}"),
    Case("workflow-id-huge", "GET", "/api/v1/workflows/99999999999999999999999"),
    Case("workflow-id-negative", "GET", "/api/v1/workflows/-1"),
    Case("workflow-id-5000-digits", "GET", "/api/v1/workflows/" + "9" * 5000),
    Case("cost-profile-other-team", "GET", "/api/v1/workflows/{other_workflow}/cost-profile"),
    Case("cost-profile-id-huge", "GET", "/api/v1/workflows/99999999999999999999/cost-profile"),
    Case("cost-profile-id-5000-digits", "GET", "/api/v1/workflows/" + "9" * 5000 + "/cost-profile"),
    Case("cost-profile-id-text", "GET", "/api/v1/workflows/abc/cost-profile"),
    Case("workflow-delete", "DELETE", "/api/v1/workflows/{workflow}"),
    Case("workflows-put", "PUT", "/api/v1/workflows", {"definition": "x"}),
    # POST /runs
    Case("run-no-workflow", "POST", "/api/v1/runs", {}),
    Case("run-other-team-workflow-id", "POST", "/api/v1/runs", run_body(workflow=OTHER_WORKFLOW_ID)),
    Case("run-other-team-workflow-name", "POST", "/api/v1/runs", run_body(workflow=OTHER_FLOW)),
    Case("run-workflow-id-huge", "POST", "/api/v1/runs", run_body(workflow="9" * 25)),
    Case("run-workflow-too-long", "POST", "/api/v1/runs", run_body(workflow="9" * 5000)),
    Case("run-workflow-superscript-digit", "POST", "/api/v1/runs", run_body(workflow="²")),
    Case("run-workflow-list", "POST", "/api/v1/runs", run_body(workflow=[])),
    Case("run-workflow-null", "POST", "/api/v1/runs", run_body(workflow=None)),
    Case("run-version-zero", "POST", "/api/v1/runs", run_body(version=0)),
    Case("run-version-huge", "POST", "/api/v1/runs", run_body(version=2**31)),
    Case("run-version-text", "POST", "/api/v1/runs", run_body(version="abc")),
    Case("run-version-fraction", "POST", "/api/v1/runs", run_body(version=1.5)),
    Case("run-inputs-list", "POST", "/api/v1/runs", run_body(inputs=["tides"])),
    Case("run-inputs-string", "POST", "/api/v1/runs", run_body(inputs="tides")),
    Case("run-inputs-missing-required", "POST", "/api/v1/runs", run_body(inputs={})),
    Case("run-inputs-unknown", "POST", "/api/v1/runs", run_body(inputs={"topic": "x", "colour": "red"})),
    Case("run-inputs-nul", "POST", "/api/v1/runs", run_body(inputs={"topic": "ti\x00des"})),
    Case("run-inputs-surrogate", "POST", "/api/v1/runs", '{"workflow": "OWN-FLOW", "inputs": {"topic": "\\ud800"}}'),
    Case("run-inputs-surrogate-key", "POST", "/api/v1/runs", '{"workflow": "OWN-FLOW", "inputs": {"\\udfff": "x"}}'),
    Case("run-inputs-low-surrogate-pair-reversed", "POST", "/api/v1/runs", '{"workflow": "OWN-FLOW", "inputs": {"topic": "\\udc00\\ud800"}}'),
    Case("run-budget-zero", "POST", "/api/v1/runs", limits(budget_usd=0)),
    Case("run-budget-negative", "POST", "/api/v1/runs", limits(budget_usd=-5)),
    Case("run-budget-nan-string", "POST", "/api/v1/runs", limits(budget_usd="NaN")),
    Case("run-budget-infinity-string", "POST", "/api/v1/runs", limits(budget_usd="Infinity")),
    Case("run-budget-overflowing-float", "POST", "/api/v1/runs", '{"workflow": "OWN-FLOW", "inputs": {"topic": "x"}, "limits": {"budget_usd": 1e400}}'),
    Case("run-budget-trillion", "POST", "/api/v1/runs", limits(budget_usd=10**12)),
    Case("run-budget-just-over-bound", "POST", "/api/v1/runs", limits(budget_usd="1000000000.000001")),
    Case("run-budget-1e30-string", "POST", "/api/v1/runs", limits(budget_usd="1e30")),
    Case("run-budget-too-precise", "POST", "/api/v1/runs", limits(budget_usd="1e-7")),
    Case("run-budget-boolean", "POST", "/api/v1/runs", limits(budget_usd=True)),
    Case("run-budget-object", "POST", "/api/v1/runs", limits(budget_usd={"usd": 1})),
    Case("run-iterations-zero", "POST", "/api/v1/runs", limits(max_iterations=0)),
    Case("run-iterations-over-bound", "POST", "/api/v1/runs", limits(max_iterations=501)),
    Case("run-iterations-huge", "POST", "/api/v1/runs", limits(max_iterations=2**63)),
    Case("run-iterations-string", "POST", "/api/v1/runs", limits(max_iterations="10")),
    Case("run-timeout-zero", "POST", "/api/v1/runs", limits(timeout_seconds=0)),
    Case("run-timeout-negative", "POST", "/api/v1/runs", limits(timeout_seconds=-1)),
    Case("run-timeout-int32", "POST", "/api/v1/runs", limits(timeout_seconds=2**31)),
    Case("run-timeout-1e30", "POST", "/api/v1/runs", limits(timeout_seconds=10**30)),
    Case("run-timeout-fraction", "POST", "/api/v1/runs", limits(timeout_seconds=0.5)),
    Case("run-limits-list", "POST", "/api/v1/runs", run_body(limits=[1])),
    Case("run-limits-unknown-key", "POST", "/api/v1/runs", limits(budget=5)),
    Case("run-budget-mode-unknown", "POST", "/api/v1/runs", limits(budget_mode="sometimes")),
    Case("run-unknown-field", "POST", "/api/v1/runs", run_body(priority="high")),
    Case("run-idempotency-key-nul", "POST", "/api/v1/runs", run_body(), headers={"HTTP_IDEMPOTENCY_KEY": "k\x00"}),
    Case("run-idempotency-key-too-long", "POST", "/api/v1/runs", run_body(), headers={"HTTP_IDEMPOTENCY_KEY": "k" * 201}),
    Case("run-idempotency-key-not-ascii", "POST", "/api/v1/runs", run_body(), headers={"HTTP_IDEMPOTENCY_KEY": "clé"}),
    Case("run-idempotency-key-refused-body", "POST", "/api/v1/runs", limits(budget_usd=-1), headers={"HTTP_IDEMPOTENCY_KEY": "k-1"}),
    Case(
        "run-idempotency-key-surrogate-body",
        "POST",
        "/api/v1/runs",
        '{"workflow": "OWN-FLOW", "inputs": {"topic": "\\ud800"}}',
        headers={"HTTP_IDEMPOTENCY_KEY": "k-3"},
    ),
    Case("run-text-plain", "POST", "/api/v1/runs", "workflow=OWN-FLOW", "text/plain"),
    Case("run-form-encoded", "POST", "/api/v1/runs", "workflow=OWN-FLOW", "application/x-www-form-urlencoded"),
    Case("run-multipart", "POST", "/api/v1/runs", "--x\r\n", "multipart/form-data; boundary=x"),
    Case("run-malformed-json", "POST", "/api/v1/runs", '{"workflow": "OWN-FLOW",'),
    Case("run-body-list", "POST", "/api/v1/runs", [run_body()]),
    Case("run-json-huge-integer", "POST", "/api/v1/runs", '{"workflow": "OWN-FLOW", "version": 1' + "0" * 5000 + "}"),
    Case("run-body-too-large", "POST", "/api/v1/runs", '{"workflow": "' + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + '"}'),
    Case("run-header-nul", "POST", "/api/v1/runs", run_body(), headers={"HTTP_X_TRACE": "a\x00"}),
    # GET /runs and a run's reads
    Case("runs-status-unknown", "GET", "/api/v1/runs?status=nope"),
    Case("runs-status-nul", "GET", "/api/v1/runs?status=%00"),
    Case("runs-cursor-garbage", "GET", "/api/v1/runs?cursor=abc"),
    Case("runs-cursor-negative-position", "GET", f"/api/v1/runs?cursor={cursor('p=-1')}"),
    Case("runs-cursor-reverse-garbage", "GET", f"/api/v1/runs?cursor={cursor('r=x')}"),
    Case("runs-page-size-huge", "GET", "/api/v1/runs?page_size=100000000000000000000"),
    Case("run-other-team", "GET", "/api/v1/runs/{other_run}"),
    Case("run-id-zero", "GET", "/api/v1/runs/0"),
    Case("run-id-beyond-bigint", "GET", "/api/v1/runs/9223372036854775808"),
    Case("run-events-other-team", "GET", "/api/v1/runs/{other_run}/events"),
    Case("run-ledger-other-team", "GET", "/api/v1/runs/{other_run}/ledger"),
    Case("run-steps-other-team", "GET", "/api/v1/runs/{other_run}/steps"),
    Case("run-checkpoints-other-team", "GET", "/api/v1/runs/{other_run}/checkpoints"),
    Case("run-events-cursor-garbage", "GET", "/api/v1/runs/{run}/events?cursor=!!"),
    Case("run-ledger-page-size-zero", "GET", "/api/v1/runs/{run}/ledger?page_size=0"),
    Case("run-steps-cursor-huge", "GET", f"/api/v1/runs/{{run}}/steps?cursor={cursor('p=' + '9' * 40)}"),
    Case("run-checkpoints-page-size-text", "GET", "/api/v1/runs/{run}/checkpoints?page_size=all"),
    Case("run-ledger-id-5000-digits", "GET", "/api/v1/runs/" + "9" * 5000 + "/ledger"),
    # POST /runs/{id}/resume and /cancel
    Case("resume-other-team", "POST", "/api/v1/runs/{other_run}/resume", {"budget_usd": 5}),
    Case("resume-budget-negative", "POST", "/api/v1/runs/{run}/resume", {"budget_usd": -1}),
    Case("resume-budget-trillion", "POST", "/api/v1/runs/{run}/resume", {"budget_usd": 10**12}),
    Case("resume-budget-nan", "POST", "/api/v1/runs/{run}/resume", {"budget_usd": "nan"}),
    Case("resume-iterations-huge", "POST", "/api/v1/runs/{run}/resume", {"max_iterations": 10**9}),
    Case("resume-timeout-huge", "POST", "/api/v1/runs/{run}/resume", {"timeout_seconds": 2**40}),
    Case("resume-reason-too-long", "POST", "/api/v1/runs/{run}/resume", {"reason": "r" * 2001}),
    Case("resume-reason-nul", "POST", "/api/v1/runs/{run}/resume", {"reason": "why\x00"}),
    Case("resume-budget-mode-number", "POST", "/api/v1/runs/{run}/resume", {"budget_mode": 5}),
    Case("resume-unknown-field", "POST", "/api/v1/runs/{run}/resume", {"budget": 5}),
    Case("resume-id-huge", "POST", "/api/v1/runs/99999999999999999999999/resume", {}),
    Case("resume-malformed-json", "POST", "/api/v1/runs/{run}/resume", "{"),
    Case("resume-idempotency-key-refused", "POST", "/api/v1/runs/{run}/resume", {}, headers={"HTTP_IDEMPOTENCY_KEY": "k-2"}),
    Case("resume-queued-run", "POST", "/api/v1/runs/{run}/resume", {"budget_usd": 5, "reason": "more"}),
    Case("cancel-other-team", "POST", "/api/v1/runs/{other_run}/cancel", {}),
    Case("cancel-reason-surrogate", "POST", "/api/v1/runs/{run}/cancel", '{"reason": "\\ud83d"}'),
    Case("cancel-reason-list", "POST", "/api/v1/runs/{run}/cancel", {"reason": ["a"]}),
    Case("cancel-unknown-field", "POST", "/api/v1/runs/{run}/cancel", {"force": True}),
    Case("cancel-id-huge", "POST", "/api/v1/runs/9223372036854775808/cancel", {}),
    Case("cancel-get", "GET", "/api/v1/runs/{run}/cancel"),
    # GET /team and /spend
    Case("team-query-nul", "GET", "/api/v1/team?x=%00"),
    Case("team-post", "POST", "/api/v1/team", {"name": "other"}),
    Case("spend-group-by-unknown", "GET", "/api/v1/spend?group_by=nope"),
    Case("spend-since-bad-month", "GET", "/api/v1/spend?since=2024-13-01"),
    Case("spend-since-text", "GET", "/api/v1/spend?since=yesterday"),
    Case("spend-dates-reversed", "GET", "/api/v1/spend?since=2025-02-01&until=2025-01-01"),
    Case("spend-format-unknown", "GET", "/api/v1/spend?format=xml"),
    Case("spend-csv-bad-group", "GET", "/api/v1/spend?format=csv&group_by=nope"),
    Case("spend-until-nul", "GET", "/api/v1/spend?until=%00"),
    Case("spend-group-by-surrogate-bytes", "GET", "/api/v1/spend?group_by=%ED%A0%80"),
    # authentication
    Case("no-api-key", "GET", "/api/v1/runs", authenticated=False),
    Case("unknown-api-key", "GET", "/api/v1/runs", headers={"HTTP_AUTHORIZATION": "Bearer bsk_nope"}, authenticated=False),
    Case("api-key-three-words", "GET", "/api/v1/team", headers={"HTTP_AUTHORIZATION": "Bearer a b"}, authenticated=False),
    Case("api-key-nul", "GET", "/api/v1/team", headers={"HTTP_AUTHORIZATION": "Bearer bsk_\x00"}, authenticated=False),
    Case("unknown-endpoint", "GET", "/api/v1/budgets"),
]


def send(case: Case, *, caller: TeamWorld, other: TeamWorld):
    ids = {"run": caller.run_id, "workflow": caller.workflow_id, "other_run": other.run_id, "other_workflow": other.workflow_id}
    path = case.path.format(**ids) if "{" in case.path else case.path
    data = json.dumps(case.body) if isinstance(case.body, (dict, list)) else case.body
    if isinstance(data, str):
        names = {OWN_FLOW: f"{caller.team.name}-flow", OTHER_FLOW: f"{other.team.name}-flow"}
        for stand_in, value in {**names, OTHER_WORKFLOW_ID: str(other.workflow_id)}.items():
            data = data.replace(stand_in, value)
    client = caller.api if case.authenticated else type(caller.api)()
    if case.method == "GET":
        return client.get(path, **case.headers)
    return client.generic(case.method, path, data or "", content_type=case.content_type, **case.headers)


def assert_refused(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:500])
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    assert isinstance(error["type"], str) and error["type"] and isinstance(error["message"], str)


def test_the_cases_are_many_and_distinct():
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)
    assert len({(case.method, case.path, repr(case.body), case.content_type, repr(case.headers)) for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_hostile_request_is_refused_in_the_error_shape_and_leaves_no_row(case, acme, globex):
    before = row_counts()

    response = send(case, caller=acme, other=globex)

    assert_refused(response)
    assert row_counts() == before


def test_after_every_hostile_request_both_teams_and_the_admin_still_read(acme, globex, admin_client):
    for case in CASES:
        assert_refused(send(case, caller=acme, other=globex))
        assert_refused(send(case, caller=globex, other=acme))

    assert all_ok(team_reads(acme)) == {}
    assert all_ok(team_reads(globex)) == {}
    assert all_ok(admin_reads(admin_client)) == {}
