"""An agent's tool loop (definition/tools.py), as three kinds of step: its own step lists the tools
of its MCP servers and renders its prompts once; then each model call and each tool call is a step,
gated, charged and checkpointed like any other, until a model call answers.

A loop step is prepared from the steps of its loop before it (`loop_so_far`): the listing, and the
model calls that asked for tools with the results of those calls. So a stop, a resume or a worker's
crash loses nothing that returned, and repeats no call that did.
"""

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from decimal import Decimal

from django.conf import settings

from workflows.definition import (
    MODEL_CALL_ROLE,
    REMOTE_TRANSPORTS,
    TOOL_CALL_ROLE,
    AgentSpec,
    McpServerSpec,
    WorkflowDefinition,
    cut_tool_output,
    headers_to_send,
    model_tool_name,
    tool_chosen,
    tool_server_key,
    transcript_text,
)
from workflows import toolservers
from workflows.models import EventType, Run, Step, StepStatus, Team
from workflows.providers import AssistantTurn, CompletionResult, ProviderError, ToolCall, ToolResult, ToolSpec, Usage
from workflows.services.budgets import add
from workflows.services.credentials import CredentialsUnreadable
from workflows.services.ledger import TOOL_PROVIDER, ledger_charge_tool
from workflows.services.prices import tool_price_for
from workflows.services.steps.kinds.agent import AgentKind, deadline, rendered_prompts
from workflows.services.steps.kinds.base import Charged, NoCallStepKind, PreparedStep, StepAttempt, StepWorkFailed
from workflows.services.tool_servers import registered_headers
from workflows.toolservers import ServerConnection, ToolServerError

# As many tools as OpenAI lets one call offer.
MAX_AGENT_TOOLS = 128
_UNKNOWN_OUTCOME = (
    "The call's outcome is unknown: the worker running it stopped before it returned. It was not made "
    "again, as the tool does not say that calling it twice is harmless."
)


class ToolListKind(NoCallStepKind):
    """An agent with tools, its own step: renders its prompts, as a single call's step would, and
    lists the tools its servers offer it. It costs nothing, and counts as the agent's execution."""

    name = "tool_list"

    def prepare(
        self,
        *,
        node: AgentSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        system_prompt, prompt, effort = rendered_prompts(node, context)
        servers = [definition.mcp_servers[name].to_dict() for name in node.tool_servers]
        data = {
            "servers": servers,
            "chosen_by": None if node.tools is None else list(node.tools),
            "prompts": {"system_prompt": system_prompt, "prompt": prompt, "effort": effort},
        }
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), data=data)

    def run(self, attempt: StepAttempt) -> CompletionResult:
        data = attempt.prepared.data
        servers = [McpServerSpec.from_dict(server) for server in data["servers"]]
        _check_local_execution(attempt.team_id, servers)
        chosen_by = None if data["chosen_by"] is None else tuple(data["chosen_by"])
        tools, matched = [], set()
        # The servers are asked in turn, all of them within one MCP_TIMEOUT_SECONDS: below the step's
        # soft time limit, however many slow servers a workflow names.
        ends_at = time.monotonic() + settings.MCP_TIMEOUT_SECONDS
        for server in servers:
            left = ends_at - time.monotonic()
            if left <= 0:
                raise StepWorkFailed(
                    "ToolServerError",
                    f"Listing the agent's tools took longer than MCP_TIMEOUT_SECONDS ({settings.MCP_TIMEOUT_SECONDS:g} s) "
                    f"in all; MCP server '{server.name}' and those after it were not asked.",
                )
            try:
                listed = toolservers.tools_list(connection_to(server, team_id=attempt.team_id, within=left))
            except ToolServerError as exc:
                raise StepWorkFailed("ToolServerError", f"MCP server '{server.name}' could not list its tools: {exc}") from None
            for tool in listed:
                if server.tools is not None and tool.name not in server.tools:
                    continue
                name = model_tool_name(server.name, tool.name, {each["name"] for each in tools})
                if not tool_chosen(server=server.name, tool=tool.name, model_name=name, names=chosen_by):
                    continue
                matched.update({tool.name, name, f"{server.name}__{tool.name}"})
                tools.append(
                    {
                        "name": name,
                        "server": server.name,
                        "tool": tool.name,
                        "description": tool.description,
                        "input_schema": tool.input_schema,
                        "repeatable": tool.read_only or tool.idempotent,
                    }
                )
        if len(tools) > MAX_AGENT_TOOLS:
            raise StepWorkFailed(
                "ToolServerError",
                f"The agent's MCP servers offer it {len(tools)} tools; a model is offered at most {MAX_AGENT_TOOLS}: "
                "choose fewer with the agent's 'tools' or the servers' 'tools' filters.",
            )
        unmatched = [name for name in chosen_by or () if name not in matched]
        output = {"tools": tools, "unmatched": unmatched, **data["prompts"]}
        return CompletionResult(input_tokens=0, output_tokens=0, output=output)

    def completed_event(self, *, step: Step, output) -> tuple[str, dict]:
        listed = {"tools": [tool["name"] for tool in output["tools"]]}
        if output["unmatched"]:
            # Conductor drops a tool name no server offers with a warning: here it is said in the run.
            listed["unmatched"] = output["unmatched"]
        return EventType.TOOLS_LISTED, listed


