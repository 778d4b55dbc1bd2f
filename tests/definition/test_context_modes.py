"""Conductor's context modes: what an agent's templates may read, checked at upload, and what they see."""

import pytest

from workflows.definition import DefinitionError, TemplateFailure, context_for_agent, load_definition

CHAIN = """
workflow:
  name: chain
  entry_point: research
  input: {topic: {type: string}, tone: {type: string}}
  runtime: {provider: fake, default_model: m}
  context: {mode: MODE}
agents:
  - {name: research, prompt: "Research {{ workflow.input.topic }}.", input: [workflow.input.topic], routes: [{to: outline}]}
  - {name: outline, prompt: "Outline {{ research.output }}.", input: [research.output], routes: [{to: write}]}
  - name: write
    input: [outline.output, "research.output?", workflow.input.tone]
    prompt: "Write {{ outline.output }} in a {{ workflow.input.tone }} tone. READS"
"""


def chain(mode: str, reads: str = ""):
    return CHAIN.replace("MODE", mode).replace("READS", reads)


def refused(source: str) -> dict[str, str]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(source)
    return {problem.path: problem.message for problem in caught.value.problems}


def test_explicit_mode_lets_an_agent_read_only_what_its_input_declares():
    assert load_definition(chain("explicit")).context_mode == "explicit"

    problems = refused(chain("explicit", "{{ workflow.input.topic }}"))
    assert list(problems) == ["agents[2].prompt"] and "'workflow.input' has no 'topic'" in problems["agents[2].prompt"]
    problems = refused(chain("explicit").replace("input: [research.output], ", ""))
    assert "'research'" in problems["agents[1].prompt"]


def test_last_only_mode_lets_an_agent_read_only_what_always_ran_just_before_it():
    assert load_definition(chain("last_only"))
    problems = refused(chain("last_only", "{{ research.output }}"))
    assert list(problems) == ["agents[2].prompt"] and "'research'" in problems["agents[2].prompt"]


def test_accumulate_is_the_default_and_trimming_is_refused():
    assert load_definition(chain("accumulate", "{{ research.output }}")).context_mode == "accumulate"
    problems = refused(chain("accumulate").replace("context: {mode: accumulate}", "context: {mode: accumulate, max_tokens: 4000}"))
    assert "trimming the context is not implemented" in problems["workflow.context.max_tokens"]


CONTEXT = {
    "context": {"iteration": 2},
    "workflow": {"input": {"topic": "caps", "tone": "dry"}, "name": "chain"},
    "research": {"output": {"notes": "n"}},
    "outline": {"output": {"points": ["p"]}},
}


def test_an_agent_sees_what_its_mode_shows_it():
    explicit = context_for_agent(CONTEXT, mode="explicit", references=["outline.output.points", "workflow.input.tone"], last=None, where="w")
    assert explicit == {
        "context": {"iteration": 2},
        "workflow": {"input": {"tone": "dry"}, "name": "chain"},
        "outline": {"output": {"points": ["p"]}},
    }
    last = context_for_agent(CONTEXT, mode="last_only", references=[], last="outline", where="w")
    assert set(last) == {"context", "workflow", "outline"} and last["workflow"]["input"] == {"topic": "caps", "tone": "dry"}
    assert context_for_agent(CONTEXT, mode="accumulate", references=[], last=None, where="w") == CONTEXT


def test_a_declared_agent_that_has_not_run_fails_unless_optional():
    assert "later" not in context_for_agent(CONTEXT, mode="explicit", references=["later.output?"], last=None, where="w")
    with pytest.raises(TemplateFailure, match="'later.output' is declared in its input but has not run"):
        context_for_agent(CONTEXT, mode="explicit", references=["later.output"], last=None, where="w")


def test_explicit_mode_reads_a_declared_input_of_a_workflow_with_no_input_block():
    source = """
workflow: {name: w, entry_point: a, runtime: {provider: fake, default_model: m}, context: {mode: explicit}}
agents: [{name: a, input: [workflow.input.topic], prompt: "On {{ workflow.input.topic }}."}]
"""
    assert load_definition(source).reads_inputs == ("topic",)
