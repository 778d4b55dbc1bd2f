"""The request id: one token that ties an API request to the log lines and the run events it causes,
in the web process and in every Celery task it sends, and every task those send in turn.

The web process takes it from the request's X-Request-ID header or makes one, and returns it in the
response's. django-guid keeps it in a context variable, and its CeleryIntegration carries it in the
headers of each task sent while it is set (DJANGO_GUID in the settings); a task that arrives without
one (beat's) gets one of its own.
"""

import logging
import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django_guid import get_guid, set_guid
from django_guid.utils import generate_guid

HEADER = "X-Request-ID"
MAX_LENGTH = 64
# What proxies and clients send (a UUID, nginx's 32 hex digits, a trace id) and nothing that needs
# escaping in a response header, a plain log line or a URL.
_TOKEN = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}")

logger = logging.getLogger(__name__)


def request_id_accepted(value: str | None) -> bool:
    """Whether `value` may serve as a request id: 1 to MAX_LENGTH ASCII letters, digits and `._:-`."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def current_request_id() -> str | None:
    """The id of the request or task being handled; None outside them, or when a task's message
    carried something that is not a request id."""
    value = get_guid()
    return value if request_id_accepted(value) else None


class RequestIdMiddleware:
    """Sets the request id for the request and returns it in the response's X-Request-ID header.

    A header that is not a request id (too long, empty, other characters) is replaced by a new id,
    never echoed. django-guid's own `request_finished` receiver clears the id after the response.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(HEADER)
        request_id = set_guid(given if request_id_accepted(given) else generate_guid())
        if given is not None and given != request_id:
            logger.info("The request's %s header is not a request id; it was replaced by a new one.", HEADER)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response
