"""Conductor's `type: workflow` steps, written as a conductor user would, on a real worker: another
workflow of the team run as a black box inside the run, its steps gated and charged as the run's own,
its spend in the run's one ledger, and a budget stop inside it resumed where it stopped."""

from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.definition import WorkflowDefinition
from workflows.errors import DefinitionInvalid
from workflows.models import LedgerEntry, WorkflowVersion
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

# A sub-workflow of two paid agents; $0.01 per 100 output tokens, nothing for input.
LOOKUP = """
workflow:
  name: lookup
  entry_point: search
  input:
    question: {type: string, required: true}
    depth: {type: integer, default: 1}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - name: search
    prompt: "Search for {{ workflow.input.question }} to depth {{ workflow.input.depth }}."
    mock: {output: {hits: 3}, output_tokens: 100}
    routes: [{to: answer}]
  - name: answer
    prompt: "Answer {{ workflow.input.question }} from {{ search.output.hits }} hits ({{ workflow.name }})."
    mock: {output: {answer: forty-two}, output_tokens: 100}
output:
  answer: "{{ answer.output.answer }}"
  hits: "{{ search.output.hits }}"
"""

REPORT = """
workflow:
  name: report
  entry_point: research
  input:
    topic: {type: string, required: true}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
  limits: {budget_usd: 1, budget_mode: enforce}
agents:
  - name: research
    type: workflow
    workflow: ./lookup.yaml
    input_mapping:
      question: "What is {{ workflow.input.topic }}?"
      depth: "{{ 1 + 1 }}"
    routes: [{to: summarise}]
  - name: summarise
    prompt: "Summarise {{ research.output.answer }} ({{ research.output.hits }} hits)."
    mock: {output: {summary: done}, output_tokens: 100}
output:
  summary: "{{ summarise.output.summary }}"
  answer: "{{ research.output.answer }}"
"""


