import copy
import json
import random
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from workflows.definition import (
    END,
    DefinitionError,
    InputSpec,
    LimitsSpec,
    Problem,
    UnitPrices,
    WorkflowDefinition,
    load_definition,
)
from workflows.definition._source import read_source

EXAMPLE = (Path(__file__).parent / "research_brief.yaml").read_text()
EXAMPLE_DATA = yaml.safe_load(EXAMPLE)
DELETE = object()


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_DATA)


def edited(location: str, value: Any, document: dict[str, Any] | None = None) -> dict[str, Any]:
    """The example with the value at a dotted location like "agents.2.routes.0.to" set (or deleted)."""
    document = example() if document is None else document
    *parents, last = [int(part) if part.isdigit() else part for part in location.split(".")]
    node = document
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return document


def problems_of(source: Any, **options: Any) -> list[Problem]:
    with pytest.raises(DefinitionError) as info:
        load_definition(source, **options)
    return info.value.problems


def only_problem(source: Any, **options: Any) -> Problem:
    problems = problems_of(source, **options)
    assert len(problems) == 1, problems
    return problems[0]


# --- the happy path -------------------------------------------------------------------------


def test_example_parses_into_a_resolved_definition():
    definition = load_definition(EXAMPLE)

    assert definition.name == "research-brief"
    assert definition.version == "1.2"
    assert definition.entry_point == "researcher"
    assert list(definition.agents) == ["researcher", "writer", "reviewer"]
    assert definition.models() == {"gpt-4o-mini", "gpt-4o"}
    assert definition.limits == LimitsSpec(
        max_iterations=12, timeout_seconds=300, budget_usd=Decimal("0.500000"), budget_mode="enforce"
    )
    assert definition.pricing["gpt-4o"] == UnitPrices(Decimal("2.500000"), Decimal("10.000000"), Decimal("1.250000"))
    # `required` defaults to true, as in conductor; the default fills the input in when a run omits it.
    assert definition.inputs["depth"] == InputSpec("depth", "integer", True, 3, True, "")
    assert definition.output == {
        "brief": "{{ writer.output.brief }}",
        "reviewed": "{{ reviewer.output.approved }}",
    }


def test_agents_inherit_runtime_defaults_unless_they_override_them():
    definition = load_definition(EXAMPLE)
    researcher, writer, reviewer = (definition.agent(name) for name in ("researcher", "writer", "reviewer"))

    assert (researcher.model, writer.model) == ("gpt-4o-mini", "gpt-4o")
    assert (researcher.max_tokens, reviewer.max_tokens) == (1024, 256)
    assert {agent.provider for agent in (researcher, writer, reviewer)} == {"fake"}
    assert researcher.temperature == 0.2
    assert researcher.mock is not None and researcher.mock.output == {"facts": ["fact one", "fact two"]}
    assert (researcher.mock.output_tokens, researcher.mock.input_tokens, researcher.mock.latency_ms) == (40, 500, 0)
    assert writer.input == ("researcher.output.facts", "reviewer.output?")
    assert [(route.to, route.when) for route in reviewer.routes] == [
        (END, "{{ reviewer.output.approved }}"),
        ("writer", None),
    ]


def test_a_minimal_definition_gets_the_documented_defaults():
    definition = load_definition(
        {"workflow": {"name": "w", "entry_point": "a"}, "agents": [{"name": "a", "model": "m", "prompt": "hi"}]},
        provider_routes={"copilot": "openai"},
    )
    agent = definition.agent("a")

    assert (definition.provider, agent.provider) == ("copilot", "copilot")
    assert definition.limits == LimitsSpec()
    assert definition.output == {}
    # No max_tokens: the step takes the model's maximum output, else 4096 (see test_pricing).
    assert (agent.max_tokens, agent.temperature, agent.routes, agent.mock, agent.stream) == (None, None, (), None, False)


def test_json_text_and_parsed_mappings_give_the_same_definition():
    from_yaml = load_definition(EXAMPLE)

    assert load_definition(json.dumps(example())) == from_yaml
    assert load_definition(example()) == from_yaml
    assert load_definition(EXAMPLE.encode()) == from_yaml


def test_to_dict_survives_json_and_round_trips_exactly():
    definition = load_definition(EXAMPLE)

    stored = json.loads(json.dumps(definition.to_dict()))
    restored = WorkflowDefinition.from_dict(stored)

    assert restored == definition
    assert list(restored.agents) == ["researcher", "writer", "reviewer"]
    assert stored["limits"]["budget_usd"] == "0.500000"


