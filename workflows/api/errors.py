"""Every 4xx and 5xx answer has one shape: {"error": {"type", "message", "details"}}."""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from workflows.errors import ApplicationError

logger = logging.getLogger(__name__)

_DRF_TYPES = {
    exceptions.ValidationError: "validation_error",
    exceptions.ParseError: "parse_error",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


def error_body(type_: str, message: str, details=None) -> dict:
    return {"error": {"type": type_, "message": message, "details": details if details is not None else {}}}


def exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.type, exc.message, exc.details), status=exc.status_code)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "Not found."), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, RequestDataTooBig):
        message = f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        return Response(error_body("request_too_large", message), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, SuspiciousOperation):
        return Response(error_body("bad_request", str(exc)), status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in %s", context.get("view"))
        return Response(
            error_body("server_error", "An unexpected error happened; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("validation_error", "The request is invalid.", _flatten(exc.detail))
    elif isinstance(exc, exceptions.Throttled):
        # DRF has set Retry-After to the same whole number of seconds.
        response.data = error_body("throttled", str(exc.detail), {"retry_after_seconds": exc.wait})
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        response.data = error_body(_DRF_TYPES.get(type(exc), "error"), str(detail))
    return response


def _flatten(detail, path: str = "") -> list[dict]:
    """DRF's nested error dict as a flat list of {path, message}, like definition problems."""
    if isinstance(detail, dict):
        return [item for key, value in detail.items() for item in _flatten(value, f"{path}.{key}" if path else str(key))]
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [{"path": path, "message": str(item)} for item in detail]
        return [item for index, value in enumerate(detail) for item in _flatten(value, f"{path}[{index}]")]
    return [{"path": path, "message": str(detail)}]


def json_not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", f"No such endpoint: {request.path}"), status=404)
    return defaults.page_not_found(request, exception)


def json_bad_request(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("bad_request", "The request is malformed."), status=400)
    return defaults.bad_request(request, exception)


def json_server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("server_error", "An unexpected error happened; it has been logged."), status=500)
    return defaults.server_error(request)
