"""A for_each group whose agent is a sub-workflow (`type: workflow`): ticket_triage.yaml and the
ticket_reply.yaml it runs per ticket, which exercise the same features as conductor's
examples/subworkflow-foreach-inline.yaml and the examples/simple-qa.yaml it runs, upload; what
cannot run in a branch is refused at upload, at the group's agent, saying why."""

from pathlib import Path

import pytest
import yaml

from workflows.definition import (
    DefinitionError,
    StepSpec,
    WorkflowDefinition,
    load_definition,
)
from workflows.definition.bounds import MAX_PATH_CHARS
from workflows.definition.subworkflows import BRANCH_SUFFIX_CHARS, longest_path

HERE = Path(__file__).parent
TRIAGE = (HERE / "ticket_triage.yaml").read_text()
REPLY = (HERE / "ticket_reply.yaml").read_text()
ROUTES = {"copilot": "anthropic"}

QA_SOURCE = """
workflow:
  name: qa
  entry_point: answerer
  runtime: {provider: fake, default_model: sim}
  input:
    question: {type: string, required: true}
agents:
  - name: answerer
    prompt: "{{ workflow.input.question }}"
output:
  answer: "{{ answerer.output }}"
"""

CALLER = """
workflow:
  name: caller
  entry_point: finder
  runtime: {provider: fake, default_model: sim}
agents:
  - name: finder
    prompt: Find topics.
    routes: [{to: dives}]
  - name: summary
    prompt: "{{ dives.outputs | length }}"
for_each:
  - name: dives
    source: finder.output.topics
    as: topic
    agent:
      name: runner
      type: workflow
      workflow: ./qa.yaml
      input_mapping:
        question: "What is {{ topic }} ({{ _index }}, {{ _key }})?"
    routes: [{to: summary}]
"""


def load(source, **workflows):
    return load_definition(source, provider_routes=ROUTES, workflows=lambda name: workflows.get(name.replace("-", "_")))


def problems(source, **workflows) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as refused:
        load(source, **workflows)
    return [(problem.path, problem.message) for problem in refused.value.problems]


def edited(source: str, edit) -> str:
    data = yaml.safe_load(source)
    edit(data)
    return yaml.safe_dump(data, sort_keys=False)


def test_a_group_running_a_sub_workflow_per_item_uploads_with_the_sub_workflow_uploaded_first():
    reply = load(REPLY)
    definition = load(TRIAGE, ticket_reply=reply)

    agent = definition.for_each["replies"].agent
    assert isinstance(agent, StepSpec) and (agent.name, agent.kind) == ("replier", "workflow")
    assert definition.subworkflows == {"replier": reply}
    # A branch's steps are named by the agent and the item's index, and found by that path.
    assert definition.node("replier[2]/responder") is reply.agents["responder"]
    assert definition.node("replier") is agent
    assert longest_path(definition) == len("replier") + BRANCH_SUFFIX_CHARS + len("/responder")
    assert WorkflowDefinition.from_dict(definition.to_dict()) == definition
    # The sub-workflow's agents are its own: the caller prices and routes only its own.
    assert definition.models() == {"claude-haiku-4.5"}


def test_a_groups_agent_without_a_name_of_its_own_takes_the_groups():
    definition = load(CALLER.replace("      name: runner\n", ""), qa=load(QA_SOURCE))

    assert definition.for_each["dives"].agent.name == "dives"
    assert definition.node("dives").kind == "workflow"
    assert definition.node("dives[0]/answerer").name == "answerer"
    assert list(definition.subworkflows) == ["dives"]


def test_input_mapping_sees_the_item_and_what_ran_before_the_group():
    definition = load(CALLER, qa=load(QA_SOURCE))

    assert definition.for_each["dives"].agent.params["input_mapping"] == {"question": "What is {{ topic }} ({{ _index }}, {{ _key }})?"}


