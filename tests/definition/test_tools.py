"""Conductor's tools as a definition states them: MCP servers, the tools each agent sees, its loop's
bound, the cut of a tool's result, and what follows each step of a tool loop."""

import pytest

from workflows.definition import (
    STDIO_SERVERS,
    CallModel,
    CallTool,
    DefinitionError,
    Proceed,
    WorkflowDefinition,
    after_step,
    cut_tool_output,
    load_definition,
    model_tool_name,
    tool_server_key,
)

ROUTES = {"copilot": "openai"}
SEARCH = {"type": "http", "url": "https://search.example/mcp", "headers": {"Authorization": "Bearer t"}}
FILES = {"command": "python3", "args": ["-m", "files_server"], "env": {"MODE": "stdio"}, "tools": ["read"]}


def workflow(*, servers=None, tools=None, agent=None, runtime=None) -> dict:
    document = {
        "workflow": {
            "name": "w",
            "entry_point": "a",
            "runtime": {"default_model": "gpt-4o", "mcp_servers": servers or {}, **(runtime or {})},
        },
        "agents": [{"name": "a", "prompt": "hi", "routes": [{"to": "$end"}], **(agent or {})}],
    }
    if tools is not None:
        document["tools"] = tools
    return document


def problems(document, **options) -> dict[str, str]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(document, provider_routes=ROUTES, **options)
    return {problem.path: problem.message for problem in caught.value.problems}


def test_servers_of_each_transport_are_read_and_kept_through_storage():
    definition = load_definition(
        workflow(servers={"search": SEARCH, "files": FILES, "feed": {"type": "sse", "url": "http://feed.example/sse", "timeout": 2500}}),
        provider_routes=ROUTES,
    )

    search, files, feed = (definition.mcp_servers[name] for name in ("search", "files", "feed"))
    assert (search.transport, search.url, search.headers, search.tools) == ("http", SEARCH["url"], {"Authorization": "Bearer t"}, None)
    assert (files.transport, files.command, files.args, files.env, files.tools) == ("stdio", "python3", ("-m", "files_server"), {"MODE": "stdio"}, ("read",))
    assert (feed.transport, feed.timeout_ms) == ("sse", 2500)
    assert WorkflowDefinition.from_dict(definition.to_dict()) == definition


def test_a_stdio_server_is_refused_where_the_team_may_not_run_commands_naming_why():
    refused = problems(workflow(servers={"files": FILES}), refused_kinds={STDIO_SERVERS: "ask an operator"})

    assert refused == {"workflow.runtime.mcp_servers.files.command": "ask an operator"}
    # An HTTP server runs nowhere on the service's machines: it needs no such permission.
    assert load_definition(workflow(servers={"search": SEARCH}), provider_routes=ROUTES, refused_kinds={STDIO_SERVERS: "no"})


@pytest.mark.parametrize(
    ("server", "path", "message"),
    [
        ({"args": ["x"]}, "command", "required"),
        ({"type": "http"}, "url", "required"),
        ({"type": "websocket", "url": "ws://x"}, "type", "must be one of stdio, http, sse"),
        ({"type": "http", "url": "ftp://files.example"}, "url", "http:// or https://"),
        ({"type": "http", "url": "https://user:secret@search.example"}, "url", "must not hold credentials"),
        ({"type": "http", "url": "https://s.example", "command": "sh"}, "command", "is for stdio servers"),
        ({"command": "sh", "url": "https://s.example"}, "url", "is for 'http' and 'sse' servers"),
        ({"command": "sh", "env": {"PATH": "/tmp"}}, "env.PATH", "set by the service"),
        ({"command": "sh", "env": {"MODE": 3}}, "env.MODE", "must be text"),
        ({"type": "http", "url": "https://s.example", "headers": {"X-A": "one\ntwo"}}, "headers.X-A", "one line"),
        ({"command": "sh", "timeout": 0}, "timeout", "must be between 1 and 3600000"),
        ({"command": "sh", "tools": "search"}, "tools", "must be a list"),
    ],
)
def test_a_server_written_wrong_is_refused_where_it_is_wrong(server, path, message):
    refused = problems(workflow(servers={"s": server}))

    where = f"workflow.runtime.mcp_servers.s.{path}"
    assert where in refused, refused
    assert message in refused[where]


def test_a_server_name_must_be_usable_in_the_names_of_its_tools():
    refused = problems(workflow(servers={"web search": SEARCH}))

    assert "its tools are named after it" in refused["workflow.runtime.mcp_servers.web search"]


def test_an_agent_sees_the_servers_tools_chosen_as_conductor_chooses_them():
    servers = {"search": SEARCH}

    every = load_definition(workflow(servers=servers), provider_routes=ROUTES).agent("a")
    listed = load_definition(workflow(servers=servers, tools=["search__find", "fetch"]), provider_routes=ROUTES).agent("a")
    own = load_definition(workflow(servers=servers, tools=["search__find", "fetch"], agent={"tools": ["fetch"]}), provider_routes=ROUTES).agent("a")
    none = load_definition(workflow(servers=servers, agent={"tools": []}), provider_routes=ROUTES).agent("a")

    assert (every.uses_tools, every.tools) == (True, None)
    assert (listed.tool_servers, listed.tools) == (("search",), ("search__find", "fetch"))
    assert own.tools == ("fetch",)
    assert (none.uses_tools, none.tool_servers) == (False, ())


def test_an_agent_names_only_tools_the_top_level_list_names():
    refused = problems(workflow(servers={"search": SEARCH}, tools=["fetch"], agent={"tools": ["fetch", "delete"]}))

    assert refused == {
        "agents[0].tools": "names tools the workflow's top-level 'tools' does not list: delete; listed: fetch"
    }