def upload(api, source):
    response = api.post("/api/v1/workflows", {"definition": source}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def start(api, workflow="report", inputs=None, **extra):
    body = {"workflow": workflow, "inputs": inputs or {"topic": "life"}, **extra}
    response = api.post("/api/v1/runs", body, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def test_a_subworkflow_runs_inside_the_run_gated_and_charged_as_its_own_steps(api, team, celery_worker):
    upload(api, LOOKUP)
    upload(api, REPORT)

    run = wait_for_run(start(api), *TERMINAL)

    assert run.status == "completed", run.error
    steps = list(run.steps.order_by("sequence").values_list("agent", "output"))
    assert steps == [
        ("research", {"question": "What is life?", "depth": 2}),  # the inputs it bound, typed as declared
        ("research/search", {"hits": 3}),
        ("research/answer", {"answer": "forty-two"}),
        ("summarise", {"summary": "done"}),
    ]
    assert run.output == {"summary": "done", "answer": "forty-two"}
    charged = list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", "cost_usd"))
    assert charged == [
        ("research/search", Decimal("0.010000")),
        ("research/answer", Decimal("0.010000")),
        ("summarise", Decimal("0.010000")),
    ]
    assert run.spent_usd == Decimal("0.030000")
    assert run.iterations == 4
    assert_invariants(run)


def test_an_enforce_stop_inside_a_subworkflow_resumes_there_with_its_spend_kept(api, team, celery_worker):
    upload(api, LOOKUP)
    upload(api, REPORT)

    # Room for the sub-workflow's first agent only: the gate stops the run before its second.
    run = wait_for_run(start(api, limits={"budget_usd": "0.015"}), *TERMINAL)

    assert run.status == "budget_exceeded", run.error
    assert run.current_agent == "research/answer"
    assert run.spent_usd == Decimal("0.010000")
    resumed = api.post(f"/api/v1/runs/{run.pk}/resume", {"reason": "top-up", "budget_usd": "1"}, format="json")
    assert resumed.status_code == 202, resumed.json()

    run = wait_for_run(run.pk, "completed", "failed", "budget_exceeded")

    assert run.status == "completed", run.error
    assert run.output == {"summary": "done", "answer": "forty-two"}
    agents = list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", flat=True))
    assert agents == ["research/search", "research/answer", "summarise"]  # nothing paid for twice
    assert run.spent_usd == Decimal("0.030000")
    assert_invariants(run)


def test_a_version_runs_the_subworkflow_it_was_uploaded_with(api, team, celery_worker):
    upload(api, LOOKUP)
    upload(api, REPORT)
    upload(api, LOOKUP.replace("answer: forty-two", "answer: changed"))

    run = wait_for_run(start(api), *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output["answer"] == "forty-two"
    upload(api, REPORT)  # uploading the caller again takes the sub-workflow as it now is
    assert wait_for_run(start(api), *TERMINAL).output["answer"] == "changed"


def test_a_subworkflow_written_inline_runs_the_same_way(api, team, celery_worker):
    inline = REPORT.replace("workflow: ./lookup.yaml", "workflow:\n" + _indented(LOOKUP, 6))
    upload(api, inline)

    run = wait_for_run(start(api), *TERMINAL)

    assert run.status == "completed", run.error
    assert [step.agent for step in run.steps.order_by("sequence")] == [
        "research",
        "research/search",
        "research/answer",
        "summarise",
    ]
    assert_invariants(run)


def test_a_subworkflow_entered_again_starts_afresh_and_its_outputs_stay_its_own(api, team, celery_worker):
    upload(api, LOOKUP)
    twice = REPORT.replace(
        "    routes: [{to: summarise}]\n",
        "    routes:\n      - {to: research, when: '{{ context.iteration < 4 }}'}\n      - {to: summarise}\n",
    )
    upload(api, twice)

    run = wait_for_run(start(api), *TERMINAL)

    assert run.status == "completed", run.error
    agents = [step.agent for step in run.steps.order_by("sequence")]
    assert agents == ["research", "research/search", "research/answer"] * 2 + ["summarise"]
    checkpoint = run.checkpoints.order_by("-id").first()
    assert not [name for name in checkpoint.outputs if "/" in name]  # ended, the sub-workflow left nothing behind
    assert_invariants(run)


def _indented(text, spaces):
    return "\n".join(" " * spaces + line if line else line for line in text.strip("\n").splitlines())


# Upload refusals need no worker.
upload_only = pytest.mark.django_db


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (("./lookup.yaml", "./missing.yaml"), "agents[0].workflow", "no workflow named 'missing'"),
        (("      depth:", "      depth_of:"), "agents[0].input_mapping.depth_of", "takes no input 'depth_of'"),
        (('      question: "What is {{ workflow.input.topic }}?"\n', ""), "agents[0].input_mapping", "needs input 'question'"),
        (("    workflow: ./lookup.yaml", "    workflow: ./lookup.yaml\n    max_depth: 11"), "agents[0].max_depth", "between 1 and 10"),
        (("{{ research.output.answer }} (", "{{ search.output.hits }} ("), "agents[1].prompt", "search"),
    ],
)
def test_a_subworkflow_step_that_cannot_run_is_refused_at_upload_naming_why(team, change, path, message):
    workflow_create(team=team, definition=LOOKUP)
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=REPORT.replace(*change))
    assert any(d["path"] == path and message in d["message"] for d in refused.value.details), refused.value.details


def test_a_subworkflow_with_script_steps_is_refused_where_the_team_may_not_run_scripts(team, settings):
    settings.SCRIPT_STEPS_ENABLED = True
    team.may_run_scripts = True
    team.save()
    scripted = LOOKUP.replace(
        "  - name: answer\n", "  - name: answer_script\n    type: script\n    command: echo\n    routes: [{to: answer}]\n  - name: answer\n"
    ).replace("routes: [{to: answer}]\n  - name: answer_script", "routes: [{to: answer_script}]\n  - name: answer_script")
    workflow_create(team=team, definition=scripted)
    team.may_run_scripts = False
    team.save()

    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=REPORT)

    assert any(
        d["path"] == "agents[0].workflow" and "has script steps" in d["message"] for d in refused.value.details
    ), refused.value.details


def test_inline_subworkflow_problems_are_reported_at_their_path_in_the_caller(team):
    broken = REPORT.replace(
        "    workflow: ./lookup.yaml",
        "    workflow:\n      workflow: {name: inner, entry_point: nowhere, runtime: {provider: fake}}\n"
        "      agents: [{name: only, model: m, prompt: hi}]",
    ).replace("    input_mapping:\n      question: \"What is {{ workflow.input.topic }}?\"\n      depth: \"{{ 1 + 1 }}\"\n", "")

    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=broken)

    assert [d["path"] for d in refused.value.details] == ["agents[0].workflow.workflow.entry_point"]


