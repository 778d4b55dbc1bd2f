"""What the real providers share: telling transient errors from definitive ones, keeping credentials
out of messages, and reading a structured answer."""

import json
import re
from http import HTTPStatus
from typing import Any

import httpx2

from django.conf import settings

from workflows import outbound
from workflows.definition import count_tokens, is_count, output_problems
from workflows.errors import OutboundRefused, OutboundUnresolved
from workflows.providers.base import CompletionRequest, Credentials, ProviderError, Usage

# Worth another attempt: a timeout, a conflict, a rate limit, or the server's own failure.
RETRYABLE_STATUS_CODES = frozenset({408, 409, 429})
# Anything shaped like a provider API key, whoever's it is.
_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,}|key-[A-Za-z0-9_\-]{6,})")
REDACTED = "[redacted]"
MAX_MESSAGE_LENGTH = 500
# How much of the provider's own error message a team is shown.
MAX_PROVIDER_MESSAGE_LENGTH = 300
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")
# Where a tool call's arguments that are no JSON object are kept (see ToolCall).
UNPARSED = "_unparsed"


def uncached(prompt: object, cached: object) -> object:
    """OpenAI's uncached input, `prompt_tokens - cached_tokens`; the prompt count as reported when
    either is no count, which the step's settlement then bills at its worst case."""
    return prompt - cached if is_count(prompt) and is_count(cached) else prompt  # type: ignore[operator]


def is_retryable_status(status_code: int) -> bool:
    return status_code in RETRYABLE_STATUS_CODES or status_code >= 500


def redact(text: str, credentials: Credentials | None) -> str:
    """The text without the API key, or anything that looks like one; cut to a readable length."""
    if credentials is not None and credentials.api_key:
        text = text.replace(credentials.api_key, REDACTED)
    text = _KEY_PATTERN.sub(REDACTED, text)
    return text[:MAX_MESSAGE_LENGTH]


def retry_after_seconds(headers) -> float | None:
    """The server's Retry-After, when it gives one in seconds."""
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def status_error(
    *, provider: str, response, message: Any, credentials: Credentials | None, usage: Usage | None
) -> ProviderError:
    """The error for a provider's answer that is not a success. `message` is the one its JSON error
    body gave, if any: any other body (a proxy's page, a redirect's target) is not shown to the team."""
    status_code = response.status_code
    if 300 <= status_code < 400:
        shown = "a redirect, which is not followed; set the base URL to the address it points to"
    elif isinstance(message, str) and message.strip():
        shown = _CONTROL_CHARACTERS.sub(" ", message).strip()[:MAX_PROVIDER_MESSAGE_LENGTH]
    else:
        shown = outbound.status_phrase(status_code)
    return ProviderError(
        redact(f"{provider} answered {status_code}: {shown}", credentials),
        retryable=is_retryable_status(status_code),
        usage=usage,
        retry_after_seconds=retry_after_seconds(response.headers),
        status_code=status_code,
        # A gateway that gave up waiting for the provider: the provider may have answered, and billed.
        outcome_unknown=usage is None and status_code == HTTPStatus.GATEWAY_TIMEOUT,
    )


def connection_error(*, provider: str, error: Exception, credentials: Credentials | None) -> ProviderError:
    """The error for a call that got no answer: refused by the outbound check (definitive; an SDK
    may raise the refusal itself or wrap it), or a timeout or lost connection (worth another attempt)."""
    cause = error
    while cause is not None and not isinstance(cause, OutboundRefused):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OutboundUnresolved):
        return ProviderError(f"{provider} could not be reached: {cause.message}", retryable=True)
    if cause is not None:
        return ProviderError(f"{provider} was not called: {cause.message}")
    return ProviderError(
        redact(f"{provider} could not be reached: {error}", credentials),
        retryable=True,
        outcome_unknown=request_may_have_been_sent(error),
    )


def request_may_have_been_sent(error: BaseException) -> bool:
    """Whether a call that got no answer may have reached the provider: unless it failed while
    connecting, before a byte of the request was sent."""
    cause = error
    while cause is not None:
        if isinstance(cause, httpx2.ConnectError | httpx2.ConnectTimeout):
            return False
        cause = cause.__cause__ or cause.__context__
    return True


def sdk_client(sdk_class, credentials: Credentials, *, default_base_url: str, timeout: float):
    """An SDK client for one call, with the settings every provider's call needs."""
    return sdk_class(
        api_key=credentials.api_key,
        # Given explicitly: left out, the SDK would take its *_BASE_URL from the environment and send
        # a team's own key to the operator's endpoint.
        base_url=credentials.base_url or default_base_url,
        # Off: every attempt is the step's to count, gate and charge (services/steps/execute.py retries).
        max_retries=0,
        timeout=timeout,
        # Every connection checked where it goes (workflows/outbound.py), redirects not followed.
        http_client=outbound.http_client(timeout=timeout),
    )


def call_timeout(request: CompletionRequest) -> float:
    """How long the call may take: the agent's deadline, else the operator's PROVIDER_TIMEOUT_SECONDS."""
    return request.deadline_seconds or settings.PROVIDER_TIMEOUT_SECONDS