class ModelCallKind(AgentKind):
    """A model call of a tool loop: the agent's call with its tools and the loop's turns so far,
    priced and charged as any call of the agent is. Its output is `{"tool_calls": [...], "replay":
    ...}` when the model asked for tools, `{"answer": ...}` when it answered."""

    name = "model_call"

    def prepare(
        self,
        *,
        node: AgentSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        """`context` is the loop so far (`loop_so_far`), and for an agent with a session_key its
        session's earlier exchanges (`history`); nothing is rendered: the prompts were, once."""
        listing = context["listing"]
        tools = tuple(
            ToolSpec(name=tool["name"], description=tool["description"], input_schema=tool["input_schema"])
            for tool in listing["tools"]
        )
        transcript = tuple(_turn(entry) for entry in context["transcript"])
        prepared = self.call(
            agent=node,
            model=node.model,
            system_prompt=listing["system_prompt"],
            prompt=listing["prompt"],
            output_schema=node.output,
            temperature=node.temperature,
            mock=node.mock,
            definition=definition,
            may_override_prices=may_override_prices,
            provider_routes=provider_routes,
            effort=listing["effort"],
            deadline_seconds=deadline(node),
            tools=tools,
            transcript=transcript,
            loop_text=transcript_text(tools=listing["tools"], transcript=context["transcript"]) if tools else "",
            history=context.get("history"),
        )
        return replace(prepared, data={"turn": context["turn"], "max_model_calls": node.max_agent_iterations})

    def run(self, attempt: StepAttempt) -> CompletionResult:
        result = super().run(attempt)
        if not result.tool_calls:
            return replace(result, output={"answer": result.output})
        turn, limit = attempt.prepared.data["turn"], attempt.prepared.data["max_model_calls"]
        if turn >= limit:
            # Billed all the same: the error carries its usage, which the step is charged.
            raise ProviderError(
                f"The model asked for tools at its model call {turn} of at most {limit} "
                "(the agent's max_agent_iterations): the loop stops here.",
                usage=result,
                error_type="MaxAgentIterationsError",
            )
        calls = [asdict(call) for call in result.tool_calls]
        return replace(result, output={"tool_calls": calls, "replay": result.replay})

    def completed_event(self, *, step: Step, output) -> tuple[str, dict]:
        if "answer" in output:
            return EventType.AGENT_COMPLETED, {"turn": step.validation["turn"]}
        names = [call["name"] for call in output["tool_calls"]]
        return EventType.MODEL_CALL_COMPLETED, {"turn": step.validation["turn"], "tool_calls": names}


@dataclass(frozen=True, kw_only=True)
class ToolCallResult(CompletionResult):
    """A tool call's result, and whether the call may have been made: what a priced call is charged by."""

    made: bool = False


class ToolCallKind(NoCallStepKind):
    """A tool call of a tool loop: the call the model asked for, made to the tool's MCP server, its
    result cut to the workflow's tool_output limit. A tool that fails, or a server that cannot be
    reached, is an error result the model reads, as in conductor: the loop goes on.

    A tool an operator priced (ToolPrice) costs its price per call: the gate reserves it before the
    call, as it reserves a model call's estimate, and a call that may have been made is charged it, a
    ledger entry of kind tool. One that was never made (no such tool, arguments that are no object,
    a server not reached) costs nothing; one whose server answered, with an error too, may have
    received it and did not answer in time, or whose worker died during it (its outcome unknown, not
    made again), is charged."""

    name = "tool_call"

    def prepare(
        self,
        *,
        node: AgentSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        call = context["call"]
        tool = next((tool for tool in context["listing"]["tools"] if tool["name"] == call["name"]), None)
        server = None if tool is None else definition.mcp_servers.get(tool["server"])
        data = {"call": call, "max_chars": definition.tool_output_chars}
        if tool is None:
            data["result"] = _result(call, f"There is no tool named '{call['name']}'.", is_error=True)
        elif "_unparsed" in call["arguments"]:
            data["result"] = _result(call, "The arguments are not a JSON object.", is_error=True)
        elif server is None:
            data["result"] = _result(call, f"The MCP server '{tool['server']}' is no longer in the workflow.", is_error=True)
        elif context["tried_before"] and not tool["repeatable"]:
            # Not made again. The attempt that did not settle may have made it: that attempt is
            # charged the call's price as an estimate (services/ledger.py), this one nothing.
            data["result"] = _result(call, _UNKNOWN_OUTCOME, is_error=True)
        else:
            data |= {"server": server.to_dict(), "tool": tool["tool"]}
        if server is not None:
            key = tool_server_key(server.command if server.transport == "stdio" else server.url)
            priced = tool_price_for(team_id=context["team_id"], server=key, tool=tool["tool"])
            if priced is not None:
                price, source = priced
                data |= {"server_key": key, "tool": tool["tool"]}
                return PreparedStep(
                    kind=self.name, estimate_usd=price, provider=TOOL_PROVIDER, price_source=source, data=data
                )
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), model="", data=data)

    def run(self, attempt: StepAttempt) -> CompletionResult:
        data = attempt.prepared.data
        output, made = (data["result"], data.get("made", False)) if "result" in data else self._call(attempt)
        return ToolCallResult(input_tokens=0, output_tokens=0, output=output, made=made)

    def _call(self, attempt: StepAttempt) -> tuple[dict, bool]:
        """The call's result, and whether it may have been made."""
        data = attempt.prepared.data
        server, call = McpServerSpec.from_dict(data["server"]), data["call"]
        try:
            _check_local_execution(attempt.team_id, [server])
            connection = connection_to(server, team_id=attempt.team_id)
        except StepWorkFailed as exc:
            return _result(call, f"The tool could not be called: {exc}", is_error=True), False
        try:
            outcome = toolservers.tool_call(connection, name=data["tool"], arguments=call["arguments"])
        except ToolServerError as exc:
            return _result(call, f"The tool could not be called: {exc}", is_error=True), exc.sent
        return _result(call, cut_tool_output(outcome.content, data["max_chars"]), is_error=outcome.is_error), True

    def settle(
        self, *, team: Team, run: Run, step: Step, attempt: StepAttempt, usage: Usage, **run_deltas
    ) -> Charged:
        """A priced call that may have been made is charged its price; any other costs nothing."""
        made = isinstance(usage, ToolCallResult) and usage.made
        if "server_key" not in attempt.prepared.data or not made:
            add(run, **run_deltas)
            return Charged(cost_usd=Decimal("0"))
        cost, entry = ledger_charge_tool(
            team_id=team.pk, run=run, step=step, attempt=attempt.number, prepared=attempt.prepared, **run_deltas
        )
        return Charged(cost_usd=cost, entry=entry)

    def completed_event(self, *, step: Step, output) -> tuple[str, dict]:
        return EventType.TOOL_CALL_COMPLETED, {
            "turn": step.validation["turn"],
            "tool": output["name"],
            "is_error": output["is_error"],
        }