def test_definitions_stored_before_mock_input_tokens_still_load():
    stored = json.loads(json.dumps(load_definition(EXAMPLE).to_dict()))
    del stored["agents"][0]["mock"]["input_tokens"]

    assert WorkflowDefinition.from_dict(stored).agent("researcher").mock.input_tokens is None


def test_yaml_dates_stay_strings():
    source = EXAMPLE.replace("version: 1.2", "version: 2024-05-01")

    assert load_definition(source).version == "2024-05-01"


# --- every problem, at its path -------------------------------------------------------------


def test_every_problem_is_reported_at_once():
    document = edited("workflow.entry_point", "nobody")
    edited("agents.1.prompt", "{{ unclosed", document)
    edited("workflow.limits.budget_usd", 0, document)

    problems = problems_of(document)

    assert {problem.path for problem in problems} == {
        "workflow.entry_point",
        "agents[1].prompt",
        "workflow.limits.budget_usd",
    }
    assert "3 problems" in str(DefinitionError(problems))


@pytest.mark.parametrize(
    ("location", "value", "path", "message"),
    [
        ("workflow.name", DELETE, "workflow.name", "is required"),
        ("workflow.name", ["x"], "workflow.name", "must be a string"),
        ("workflow.entry_point", "nobody", "workflow.entry_point", "no agent named 'nobody'"),
        ("workflow.version", [1], "workflow.version", "must be a string or a number"),
        ("workflow.limits.budget_usd", -1, "workflow.limits.budget_usd", "greater than 0"),
        ("workflow.limits.max_iterations", 501, "workflow.limits.max_iterations", "between 1 and 500"),
        ("workflow.limits.budget_mode", "strict", "workflow.limits.budget_mode", "'audit' or 'enforce'"),
        ("workflow.runtime.max_tokens", 0, "workflow.runtime.max_tokens", "between 1 and 10000000"),
        ("workflow.runtime.max_tokens", 10**30, "workflow.runtime.max_tokens", "between 1 and 10000000"),
        ("workflow.runtime.temperature", 3, "workflow.runtime.temperature", "between 0 and 2"),
        ("workflow.input.depth.type", "float", "workflow.input.depth.type", "'float'"),
        ("workflow.input.depth.default", "three", "workflow.input.depth.default", "must be an integer"),
        ("workflow.input.topic.required", "yes", "workflow.input.topic.required", "true or false"),
        (
            "workflow.cost.pricing.gpt-4o.input_per_mtok",
            -2,
            "workflow.cost.pricing.gpt-4o.input_per_mtok",
            "must not be negative",
        ),
        (
            "workflow.cost.pricing.gpt-4o.output_per_mtok",
            "0.0000001",
            "workflow.cost.pricing.gpt-4o.output_per_mtok",
            "more than 6 decimal places",
        ),
        ("workflow.cost.pricing.gpt-4o", None, "workflow.cost.pricing.gpt-4o", "must be a mapping"),
        ("agents", [], "agents", "at least one agent"),
        ("agents", {"name": "a"}, "agents", "must be a list"),
        ("agents.1.prompt", DELETE, "agents[1].prompt", "is required"),
        ("agents.1.prompt", "{% for x in y %}", "agents[1].prompt", "template does not compile"),
        ("agents.1.system_prompt", "{{ x | no_such_filter }}", "agents[1].system_prompt", "no_such_filter"),
        ("agents.1.promt", "hi", "agents[1].promt", "did you mean 'prompt'?"),
        ("agents.2.routes.1.to", "editor", "agents[2].routes[1].to", "no agent named 'editor'"),
        ("agents.2.routes.1.to", DELETE, "agents[2].routes[1].to", "is required"),
        ("agents.2.routes.0.when", "{{ reviewer.output. }}", "agents[2].routes[0].when", "does not compile"),
        ("agents.2.routes.0.when", 1, "agents[2].routes[0].when", "must be a condition string or true/false"),
        ("agents.1.input.0", "researcher.outputs", "agents[1].input[0]", "is an agent, not a group"),
        ("agents.1.input.0", "researcher.result", "agents[1].input[0]", "must look like"),
        ("agents.1.input.0", "ghost.output", "agents[1].input[0]", "no agent named 'ghost'"),
        ("agents.0.input.0", "workflow.input.nope", "agents[0].input[0]", "no workflow input named 'nope'"),
        ("agents.0.output.facts.items.type", "list", "agents[0].output.facts.items.type", "'list'"),
        ("agents.1.output.brief", {"description": "x"}, "agents[1].output.brief.type", "is required"),
        ("agents.0.max_tokens", True, "agents[0].max_tokens", "must be a whole number"),
        ("agents.0.max_tokens", 10_000_001, "agents[0].max_tokens", "between 1 and 10000000"),
        ("agents.0.temperature", "hot", "agents[0].temperature", "must be a number"),
        ("agents.0.mock.latency_ms", 600_001, "agents[0].mock.latency_ms", "between 0 and 600000"),
        ("agents.0.mock.output_tokens", -1, "agents[0].mock.output_tokens", "between 0 and 10000000"),
        ("agents.0.mock.output_tokens", 3_000_000_000, "agents[0].mock.output_tokens", "between 0 and 10000000"),
        ("agents.0.mock.input_tokens", -1, "agents[0].mock.input_tokens", "between 0 and 10000000"),
        ("agents.0.mock.input_tokens", 10_000_001, "agents[0].mock.input_tokens", "between 0 and 10000000"),
        ("agents.0.mock.input_tokens", 2.5, "agents[0].mock.input_tokens", "must be a whole number"),
        ("output.brief", "{{ writer.output.brief", "output.brief", "template does not compile"),
        ("output.brief", 42, "output.brief", "must be a template string"),
        ("extras", {}, "extras", "unknown key 'extras'"),
    ],
)
def test_each_mistake_is_reported_at_its_path(location, value, path, message):
    problem = only_problem(edited(location, value))

    assert problem.path == path
    assert message in problem.message


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("researcher", "duplicate agent name 'researcher' (first used at agents[0])"),
        ("2nd-writer", "must start with a letter"),
        ("workflow", "'workflow' is reserved"),
    ],
)
def test_a_bad_agent_name_is_reported_along_with_references_to_the_lost_agent(name, message):
    problems = problems_of(edited("agents.1.name", name))

    assert problems[0].path == "agents[1].name"
    assert message in problems[0].message
    assert {problem.path for problem in problems[1:]} == {"agents[0].routes[0].to", "agents[2].routes[1].to"}


