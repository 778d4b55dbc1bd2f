"""Text checks at the API's edge for what no parser sees: the query string and the headers."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from workflows.api.errors import error_body
from workflows.definition.text import unsafe_text_in, unsafe_text_problem

API_PREFIX = "/api/"


class UnsafeTextMiddleware:
    """A NUL or a lone surrogate in an API request's query parameters or headers is a 400 before any view
    runs, so no view can save it or echo it (the bodies are checked by workflows.api.parsers)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX):
            found = unsafe_text_in(dict(request.GET.lists()), path="query") or self._unsafe_header(request)
            if found:
                path, problem = found
                details = [{"path": path, "message": problem}]
                return JsonResponse(error_body("validation_error", f"The request's {path} {problem}.", details), status=400)
        return self.get_response(request)

    @staticmethod
    def _unsafe_header(request: HttpRequest) -> tuple[str, str] | None:
        for name, value in request.headers.items():
            if problem := unsafe_text_problem(name):
                return "header", f"has a name that {problem}"
            if problem := unsafe_text_problem(value):
                return f"header {name}", problem
        return None