def loop_so_far(step: Step, *, team_id: int) -> dict:
    """What a step of a tool loop is prepared from: the listing its agent's own step made, the loop's
    turns before it (each model call that asked for tools, then the result of each of its calls),
    its turn, a tool call's call, whether an earlier attempt at it was admitted (its outcome
    unknown), and the run's team, whose tool prices apply."""
    chain = (
        Step.objects.filter(
            run_id=step.run_id,
            agent=step.agent,
            iteration=step.iteration,
            group=step.group,
            branch_index=step.branch_index,
            sequence__lt=step.sequence,
            status=StepStatus.SUCCEEDED,
        )
        .order_by("sequence")
        .values_list("role", "output")
    )
    listing, transcript, asked = None, [], []
    for role, output in chain:
        if role == "":
            listing = output
        elif role == MODEL_CALL_ROLE:
            asked = output["tool_calls"]
            transcript.append({"calls": asked, "replay": output["replay"]})
        elif role == TOOL_CALL_ROLE:
            transcript.append(output)
    return {
        "listing": listing,
        "transcript": transcript,
        "turn": step.validation["turn"],
        # A tool call's own: the one at its index among what the latest model call asked for.
        "call": asked[step.validation["index"]] if step.role == TOOL_CALL_ROLE else None,
        # An earlier attempt was admitted and did not settle (its worker died, or the run stopped or
        # failed it meanwhile): whether it made its call is not known.
        "tried_before": step.attempts > 0,
        "team_id": team_id,
    }