def test_a_subworkflow_may_not_nest_deeper_than_its_max_depth(team):
    workflow_create(team=team, definition=LOOKUP, name="lookup")
    workflow_create(team=team, definition=REPORT)
    outer = """
workflow:
  name: outer
  entry_point: inner
  input: {topic: {type: string}}
agents:
  - name: inner
    type: workflow
    workflow: report
    max_depth: 1
"""
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=outer)
    assert any("2 deep; at most 1" in d["message"] for d in refused.value.details), refused.value.details
    nested = workflow_create(team=team, definition=outer.replace("    max_depth: 1\n", ""))
    assert isinstance(nested, WorkflowVersion)


def test_what_a_caller_reads_of_a_subworkflow_is_checked_against_its_output_at_upload(team):
    workflow_create(team=team, definition=LOOKUP)

    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=REPORT.replace("{{ research.output.hits }} hits", "{{ research.output.hitz }} hits"))

    [problem] = refused.value.details
    assert problem["path"] == "agents[1].prompt"
    assert "hitz" in problem["message"] and "sub-workflow 'lookup'" in problem["message"], problem


APPROVAL = """
workflow:
  name: approval
  entry_point: ask
  input:
    question: {type: string, required: true}
agents:
  - name: ask
    type: human_gate
    prompt: "{{ workflow.input.question }}"
    options:
      - {label: Approve, value: approve, route: $end}
      - {label: Reject, value: reject, route: $end}
output:
  approved: "{{ ask.output.selected == 'approve' }}"
"""


def test_a_person_answers_a_gate_inside_a_subworkflow_and_the_caller_goes_on(api, team, celery_worker):
    upload(api, APPROVAL)
    upload(
        api,
        """
workflow:
  name: publish
  entry_point: sign_off
  input: {topic: {type: string}}
agents:
  - name: sign_off
    type: workflow
    workflow: approval
    input_mapping: {question: "Publish {{ workflow.input.topic }}?"}
    routes:
      - {to: $end, when: "{{ sign_off.output.approved }}"}
      - {to: refused}
  - name: refused
    type: terminate
    status: failed
    reason: not approved
output:
  approved: "{{ sign_off.output.approved }}"
""",
    )
    run_id = start(api, workflow="publish")
    run = wait_for_run(run_id, "waiting_for_input", *TERMINAL)
    assert (run.status, run.current_agent) == ("waiting_for_input", "sign_off/ask")
    asked = run.events.filter(type="input_requested").last().payload
    assert "Publish life?" in str(asked)

    answered = api.post(f"/api/v1/runs/{run_id}/input", {"choice": "approve"}, format="json")
    assert answered.status_code == 200, answered.json()

    run = wait_for_run(run_id, *TERMINAL)
    assert run.status == "completed", run.error
    assert run.output == {"approved": True}
    assert_invariants(run)


# What a resume onto another version must refuse, and what must be known before anything is spent.

FORWARDING = """
workflow:
  name: loose
  entry_point: warmup
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - name: warmup
    prompt: "Warm up on {{ workflow.input.topic }}."
    mock: {output: {ok: true}, output_tokens: 100}
    routes: [{to: research}]
  - name: research
    type: workflow
    workflow: ./lookup.yaml
output:
  answer: "{{ research.output.answer }}"
"""


def test_inputs_forwarded_to_a_subworkflow_are_required_and_typed_before_anything_is_spent(api, team):
    workflow_create(team=team, definition=LOOKUP)
    workflow_create(team=team, definition=FORWARDING)

    missing = api.post("/api/v1/runs", {"workflow": "loose", "inputs": {"topic": "life"}}, format="json")
    mistyped = api.post("/api/v1/runs", {"workflow": "loose", "inputs": {"topic": "life", "question": 42}}, format="json")

    assert missing.status_code == 400 and "question" in str(missing.json()), missing.json()
    assert mistyped.status_code == 400 and "must be a string" in str(mistyped.json()), mistyped.json()
    typed_caller = FORWARDING.replace("  entry_point: warmup\n", "  entry_point: warmup\n  input:\n    question: {type: integer}\n")
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=typed_caller)
    assert any("takes input 'question' as string" in d["message"] for d in refused.value.details), refused.value.details