def test_tools_named_with_no_server_to_offer_them_are_refused():
    refused = problems(workflow(tools=["web_search"]))

    assert "no MCP server" in refused["tools"] and "built-in tools are not offered" in refused["tools"]


@pytest.mark.parametrize("key", ["validator", "dialog"])
def test_an_agent_with_tools_may_not_have_a_validator_or_dialog_yet(key):
    review = {"validator": {"criteria": "be right"}, "dialog": {"trigger_prompt": "ask when unsure"}}[key]

    refused = problems(workflow(servers={"search": SEARCH}, agent={key: review}))

    assert f"an agent with tools cannot have a {key} yet" in refused[f"agents[0].{key}"]


def test_max_agent_iterations_is_the_agents_else_the_runtimes_else_fifty():
    servers = {"search": SEARCH}

    assert load_definition(workflow(servers=servers), provider_routes=ROUTES).agent("a").max_agent_iterations == 50
    runtime = load_definition(workflow(servers=servers, runtime={"max_agent_iterations": 8}), provider_routes=ROUTES)
    assert runtime.agent("a").max_agent_iterations == 8
    agent = load_definition(
        workflow(servers=servers, runtime={"max_agent_iterations": 8}, agent={"max_agent_iterations": 3}), provider_routes=ROUTES
    )
    assert agent.agent("a").max_agent_iterations == 3
    assert "between 1 and 500" in problems(workflow(agent={"max_agent_iterations": 501}))["agents[0].max_agent_iterations"]


def test_tool_output_sets_how_much_of_a_result_the_model_is_shown():
    def chars(tool_output):
        return load_definition(workflow(runtime={"tool_output": tool_output}), provider_routes=ROUTES).tool_output_chars

    assert load_definition(workflow(), provider_routes=ROUTES).tool_output_chars == 50_000
    assert chars({"max_chars": 20_000, "spill_to_file": True, "spill_dir": None}) == 20_000
    assert chars({"enabled": False}) is None
    assert "at least 1000" in problems(workflow(runtime={"tool_output": {"max_chars": 10}}))["workflow.runtime.tool_output.max_chars"]


def test_a_result_past_the_limit_is_cut_saying_so():
    assert cut_tool_output("x" * 1000, 1000) == "x" * 1000
    cut = cut_tool_output("x" * 1500, 1000)
    assert cut.startswith("x" * 1000) and cut.endswith("[tool output truncated: 1,000 of 1,500 characters shown]")
    assert cut_tool_output("x" * 10**6, None) == "x" * 10**6


def test_the_fake_scripts_its_tool_calls_per_model_call():
    mock = {"tool_calls": [[{"name": "search__find", "arguments": {"q": "a"}}], [{"name": "search__find"}]], "output": {"x": 1}}

    agent = load_definition(workflow(servers={"search": SEARCH}, agent={"mock": mock, "provider": "fake"}), provider_routes=ROUTES).agent("a")

    assert agent.mock.tool_calls == (
        ({"name": "search__find", "arguments": {"q": "a"}},),
        ({"name": "search__find", "arguments": {}},),
    )
    wrong = problems(workflow(agent={"mock": {"tool_calls": [[]]}, "provider": "fake"}))
    assert "must be a list of 1 to 16 calls" in wrong["agents[0].mock.tool_calls[0]"]


def test_the_name_a_model_sees_is_one_both_providers_accept_and_unique():
    taken: set[str] = set()
    plain = model_tool_name("search", "find", taken)
    dotted = model_tool_name("ms-learn", "docs.search v2", taken)
    long = model_tool_name("search", "x" * 100, taken)

    assert (plain, dotted) == ("search__find", "ms-learn__docs_search_v2")
    assert len(long) == 64 and long != model_tool_name("search", "x" * 99, taken)
    assert model_tool_name("search", "find", {"search__find"}) != "search__find"


def test_a_tool_loop_goes_listing_model_call_each_tool_call_then_model_call_until_an_answer():
    call_a, call_b = {"id": "1", "name": "s__a", "arguments": {}}, {"id": "2", "name": "s__b", "arguments": {}}

    listed = after_step(validator=None, role="", given=None, output={"tools": []}, tools=True)
    asked = after_step(validator=None, role="model_call", given={"turn": 1}, output={"tool_calls": [call_a, call_b], "replay": {}})
    first = after_step(validator=None, role="tool_call", given={"turn": 1, "index": 0, "count": 2}, output={})
    second = after_step(validator=None, role="tool_call", given={"turn": 1, "index": 1, "count": 2}, output={})
    answered = after_step(validator=None, role="model_call", given={"turn": 2}, output={"answer": {"x": 1}})

    assert listed == CallModel(turn=1)
    assert asked == CallTool(turn=1, index=0, count=2)
    assert first == CallTool(turn=1, index=1, count=2)
    assert second == CallModel(turn=2)
    assert answered == Proceed({"x": 1})
    # A loop step that fails fails its agent, as the agent's own step would.
    assert after_step(validator=None, role="model_call", given={"turn": 1}, failed=True) is None


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("https://search.example/mcp", "https://search.example/mcp"),
        ("HTTPS://Search.Example:443/mcp/", "https://search.example/mcp"),
        ("https://search.example/mcp?api_key=s3cret#top", "https://search.example/mcp"),
        ("http://search.example:8080/mcp", "http://search.example:8080/mcp"),
        ("http://[::1]:80/mcp", "http://[::1]/mcp"),
        (" search-mcp ", "search-mcp"),  # a stdio server's command, as it is
        ("/usr/local/bin/search-mcp", "/usr/local/bin/search-mcp"),
    ],
)
def test_a_tool_price_names_a_server_by_its_url_without_what_does_not_change_the_server(written, key):
    assert tool_server_key(written) == key