def connection_to(server: McpServerSpec, *, team_id: int | None = None, within: float | None = None) -> ServerConnection:
    """How to reach `server`, within the operator's MCP_TIMEOUT_SECONDS (and `within` seconds, when
    the exchange is one of several that share that time). An HTTP or SSE server that
    `team_id`'s team registered (the same name, transport and URL) is sent the registration's headers,
    read now, outside any transaction, and kept nowhere else; a header the workflow wrote with
    `${...}` is never sent (services/tool_servers.py)."""
    registered = None
    if team_id is not None and server.transport in REMOTE_TRANSPORTS:
        try:
            registered = registered_headers(team_id=team_id, server=server)
        except CredentialsUnreadable as exc:
            raise StepWorkFailed("ToolServerError", str(exc)) from None
    timeout = settings.MCP_TIMEOUT_SECONDS if within is None else min(within, settings.MCP_TIMEOUT_SECONDS)
    if server.timeout_ms is not None:
        timeout = min(timeout, server.timeout_ms / 1000)
    return ServerConnection(
        name=server.name,
        transport=server.transport,
        timeout_seconds=timeout,
        url=server.url,
        headers=headers_to_send(written=server.headers, registered=registered),
        command=server.command,
        args=server.args,
        env=server.env,
    )


def _check_local_execution(team_id: int, servers: list[McpServerSpec]) -> None:
    """A stdio server starts a process on this worker: only where the operator allows the team to,
    as for script steps, checked again now in case that changed since the upload."""
    if not any(server.transport == "stdio" for server in servers):
        return
    if not settings.SCRIPT_STEPS_ENABLED or not Team.objects.filter(pk=team_id, may_run_scripts=True).exists():
        raise StepWorkFailed(
            "ToolServerError", "stdio MCP servers run commands on the service's workers, which this team may no longer do."
        )


def _result(call: Mapping, content: str, *, is_error: bool) -> dict:
    return {"call_id": call["id"], "name": call["name"], "content": content, "is_error": is_error}


def _turn(entry: dict) -> AssistantTurn | ToolResult:
    if "calls" in entry:
        return AssistantTurn(calls=tuple(ToolCall(**call) for call in entry["calls"]), replay=entry["replay"])
    return ToolResult(**entry)
