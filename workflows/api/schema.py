"""The OpenAPI description of the API (drf-spectacular) that is not a serializer of its own: the one error
shape and the error types, the security schemes, the Idempotency-Key header and a workflow to upload.

Views name their request and response serializers with `extend_schema`; what every operation shares lives
here, so that the schema at /api/v1/schema/ says what the code does (tests/api/test_schema.py)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers

from workflows.services.idempotency import KEY_MAX_LENGTH

# Each `type` an error may have, the HTTP status it comes with, and what it means. docs/api.md shows the same
# table; tests/api/test_schema.py checks that both list every type the code raises.
ERROR_TYPES: dict[str, tuple[int, str]] = {
    "validation_error": (400, "A parameter, header or body field is invalid; `details` lists each {path, message}."),
    "parse_error": (400, "The body is not valid JSON (or the definition is not UTF-8)."),
    "bad_request": (400, "Django refused the request as suspicious (for example, too many fields)."),
    "definition_invalid": (400, "The workflow definition breaks a rule; `details` lists each problem."),
    "unpriced_model": (400, "An enforced budget needs a price for a model that has none; `details.models`."),
    "missing_credentials": (400, "The team has no credentials for a provider the workflow uses."),
    "provider_not_routed": (400, "A provider the workflow names has no route; `details.providers`."),
    "endpoint_mismatch": (400, "The workflow names an endpoint the team's credentials do not point at."),
    "authentication_failed": (401, "The API key (or the staff user's password) is wrong or revoked."),
    "not_authenticated": (401, "No credentials were given."),
    "permission_denied": (403, "The caller may not do this (a team API key on a staff endpoint)."),
    "not_found": (404, "No such endpoint, or no such object in the caller's team."),
    "method_not_allowed": (405, "The endpoint does not answer this HTTP method."),
    "not_acceptable": (406, "The endpoint cannot answer in the media type the Accept header asks for."),
    "invalid_run_state": (409, "The run is not in a state that allows this; `details.status` is its state."),
    "idempotency_key_in_progress": (409, "A request with this Idempotency-Key is still being answered."),
    "request_too_large": (413, "The body is larger than the service accepts."),
    "unsupported_media_type": (415, "The body's Content-Type is not one the endpoint accepts."),
    "idempotency_key_reused": (422, "This Idempotency-Key was used for a different request."),
    "throttled": (429, "Too many requests; retry after the Retry-After header's seconds."),
    "too_many_streams": (429, "The team has as many event streams open as it may; `details.max_streams`."),
    "server_error": (500, "An unexpected error; it has been logged."),
}

_ERROR_DETAIL_SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
    "required": ["path", "message"],
}


@extend_schema_field(
    {
        "oneOf": [{"type": "array", "items": _ERROR_DETAIL_SCHEMA}, {"type": "object", "additionalProperties": {}}],
        "description": "A list of {path, message} for invalid input; otherwise an object, often empty, with the "
        "facts the error is about (such as the run's `status`).",
    }
)
class ErrorDetailsField(serializers.JSONField):
    """An error's `details`, which the exception handler writes (workflows/api/errors.py)."""


class ErrorBodySerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=[(type_, f"{status}: {meaning}") for type_, (status, meaning) in ERROR_TYPES.items()],
        help_text="What went wrong, for a program to act on; each type comes with the HTTP status shown.",
    )
    message = serializers.CharField(help_text="What went wrong, for a person.")
    details = ErrorDetailsField()


class ErrorSerializer(serializers.Serializer):
    """Every 4xx and 5xx answer has this shape; `error.type` says which error it is."""

    error = ErrorBodySerializer()


# The errors every operation may answer besides its own: a bad query parameter or header, or a request Django
# finds suspicious, an Accept header for another media type, and a rate limit.
_EVERY_OPERATION = ("validation_error", "bad_request", "not_acceptable", "throttled")
_AUTHENTICATED = ("authentication_failed", "not_authenticated")
# A body may be malformed, too large or of another media type.
_WITH_BODY = ("parse_error", "request_too_large", "unsupported_media_type")


def error_responses(*types: str, authenticated: bool = True, body: bool = False, media_type: str | None = None) -> dict:
    """The error answers of an operation: those every operation gives, those of an authenticated one and of
    one with a body, and `types`, its own; each status is described by the types that come with it. With
    `media_type`, the answers are keyed (status, media type), for an operation that also answers another
    media type when it succeeds (errors are always JSON)."""
    names = [*_EVERY_OPERATION, *(_AUTHENTICATED if authenticated else ()), *(_WITH_BODY if body else ()), *types]
    by_status: dict[int, list[str]] = {}
    for name in names:
        by_status.setdefault(ERROR_TYPES[name][0], []).append(name)
    responses = {}
    for status, named in sorted(by_status.items()):
        description = "; ".join(f"`{name}`: {ERROR_TYPES[name][1]}" for name in named)
        responses[(status, media_type) if media_type else status] = OpenApiResponse(ErrorSerializer, description=description)
    return responses


class ServerSentEventSerializer(serializers.Serializer):
    """One event of a `text/event-stream` answer, as an EventSource reads it (workflows/api/streams.py)."""

    id = serializers.CharField(required=False, help_text="The event's id; none on `end`.")
    event = serializers.CharField(help_text="The event's type; `end` last, once the run waits for a person.")
    data = serializers.CharField(
        help_text="The event as `GET /runs/{id}/events` lists it, as compact JSON; on `end`, `{\"status\": ...}`."
    )


ID_PARAMETER = OpenApiParameter(
    "id", int, OpenApiParameter.PATH, description="The object's id, in the caller's team.", examples=[OpenApiExample("first", value=1)]
)

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": KEY_MAX_LENGTH, "pattern": "^[\\x20-\\x7e]+$"},
    OpenApiParameter.HEADER,
    required=False,
    description=f"1 to {KEY_MAX_LENGTH} printable ASCII characters, new for each operation and the same for its "
    "retries. A retry of the same request gets the first success again, with `Idempotent-Replayed: true`; the "
    "same key with another request is a 422, and while the first is being answered a 409. Keys last 24 hours.",
)


def idempotent_replayed_header(status: int) -> OpenApiParameter:
    """The header a replayed answer to a request with an Idempotency-Key carries, on its success `status`."""
    return OpenApiParameter(
        "Idempotent-Replayed",
        str,
        OpenApiParameter.HEADER,
        enum=["true"],
        response=[status],
        description="Present on the first success answered again to a retry with the same Idempotency-Key.",
    )


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "workflows.api.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        scheme = build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")
        return {**scheme, "description": "A team's API key: `Authorization: Bearer <key>`."}


class StaffBasicScheme(OpenApiAuthenticationExtension):
    target_class = "workflows.api.auth.StaffBasicAuthentication"
    name = "staffBasic"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic", "description": "A staff user's name and password."}


# An offline workflow to upload (the `fake` provider answers every step), so that the schema's example
# starts a run that really executes: examples/research-pipeline.yaml, shortened.
WORKFLOW_EXAMPLE_YAML = """\
workflow:
  name: example-brief
  entry_point: writer
  input:
    topic: {type: string, required: true}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 300}
agents:
  - name: writer
    prompt: "Write about {{ workflow.input.topic }}."
    output: {draft: {type: string}}
    mock: {output: {draft: "a draft"}, output_tokens: 100}
"""

RUN_EXAMPLE = {"workflow": "example-brief", "inputs": {"topic": "budgets"}, "limits": {"budget_usd": "1.00", "budget_mode": "enforce"}}