def test_every_agent_must_be_a_mapping():
    document = example()
    document["agents"].append("oops")

    assert only_problem(document) == Problem("agents[3]", "must be a mapping, not a string")


@pytest.mark.parametrize(
    ("location", "value", "path", "feature"),
    [
        ("tools", ["web_search"], "tools", "the workflow has no MCP server"),
        ("mcp_servers", {}, "mcp_servers", "written under workflow.runtime.mcp_servers"),
        ("workflow.hooks", {"on_start": "x"}, "workflow.hooks", "'hooks'"),
        ("workflow.context", {"mode": "minimal"}, "workflow.context.mode", "must be one of accumulate, last_only, explicit"),
        ("agents.1.tools", ["web_search"], "agents[1].tools", "top-level 'tools' does not list: web_search"),
        ("agents.1.type", "programme", "agents[1].type", "agent type 'programme' is not supported (only 'agent', 'human_gate', 'questions', 'script', 'set', 'terminate', 'wait', 'workflow')"),
    ],
)
def test_unsupported_conductor_features_are_named(location, value, path, feature):
    problem = only_problem(edited(location, value))

    assert problem.path == path
    assert feature in problem.message


# --- models, prices and providers -----------------------------------------------------------


def test_an_agent_needs_a_model_of_its_own_or_a_default():
    problems = problems_of(edited("workflow.runtime.default_model", DELETE))

    assert [problem.path for problem in problems] == ["agents[0].model", "agents[2].model"]
    assert "workflow.runtime.default_model" in problems[0].message


def test_an_enforced_budget_needs_a_price_for_every_model():
    problem = only_problem(edited("workflow.cost.pricing.gpt-4o", DELETE))

    assert problem == Problem(
        "agents[1].model",
        "model 'gpt-4o' has no price; an enforce budget cannot be kept without one "
        "(add it to workflow.cost.pricing or the price table)",
    )


def test_a_price_table_entry_counts_as_a_price():
    document = edited("workflow.cost.pricing.gpt-4o", DELETE)

    definition = load_definition(document, is_priced=lambda model: model == "gpt-4o")

    assert "gpt-4o" not in definition.pricing


@pytest.mark.parametrize(("key", "value"), [("budget_mode", "audit"), ("budget_usd", None)])
def test_unpriced_models_are_fine_without_an_enforced_budget(key, value):
    document = edited("workflow.cost", DELETE)

    assert load_definition(edited(f"workflow.limits.{key}", value, document)).pricing == {}


def test_the_provider_must_be_known():
    problem = only_problem(edited("workflow.runtime.provider", "openia"))

    assert problem.path == "workflow.runtime.provider"
    assert "unknown provider 'openia'" in problem.message and "openai" in problem.message
    accepted = load_definition(edited("workflow.runtime.provider", "openai"))
    assert accepted.agent("writer").provider == "openai"