@pytest.mark.parametrize(
    ("edit", "path", "message"),
    [
        (
            lambda d: d["for_each"][0]["agent"]["input_mapping"].update(question="{{ nobody.output }}"),
            "for_each[0].agent.input_mapping.question",
            "'nobody'",
        ),
        (
            lambda d: d["for_each"][0]["agent"].update(workflow="./missing.yaml"),
            "for_each[0].agent.workflow",
            "the team has no workflow named 'missing'",
        ),
        (
            lambda d: d["for_each"][0]["agent"].update(input_mapping={"topic": "{{ topic }}"}),
            "for_each[0].agent.input_mapping",
            "the sub-workflow 'qa' needs input 'question': input_mapping must bind it",
        ),
        (
            lambda d: d["for_each"][0]["agent"].update(routes=[{"to": "summary"}]),
            "for_each[0].agent.routes",
            "the agent of a for_each group takes no routes; give them to the group",
        ),
        (
            lambda d: d["agents"][1].update(prompt="{{ runner.output.answer }}"),
            "agents[1].prompt",
            "'runner' is the agent of for_each group 'dives': its outputs are 'dives.outputs'",
        ),
        (
            lambda d: d["for_each"][0].update(agent={"type": "set", "values": {"x": "1"}}),
            "for_each[0].agent.type",
            "a for_each group runs an agent, or a sub-workflow (type 'workflow'): a step of type 'set' cannot be its agent yet",
        ),
    ],
)
def test_what_a_branch_cannot_run_is_refused_at_the_groups_agent(edit, path, message):
    found = problems(edited(CALLER, edit), qa=load(QA_SOURCE))

    assert any(where == path and message in text for where, text in found), found


def test_a_branchs_subworkflow_may_hold_no_group_nor_run_one_that_does():
    grouped = edited(
        QA_SOURCE,
        lambda d: d.update(
            parallel=[{"name": "both", "agents": ["answerer", "checker"]}],
            agents=[*d["agents"], {"name": "checker", "prompt": "Check."}],
            output={"answer": "{{ both.outputs | length }}"},
        )
        or d["workflow"].update(entry_point="both"),
    )
    message = (
        "the sub-workflow 'qa' has groups (both): a for_each group's sub-workflow runs one step at a time in "
        "its branch, so neither it nor a sub-workflow it runs may hold a parallel or for_each group"
    )
    assert problems(CALLER, qa=load(grouped)) == [("for_each[0].agent.workflow", message)]
    # The same sub-workflow runs as a step outside any group.
    outside = edited(CALLER, lambda d: d["agents"].insert(1, {**d.pop("for_each")[0]["agent"], "routes": [{"to": "summary"}]}))
    outside = outside.replace("to: dives", "to: runner").replace("{{ dives.outputs | length }}", "{{ runner.output }}")
    outside = outside.replace("{{ topic }} ({{ _index }}, {{ _key }})", "x")
    assert load(outside, qa=load(grouped)).subworkflows["runner"].parallel


def test_a_branchs_subworkflow_may_not_wait_for_a_person():
    gated = edited(
        QA_SOURCE,
        lambda d: d["agents"].insert(
            0, {"name": "ask", "type": "human_gate", "prompt": "Go?", "options": [{"label": "Yes", "value": "yes", "route": "answerer"}]}
        )
        or d["workflow"].update(entry_point="ask"),
    )
    found = problems(CALLER, qa=load(gated))

    assert found == [
        (
            "for_each[0].agent.workflow",
            "the sub-workflow 'qa' waits for a person (human_gate): a for_each group's branches run at once, so its "
            "sub-workflow may not (a sub-workflow that waits for a person works outside groups)",
        )
    ]


def test_the_paths_of_a_branchs_steps_count_the_items_index():
    # With the longest name a group's agent may have and the largest index a branch can have, a
    # sub-workflow's agent fits with this name, and not with one character more.
    runner = CALLER.replace("name: runner", f"name: {'r' * 100}")
    room = MAX_PATH_CHARS - 100 - BRANCH_SUFFIX_CHARS - len("/")
    fits = QA_SOURCE.replace("answerer", "a" * room)
    assert load(runner, qa=load(fits)).node(f"{'r' * 100}[7]/{'a' * room}").name == "a" * room
    longer = QA_SOURCE.replace("answerer", "a" * (room + 1))
    [(path, message)] = problems(runner, qa=load(longer))
    assert path == "for_each[0].agent.workflow"
    assert message == (
        f"the paths of the sub-workflow 'qa''s steps reach {MAX_PATH_CHARS + 1} characters with this step's name and "
        f"a branch's index (up to {BRANCH_SUFFIX_CHARS}); at most {MAX_PATH_CHARS} fit"
    )


def test_a_parallel_group_still_runs_agents_only():
    source = CALLER.replace(
        "for_each:",
        "parallel:\n  - name: both\n    agents: [finder, flow]\n    routes: [{to: summary}]\nfor_each:",
    )
    source = source.replace(
        "  - name: summary\n",
        "  - name: flow\n    type: workflow\n    workflow: ./qa.yaml\n    input_mapping: {question: x}\n  - name: summary\n",
    )
    found = problems(source, qa=load(QA_SOURCE))

    assert ("parallel[0].agents[1]", "'flow' is a workflow step; a parallel group runs agents") in found