def timeout_error(
    *, provider: str, error: Exception, request: CompletionRequest, credentials: Credentials | None
) -> ProviderError:
    """The error for a call that ran out of time. The operator's timeout is worth another attempt; the
    agent's own deadline is not, as conductor does not retry an agent's timeout: the same deadline
    would likely run out again, each attempt gated and charged."""
    if request.deadline_seconds is None:
        return connection_error(provider=provider, error=error, credentials=credentials)
    return ProviderError(
        f"{provider} {deadline_passed(request)}; a call past the agent's deadline is not tried again.",
        outcome_unknown=request_may_have_been_sent(error),
    )


def stream_retryable(request: CompletionRequest, *, timed_out: bool) -> bool:
    """Whether a stream that stopped early is worth another attempt: unless it ran past the agent's
    own deadline (timeout_error says why)."""
    return not (timed_out and request.deadline_seconds is not None)


def deadline_passed(request: CompletionRequest) -> str:
    """What ran out, for a message: the agent's deadline or the operator's timeout."""
    if request.deadline_seconds is None:
        return "took longer than PROVIDER_TIMEOUT_SECONDS"
    seconds = request.deadline_seconds
    return f"took longer than the agent's deadline of {seconds:g} s (its timeout_seconds or max_session_seconds)"


def worst_case_usage(request: CompletionRequest, *, request_id: str) -> Usage:
    """What a call that was made is billed when its usage cannot be known: the local count of its
    input (its prompts, its session's earlier exchanges, a tool loop's tools and turns) and the whole
    output cap, the worst case the gate estimated for it. Never $0."""
    return Usage(
        input_tokens=count_tokens(request.input_text()),
        output_tokens=request.max_tokens,
        request_id=request_id,
    )


def unreadable_answer(*, provider: str, error: Exception, request: CompletionRequest, request_id: str) -> ProviderError:
    """The error for an answer that came back but could not be read (a body the SDK could not parse, a
    message that is null): the call was made, so it is billed at its worst case, and not tried again."""
    return ProviderError(
        f"{provider}'s answer could not be read ({type(error).__name__}); it is billed at its worst case.",
        usage=worst_case_usage(request, request_id=request_id),
    )


def history_messages(request: CompletionRequest) -> list[dict[str, str]]:
    """The earlier exchanges of the session a call continues, as the user and assistant messages
    both APIs take, oldest first."""
    messages = []
    for exchange in request.history:
        messages += [{"role": "user", "content": exchange.prompt}, {"role": "assistant", "content": exchange.answer}]
    return messages


def missing_credentials(provider: str) -> ProviderError:
    return ProviderError(f"No credentials for provider '{provider}'; add the team's API key or set it in the environment.")


def tool_arguments(text: str) -> dict[str, Any]:
    """A tool call's arguments: the JSON object the model wrote, else its text under "_unparsed" (at
    most PROVIDER_TOOL_ARGUMENTS_MAX_BYTES, checked_tool_calls saw to that), for the tool loop to
    answer as it sees fit."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python reads
        value = None
    return value if isinstance(value, dict) else {UNPARSED: text}


def checked_tool_calls(provider: str, arguments: list[str], *, usage: Usage) -> None:
    """Refuses an answer with more tool calls than PROVIDER_TOOL_CALLS_MAX, or a call whose arguments
    (the JSON text the model wrote) are larger than PROVIDER_TOOL_ARGUMENTS_MAX_BYTES. The call was
    made, so the error carries its usage, and it is not tried again."""
    most = settings.PROVIDER_TOOL_CALLS_MAX
    if len(arguments) > most:
        raise ProviderError(
            f"{provider}'s answer asked for {len(arguments)} tool calls, more than PROVIDER_TOOL_CALLS_MAX ({most}).",
            usage=usage,
        )
    largest = max((len(text.encode()) for text in arguments), default=0)
    if largest > settings.PROVIDER_TOOL_ARGUMENTS_MAX_BYTES:
        raise ProviderError(
            f"{provider}'s answer has a tool call whose arguments are {largest} bytes, more than "
            f"PROVIDER_TOOL_ARGUMENTS_MAX_BYTES ({settings.PROVIDER_TOOL_ARGUMENTS_MAX_BYTES}).",
            usage=usage,
        )


def structured_answer(text: str, request: CompletionRequest, *, usage: Usage) -> Any:
    """The answer for an agent with an output schema, parsed and checked; ProviderError (carrying the
    call's usage, which is billed all the same) when it does not fit."""
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python reads
        raise ProviderError(f"The model's answer is not JSON: {text[:200]!r}", usage=usage) from None
    return checked_answer(answer, request, usage=usage)


def checked_answer(answer: Any, request: CompletionRequest, *, usage: Usage) -> Any:
    if not request.answer_checked:
        return answer
    problems = output_problems(answer, request.output_schema or {})
    if problems:
        raise ProviderError(f"The model's answer does not fit the agent's output schema: {'; '.join(problems[:5])}", usage=usage)
    return answer