def test_what_a_caller_reads_must_be_in_the_output_of_every_way_its_subworkflow_completes(team):
    early_exit = LOOKUP.replace(
        "    routes: [{to: answer}]\n",
        "    routes: [{to: nothing, when: '{{ output.hits == 0 }}'}, {to: answer}]\n"
        "  - {name: nothing, type: terminate, status: success, reason: none, output_template: {hits: '0'}}\n",
    )
    workflow_create(team=team, definition=early_exit)

    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=REPORT)

    assert any("research.output" in d["message"] and "'answer'" in d["message"] for d in refused.value.details), (
        refused.value.details
    )


def test_a_path_longer_than_its_columns_is_refused_at_upload(team):
    long_agent = "a" * 100
    workflow_create(
        team=team,
        definition=LOOKUP.replace("to: answer", f"to: {long_agent}")
        .replace("  - name: answer\n", f"  - name: {long_agent}\n")
        .replace("{{ answer.output.answer }}", f"{{{{ {long_agent}.output.answer }}}}"),
    )
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=REPORT.replace("research", "r" * 100))
    assert any("reach 201 characters" in d["message"] for d in refused.value.details), refused.value.details
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=REPORT.replace("research", "r" * 101))
    assert any("at most 100" in d["message"] for d in refused.value.details), refused.value.details


def test_many_steps_naming_one_large_subworkflow_are_refused_without_building_them_all(team, monkeypatch):
    big = "x" * 200_000
    workflow_create(
        team=team,
        definition=f"workflow: {{name: big, entry_point: a0, runtime: {{provider: fake, default_model: m}}}}\n"
        f"agents:\n  - {{name: a0, prompt: &p \"{big}\", routes: [{{to: a1}}]}}\n  - {{name: a1, prompt: *p}}\n",
    )
    lines = ["workflow: {name: caller, entry_point: s0, runtime: {provider: fake, default_model: m}}", "agents:"]
    lines += [f"  - {{name: s{i}, type: workflow, workflow: big, routes: [{{to: s{i + 1}}}]}}" for i in range(59)]
    lines.append("  - {name: s59, type: workflow, workflow: big}")
    serialised = []
    to_dict = WorkflowDefinition.to_dict
    monkeypatch.setattr(WorkflowDefinition, "to_dict", lambda self: serialised.append(self.name) or to_dict(self))

    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition="\n".join(lines) + "\n")

    assert "the limit" in refused.value.details[0]["message"]
    # 60 copies of 400 kB would be 24 MB built to be measured: the one workflow they name is measured once.
    assert serialised.count("big") == 1


def _stopped_inside(api):
    upload(api, LOOKUP)
    upload(api, REPORT)
    run = wait_for_run(start(api, limits={"budget_usd": "0.015"}), *TERMINAL)
    assert (run.status, run.current_agent) == ("budget_exceeded", "research/answer"), run.error
    return run


def resume_on(api, run, version):
    body = {"workflow_version": version, "reason": "fixed", "budget_usd": "1"}
    return api.post(f"/api/v1/runs/{run.pk}/resume", body, format="json")


def test_a_resume_inside_a_subworkflow_onto_a_version_without_it_is_refused(api, team, celery_worker):
    run = _stopped_inside(api)
    plain = REPORT.replace(
        "    type: workflow\n    workflow: ./lookup.yaml\n    input_mapping:\n"
        '      question: "What is {{ workflow.input.topic }}?"\n      depth: "{{ 1 + 1 }}"\n',
        "    prompt: hi\n    output: {answer: {type: string}, hits: {type: integer}}\n",
    )

    resumed = resume_on(api, run, upload(api, plain)["version"])

    assert resumed.status_code == 400, resumed.content[:300]
    assert "research/answer" in str(resumed.json())