# --- reading YAML safely ---------------------------------------------------------------------


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines)


def test_an_alias_bomb_is_refused_fast():
    started = time.perf_counter()
    problem = only_problem(billion_laughs())
    elapsed = time.perf_counter() - started

    assert problem.path == "definition"
    assert "100,000 nodes" in problem.message
    assert elapsed < 1.0  # a safety property, not a benchmark


def fat_laughs(*, text_bytes: int = 2_000, levels: int = 3, width: int = 40) -> str:
    """Few nodes, but each alias stands for a long text: 2.6 KB that would expand to 128 MB."""
    lines = [f'a0: &a0 "{"x" * text_bytes}"']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines)


def test_a_definition_is_measured_after_alias_expansion_before_it_is_built():
    tracemalloc.start()
    try:
        problem = only_problem(fat_laughs())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert problem == Problem("definition", "expands to more than 1,048,576 bytes (the expanded size limit)")
    assert peak < 20_000_000


def test_the_expanded_size_limit_is_exact_and_aliases_within_it_are_fine():
    # Two values of 4 bytes of overhead, the text and the 4-byte mapping around them.
    source = 'a: &t "' + "y" * 100 + '"\nb: *t\n'
    expanded = 4 + 2 * (4 + 1) + 2 * (4 + 100)

    assert read_source(source, max_bytes=1_000, max_expanded_bytes=expanded) == {"a": "y" * 100, "b": "y" * 100}
    with pytest.raises(DefinitionError, match=f"expands to more than {expanded - 1:,} bytes"):
        read_source(source, max_bytes=1_000, max_expanded_bytes=expanded - 1)


@pytest.mark.parametrize(
    "source",
    [
        "[" * 10_000 + "]" * 10_000,
        "- " * 10_000 + "x",
    ],
)
def test_deeply_nested_yaml_is_refused(source):
    problem = only_problem(source)

    assert problem.path == "definition"
    assert "deeper than 64 levels" in problem.message


def test_deeply_nested_mappings_are_refused():
    document: dict[str, Any] = {}
    node = document
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]

    assert "deeper than 64 levels" in only_problem(document).message


def test_oversized_text_is_refused_before_parsing():
    problem = only_problem("#" * 101, max_bytes=100)

    assert problem == Problem("definition", "is 101 bytes; the limit is 100")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a: &a [*a]", "alias to an anchor that encloses it"),
        ("workflow: {name: x\n", "is not valid YAML at line 2, column 1"),
        ("--- {}\n--- {}\n", "is not valid YAML at line 2"),
        ("x: !!python/object/apply:os.system ['true']", "could not determine a constructor"),
        (b"\xff\xfe", "is not valid UTF-8"),
        ("", "must be a mapping"),
        ("- a list", "must be a mapping"),
        ("x: " + "1" * 5000, "too many digits"),
    ],
)
def test_unreadable_sources_are_one_problem(source, message):
    problem = only_problem(source)

    assert problem.path == "definition"
    assert message in problem.message


def test_duplicate_yaml_keys_are_reported_at_their_path():
    source = EXAMPLE.replace("    max_tokens: 256\n", "    max_tokens: 256\n    max_tokens: 512\n")

    problem = only_problem(source)

    assert problem.path == "agents[2].max_tokens"
    assert "duplicate key 'max_tokens'" in problem.message


# --- robustness: nothing but DefinitionError escapes ----------------------------------------

JUNK = [None, 0, -1, 2.5, float("nan"), True, "", "{{", "$end", [], [None, [1]], {}, {1: 2}, {"to": None}, {"x"}]


def locations(node: Any, prefix: str = "") -> list[str]:
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    found = []
    for key, child in children:
        location = f"{prefix}.{key}" if prefix else str(key)
        found += [location, *locations(child, location)]
    return found


def load_or_refuse(source: Any) -> None:
    """Either a DefinitionError, or a definition that survives storage as JSON."""
    try:
        definition = load_definition(source)
    except DefinitionError:
        return
    assert WorkflowDefinition.from_dict(json.loads(json.dumps(definition.to_dict()))) == definition


def test_junk_at_any_location_is_refused_or_round_trips():
    for location in locations(example()):
        for junk in JUNK:
            load_or_refuse(edited(location, copy.deepcopy(junk)))


def test_random_text_edits_are_refused_or_round_trip():
    rng = random.Random(1234)
    for _ in range(200):
        text = list(EXAMPLE)
        for _ in range(rng.randint(1, 8)):
            text[rng.randrange(len(text))] = rng.choice(":-[]{}&*!|>'\"#% \n\tx")
        load_or_refuse("".join(text))
