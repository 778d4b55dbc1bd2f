from pathlib import Path

import pytest

from workflows.definition import (
    END,
    AgentSpec,
    Complete,
    Fail,
    GoTo,
    NoRouteMatched,
    RouteSpec,
    TemplateFailure,
    load_definition,
    next_agent,
    next_move,
    template_context,
)


def agent_with(*routes: tuple[str, str | bool | None]) -> AgentSpec:
    return AgentSpec(
        name="judge",
        description="",
        model="m",
        provider="fake",
        system_prompt="",
        prompt="p",
        input=(),
        output=None,
        routes=tuple(RouteSpec(to=to, when=when) for to, when in routes),
        max_tokens=10,
        temperature=None,
        mock=None,
    )


def context(**judge_output: object) -> dict:
    return template_context(inputs={}, outputs={"judge": judge_output})


def test_an_agent_without_routes_ends_the_workflow():
    assert next_agent(agent_with(), context()) == END


def test_a_route_without_when_always_matches():
    assert next_agent(agent_with(("b", None)), context()) == "b"


def test_the_first_matching_route_wins():
    agent = agent_with(("a", "judge.output.score > 5"), ("b", "{{ judge.output.score > 1 }}"), ("c", None))

    assert next_agent(agent, context(score=9)) == "a"
    assert next_agent(agent, context(score=3)) == "b"
    assert next_agent(agent, context(score=0)) == "c"


@pytest.mark.parametrize("when", [False, "false", "{{ false }}", "{{ judge.output.ok }}", "judge.output.items"])
def test_falsy_conditions_fall_through(when):
    agent = agent_with(("a", when), (END, None))

    assert next_agent(agent, context(ok=False, items=[])) == END


def test_no_matching_route_is_an_error_naming_the_agent():
    with pytest.raises(NoRouteMatched, match=r"^no route of agent 'judge' matched$"):
        next_agent(agent_with(("a", "{{ false }}")), context())


def test_a_failing_condition_names_the_route():
    with pytest.raises(TemplateFailure) as info:
        next_agent(agent_with(("a", "judge.output.missing")), context())

    assert info.value.where == "agent 'judge' routes[0].when"


def test_the_example_review_loop():
    definition = load_definition((Path(__file__).parent / "research_brief.yaml").read_text())
    reviewer = definition.agent("reviewer")
    outputs = {"writer": {"brief": "..."}}

    approved = template_context(inputs={}, outputs={**outputs, "reviewer": {"approved": True, "feedback": ""}})
    rejected = template_context(inputs={}, outputs={**outputs, "reviewer": {"approved": False, "feedback": "?"}})

    assert next_agent(reviewer, approved) == END
    assert next_agent(reviewer, rejected) == "writer"


def test_next_move_goes_on_completes_with_the_output_or_fails_with_the_reason():
    definition = load_definition((Path(__file__).parent / "research_brief.yaml").read_text())
    reviewer = definition.agent("reviewer")
    outputs = {"writer": {"brief": "b"}}
    approved = template_context(inputs={}, outputs={**outputs, "reviewer": {"approved": True, "feedback": ""}})
    rejected = template_context(inputs={}, outputs={**outputs, "reviewer": {"approved": False, "feedback": "?"}})

    assert next_move(definition, reviewer, rejected) == GoTo("writer")
    assert next_move(definition, reviewer, approved) == Complete({"brief": "b", "reviewed": True})
    assert next_move(definition, agent_with(("a", "{{ false }}")), approved) == Fail(
        "RouteError", "no route of agent 'judge' matched"
    )
    failed = next_move(definition, agent_with(("a", "judge.output.missing")), context())
    assert isinstance(failed, Fail) and failed.error_type == "TemplateError"
