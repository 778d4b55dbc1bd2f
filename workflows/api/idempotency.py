"""The Idempotency-Key header on a POST endpoint; the rules are in services.idempotency."""

from collections.abc import Callable
from functools import wraps

from rest_framework.response import Response

from workflows.services.idempotency import (
    IdempotentResponse,
    check_idempotency_key,
    idempotency_key_execute,
    request_fingerprint,
)

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def idempotent(view_method: Callable[..., Response]) -> Callable[..., Response]:
    """A request with an Idempotency-Key runs once: a retry of it gets the first response again."""

    @wraps(view_method)
    def wrapper(view, request, *args, **kwargs) -> Response:
        key = request.headers.get(KEY_HEADER)
        if key is None:
            return view_method(view, request, *args, **kwargs)
        check_idempotency_key(key=key)

        def execute() -> IdempotentResponse:
            response = view_method(view, request, *args, **kwargs)
            return IdempotentResponse(status=response.status_code, body=response.data)

        outcome = idempotency_key_execute(
            team=request.auth.team,
            key=key,
            fingerprint=request_fingerprint(method=request.method, path=request.path, body=request.data),
            execute=execute,
        )
        response = Response(outcome.body, status=outcome.status)
        if outcome.replayed:
            response[REPLAYED_HEADER] = "true"
        return response

    return wrapper
