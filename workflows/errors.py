"""The one family of errors services raise; the API maps each to its HTTP status in one handler."""

from typing import Any


class ApplicationError(Exception):
    status_code = 400
    type = "invalid_request"

    def __init__(self, message: str, *, details: Any = None):
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else {}


class ValidationFailed(ApplicationError):
    type = "validation_error"


class DefinitionInvalid(ApplicationError):
    type = "definition_invalid"


class UnpricedModel(ApplicationError):
    type = "unpriced_model"


class MissingCredentials(ApplicationError):
    type = "missing_credentials"


class ProviderNotRouted(ApplicationError):
    type = "provider_not_routed"


class EndpointMismatch(ApplicationError):
    """A workflow names an endpoint its team's credentials do not point at (definition/endpoints.py)."""

    type = "endpoint_mismatch"


class NotFound(ApplicationError):
    status_code = 404
    type = "not_found"


class InvalidRunState(ApplicationError):
    status_code = 409
    type = "invalid_run_state"


class IdempotencyKeyInProgress(ApplicationError):
    status_code = 409
    type = "idempotency_key_in_progress"


class IdempotencyKeyReused(ApplicationError):
    status_code = 422
    type = "idempotency_key_reused"


class TooManyStreams(ApplicationError):
    """The team has as many event streams open as it may (EVENT_STREAM_MAX_PER_TEAM)."""

    status_code = 429
    type = "too_many_streams"


class OutboundRefused(ValidationFailed):
    """A URL or address the service may not connect to (workflows/outbound.py)."""


class OutboundUnresolved(OutboundRefused):
    """A host with no address: refused when a URL is saved, tried again later when a request is made."""


def problems_as_details(problems) -> list[dict]:
    return [{"path": problem.path, "message": problem.message} for problem in problems]
