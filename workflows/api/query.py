"""The query parameters each endpoint takes. Any other, one given twice, or one given empty is a 400, so
that a misspelt filter (`?workfow=3`) never answers as if there were none."""

from django.http import Http404
from rest_framework.views import APIView

from workflows.errors import ValidationFailed

# A parameter's name as an error repeats it; the query string may hold a longer one.
_NAME_CHARS = 100
# The most problems one answer lists; the query string may hold up to DATA_UPLOAD_MAX_NUMBER_FIELDS.
_MAX_LISTED = 20


class StrictQueryParams:
    """Checks the query string once the caller is authenticated, permitted and not throttled.

    An endpoint takes the parameters of its filterset and its paginator when it lists (a viewset's `list`,
    or an extra action declared with a `pagination_class`), those named in `extra_query_params`, and
    those the parser of the request's body reads (its `query_params`).
    """

    extra_query_params: tuple[str, ...] = ()
    # Set when content negotiation met a ?format= no renderer has: the formats there are, for the check
    # to name in its answer.
    _formats_instead = ""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        check_query_params(
            request.query_params, allowed=self.allowed_query_params(), formats_instead=self._formats_instead
        )

    def allowed_query_params(self) -> set[str]:
        allowed = set(self.extra_query_params)
        if parser := self.request.negotiator.select_parser(self.request, self.request.parsers):
            allowed |= set(getattr(parser, "query_params", ()))
        if self._lists():
            allowed |= {self.paginator.cursor_query_param, self.paginator.page_size_query_param}
            if filterset_class := getattr(self, "filterset_class", None):
                allowed |= set(filterset_class.base_filters)
        return allowed

    def _lists(self) -> bool:
        action = getattr(self, "action", None)
        if action is None:
            return False
        return action == "list" or "pagination_class" in getattr(getattr(self, action, None), "kwargs", {})

    def perform_content_negotiation(self, request, force=False):
        # DRF answers an unknown ?format= with a bare 404 before authenticating. It is a bad parameter,
        # reported with the others once the caller is known; the error renders as JSON meanwhile.
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            self._formats_instead = ", ".join(renderer.format for renderer in self.get_renderers())
            return super().perform_content_negotiation(request, force=True)


class ApiView(StrictQueryParams, APIView):
    """An API endpoint that is not a viewset."""


def check_query_params(params, *, allowed: set[str], formats_instead: str = "") -> None:
    problems = []
    for name, values in params.lists():
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) if allowed else "none"
            problems.append((name, f"is not a parameter of this endpoint (it takes: {takes})"))
        elif len(values) > 1:
            problems.append((name, f"is given {len(values)} times; give it once"))
        elif values[0] == "":
            problems.append((name, "is empty; give a value or leave the parameter out"))
        elif name == "format" and formats_instead:
            problems.append((name, f"must be one of {formats_instead}"))
    if problems:
        raise invalid_query_params(problems)


def invalid_query_params(problems: list[tuple[str, str]]) -> ValidationFailed:
    """The 400 for query parameters: (name, what is wrong) each, the first in the message."""
    details = [{"path": _shown(name), "message": message} for name, message in problems[:_MAX_LISTED]]
    first_name, first_message = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ValidationFailed(f"The query parameter '{_shown(first_name)}' {first_message}{more}.", details=details)


def _shown(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else f"{name[:_NAME_CHARS]}..."