def test_a_resume_inside_a_subworkflow_onto_one_needing_inputs_its_step_did_not_bind_is_refused(api, team, celery_worker):
    run = _stopped_inside(api)
    upload(api, LOOKUP.replace("    depth: {type: integer, default: 1}\n", "    depth: {type: integer, default: 1}\n    lang: {type: string, required: true}\n"))
    report = REPORT.replace('      depth: "{{ 1 + 1 }}"\n', '      depth: "{{ 1 + 1 }}"\n      lang: fr\n')

    resumed = resume_on(api, run, upload(api, report)["version"])

    assert resumed.status_code == 400, resumed.content[:300]
    assert "'research' taking the inputs it bound" in str(resumed.json())
    assert wait_for_run(run.pk, *TERMINAL).spent_usd == Decimal("0.010000")


def test_a_resume_after_a_subworkflow_ended_onto_one_whose_output_lacks_what_follows_reads_is_refused(
    api, team, celery_worker
):
    upload(api, LOOKUP)
    upload(api, REPORT)
    run = wait_for_run(start(api, limits={"budget_usd": "0.025"}), *TERMINAL)
    assert (run.status, run.current_agent) == ("budget_exceeded", "summarise"), run.error
    upload(api, LOOKUP.replace('  answer: "{{ answer.output.answer }}"', '  result: "{{ answer.output.answer }}"'))
    report = REPORT.replace("research.output.answer", "research.output.result")

    resumed = resume_on(api, run, upload(api, report)["version"])

    assert resumed.status_code == 400, resumed.content[:300]
    assert "'research' with its output as it was" in str(resumed.json())


def test_a_validator_inside_a_subworkflow_grades_and_sends_back_within_it(api, team, celery_worker):
    upload(api, (Path(__file__).parent / "release_notes.yaml").read_text())
    upload(
        api,
        """
workflow:
  name: release
  entry_point: notes
  input: {changes: {type: string}}
  runtime: {provider: fake, default_model: sim-writer}
agents:
  - name: notes
    type: workflow
    workflow: ./release-notes.yaml
output:
  notes: "{{ notes.output.notes }}"
""",
    )

    run = wait_for_run(start(api, workflow="release", inputs={"changes": "export fix"}), *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output == {"notes": ["Exports of files over 2 GB no longer time out"]}  # the re-run's, as final
    steps = list(run.steps.order_by("sequence").values_list("agent", "role"))
    assert steps == [
        ("notes", ""),
        ("notes/drafter", ""),
        ("notes/drafter", "validator"),
        ("notes/drafter", "rerun"),
        ("notes/announcer", ""),
    ]
    charged = list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", flat=True))
    assert charged == ["notes/drafter", "notes/drafter (validator)", "notes/drafter", "notes/announcer"]
    assert run.spent_usd == sum(LedgerEntry.objects.filter(run=run).values_list("cost_usd", flat=True))
    assert_invariants(run)


def test_a_dialog_inside_a_subworkflow_waits_for_its_reply_and_re_runs_within_it(api, team, celery_worker):
    upload(api, (Path(__file__).parent / "refund_desk.yaml").read_text())
    upload(
        api,
        """
workflow:
  name: desk
  entry_point: refund
  input: {complaint: {type: string}}
  runtime: {provider: fake, default_model: sim-clerk}
agents:
  - name: refund
    type: workflow
    workflow: ./refund-desk.yaml
output:
  amount_usd: "{{ refund.output.amount_usd }}"
""",
    )

    run = wait_for_run(start(api, workflow="desk", inputs={"complaint": "broken"}), *TERMINAL, "waiting_for_input")
    assert run.status == "waiting_for_input", run.error
    answered = api.post(f"/api/v1/runs/{run.pk}/input", {"text": "Refund one blender."}, format="json")
    assert answered.status_code == 200, answered.json()
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output == {"amount_usd": 320}  # the re-run's, as final
    steps = list(run.steps.order_by("sequence").values_list("agent", "role"))
    assert steps == [
        ("refund", ""),
        ("refund/assessor", ""),
        ("refund/assessor", "dialog"),
        ("refund/assessor", "dialog_reply"),
        ("refund/assessor", "rerun"),
        ("refund/writer", ""),
    ]
    charged = list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", flat=True))
    assert charged == ["refund/assessor", "refund/assessor (dialog)", "refund/assessor", "refund/writer"]
    assert_invariants(run)
