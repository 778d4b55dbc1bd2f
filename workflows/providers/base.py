from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from workflows.definition import history_text, transcript_text


@dataclass(frozen=True)
class ToolSpec:
    """A tool a model may call: its name as the model sees it (`[A-Za-z0-9_-]{1,64}`, which both
    providers accept), what it does, and the JSON Schema of its arguments (an object)."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for: the provider's id for it, the tool's name, and its arguments (a
    JSON object; what the model wrote when it is no object, under "_unparsed")."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class AssistantTurn:
    """An earlier model call of a tool loop that asked for tools: its calls, and `replay`, the
    provider's own message for it, sent back as it came (Anthropic's thinking blocks must be)."""

    calls: tuple[ToolCall, ...]
    replay: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned, as the model is shown it."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class SessionExchange:
    """An earlier execution of the session a call continues (definition/sessions.py): the prompt it
    was sent, a user message, and the answer it gave, an assistant message (as text)."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    system_prompt: str
    prompt: str
    max_tokens: int
    temperature: float | None = None
    output_schema: dict[str, dict] | None = None
    # Whether an answer must fit `output_schema`: a validator's verdict is only steered by it, and
    # read leniently by its caller (definition/validation.py), as conductor reads it.
    answer_checked: bool = True
    stream: bool = False
    # One of conductor's levels (definition/reasoning.py), rendered; None: the call does not reason.
    reasoning_effort: str | None = None
    # The agent's own deadline for the call, when below the operator's PROVIDER_TIMEOUT_SECONDS.
    deadline_seconds: float | None = None
    # Provider-specific settings from the agent, e.g. the fake provider's `mock` block.
    options: dict[str, Any] = field(default_factory=dict)
    # A call of a tool loop: the tools the model may call, and the loop's turns so far after the
    # prompt, in order (each AssistantTurn followed by a ToolResult for each of its calls).
    tools: tuple[ToolSpec, ...] = ()
    transcript: tuple[AssistantTurn | ToolResult, ...] = ()
    # A call that continues a session: its earlier exchanges, oldest first, sent after the system
    # prompt and before `prompt`.
    history: tuple[SessionExchange, ...] = ()

    def input_text(self) -> str:
        """Everything the call sends as text to count, as the gate counted it: its system prompt,
        its session's earlier exchanges, its prompt, and a tool loop's tools and turns."""
        return self.system_prompt + self.history_text() + self.prompt + self.loop_text()

    def history_text(self) -> str:
        """The session's earlier exchanges as text to count; "" for a call that continues none."""
        return history_text((exchange.prompt, exchange.answer) for exchange in self.history)

    def loop_text(self) -> str:
        """What a call of a tool loop sends beyond its prompts (its tools and its turns so far), as
        text to count, as the gate counted it (definition/tools.py); "" for any other call."""
        if not self.tools:
            return ""
        return transcript_text(
            tools=[asdict(tool) for tool in self.tools], transcript=[asdict(entry) for entry in self.transcript]
        )


@dataclass(frozen=True)
class Usage:
    """What one call to a provider used, as disjoint counts: no token is in two of them."""

    input_tokens: int  # uncached input only
    output_tokens: int  # reasoning included
    cached_input_tokens: int = 0  # input read from the prompt cache
    cache_write_tokens: int = 0  # input written to the prompt cache
    request_id: str = ""


@dataclass(frozen=True, kw_only=True)
class CompletionResult(Usage):
    """The model's answer (`output`), or, for a call with tools that asked for some, its
    `tool_calls` and the `replay` of its message (see AssistantTurn); `output` is then None."""

    output: Any
    tool_calls: tuple[ToolCall, ...] = ()
    replay: dict[str, Any] | None = None


@dataclass(frozen=True)
class Credentials:
    """What a provider needs to call its API. The key never appears in a repr."""

    api_key: str = field(repr=False)
    base_url: str = ""


class ProviderError(Exception):
    """A provider call failed; the message is safe to show to the run's owner (no credentials in it).

    `retryable` errors (rate limits, server errors, timeouts, lost connections) may succeed if the step
    is tried again; others never will. `usage` is what the failed call was billed for, when the
    provider said. `outcome_unknown`: the request may have reached the provider, which may bill it,
    but no answer came (a timeout, a connection lost after the request was sent): with no `usage`,
    the attempt is charged its reservation as an estimate.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        usage: Usage | None = None,
        retry_after_seconds: float | None = None,
        status_code: int | None = None,
        error_type: str = "ProviderError",
        outcome_unknown: bool = False,
    ):
        super().__init__(message)
        self.outcome_unknown = outcome_unknown
        self.error_type = error_type  # what the step's error is called
        self.message = message
        self.retryable = retryable
        self.usage = usage
        self.retry_after_seconds = retry_after_seconds
        self.status_code = status_code


class Provider(Protocol):
    name: str
    # Whether a run needs credentials for it before it may start.
    needs_credentials: bool

    def complete(self, request: CompletionRequest, *, credentials: Credentials | None) -> CompletionResult: ...
