"""What a step's templates see (services/steps/prepare.py): the workflow's name, the run's progress and,
for a workflow that reads it, its budget, the team's period included; a route sees the step it ends
counted and charged."""

from decimal import Decimal

from tests.invariants import assert_invariants
from workflows.providers import CompletionResult
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.teams import team_budgets_update
from workflows.services.workflows import workflow_create

# $0.10 a step (1000 output tokens at $100 per 1M). The drafter goes again until less than $0.10 is left.
THRIFTY = """
workflow:
  name: thrifty
  entry_point: drafter
  runtime: {provider: fake, default_model: sim-model, max_tokens: 1000}
  limits: {budget_usd: "0.25", budget_mode: audit}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - name: drafter
    prompt: >-
      Pass {{ context.iteration }} of {{ workflow.name }}: {{ budget.spent_usd }} spent,
      {{ budget.remaining_usd }} of {{ budget.budget_usd }} left ({{ budget.mode }}); team {{ budget.team_remaining_usd }}.
    routes:
      - {to: $end, when: "budget_remaining_usd < 0.1"}
      - {to: drafter}
output:
  spent: "{{ budget.spent_usd }}"
  steps: "{{ context.iteration }}"
"""


def test_prompts_and_routes_see_the_run_and_its_budget_to_the_micro_dollar(team):
    team_budgets_update(team=team, changes={"period_budget_usd": "5", "period_mode": "audit"}, actor="tests")
    version = workflow_create(team=team, definition=THRIFTY)
    assert (version.definition["reads_budget"], version.definition["reads_team_budget"]) == (True, True)
    run = run_start(team=team, workflow=version.workflow_id)

    prompts = []
    while (step := run.steps.filter(status="pending").first()) is not None:
        attempt = step_begin(step_id=step.pk, worker="host:1")
        prompts.append(attempt.prepared.request.prompt)
        step_settle(attempt=attempt, result=CompletionResult(output={"draft": "d"}, input_tokens=0, output_tokens=1000))

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert prompts == [
        "Pass 0 of thrifty: 0.000000 spent, 0.250000 of 0.250000 left (audit); team 5.000000.",
        "Pass 1 of thrifty: 0.100000 spent, 0.150000 of 0.250000 left (audit); team 4.900000.",
    ]
    # The second step's route saw its own $0.10 charged: $0.05 left, so the run ended.
    assert run.output == {"spent": "0.200000", "steps": 2}
    assert run.spent_usd == Decimal("0.200000")
    assert_invariants(run)


def test_a_workflow_that_does_not_read_the_budget_has_none_built(team):
    version = workflow_create(team=team, definition=THRIFTY.replace("budget_remaining_usd < 0.1", "context_iteration >= 2").replace(
        "{{ budget.spent_usd }} spent,\n      {{ budget.remaining_usd }} of {{ budget.budget_usd }} left ({{ budget.mode }}); team {{ budget.team_remaining_usd }}.", "go."
    ).replace('spent: "{{ budget.spent_usd }}"', 'name: "{{ workflow.name }}"'))
    assert (version.definition["reads_budget"], version.definition["reads_team_budget"]) == (False, False)
    run = run_start(team=team, workflow=version.workflow_id)
    while (step := run.steps.filter(status="pending").first()) is not None:
        attempt = step_begin(step_id=step.pk, worker="host:1")
        step_settle(attempt=attempt, result=CompletionResult(output={"draft": "d"}, input_tokens=0, output_tokens=1000))
    run.refresh_from_db()
    assert run.output == {"name": "thrifty", "steps": 2}
