import re

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

from workflows.definition.bounds import MAX_ID, MAX_PAGE_SIZE
from workflows.errors import ValidationFailed

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class NewestFirstCursorPagination(CursorPagination):
    # Ids never change, so a client paging through never sees an item twice or misses one.
    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request) -> int:
        # DRF quietly falls back to the default for a page size it cannot use; a client should hear of it.
        given = request.query_params.get(self.page_size_query_param)
        if given is None:
            return self.page_size
        if not (given.isascii() and given.isdigit() and 1 <= int(given) <= self.max_page_size):
            raise _invalid("page_size", f"must be a whole number from 1 to {self.max_page_size}")
        return int(given)

    def decode_cursor(self, request):
        """A cursor this API made: anything else, or one whose position is not an id, is a 400."""
        given = request.query_params.get(self.cursor_query_param)
        # DRF's decoding skips characters that are not base64, so "%%%" would read as the first page.
        if given is not None and not _BASE64.fullmatch(given):
            raise _invalid("cursor", "is not a cursor this API returned")
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise _invalid("cursor", "is not a cursor this API returned") from None
        if cursor is not None and cursor.position is not None:
            position = cursor.position
            if not (position.isascii() and position.isdigit() and int(position) <= MAX_ID):
                raise _invalid("cursor", "is not a cursor this API returned")
        return cursor

    def get_schema_operation_parameters(self, view) -> list[dict]:
        cursor, page_size = super().get_schema_operation_parameters(view)
        cursor["description"] = "Where the page starts: only a cursor from a page's `next` or `previous`."
        page_size["description"] = f"How many items a page holds (default {self.page_size})."
        page_size["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        return [cursor, page_size]

    def get_paginated_response_schema(self, schema: dict) -> dict:
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {**link, "description": "The next page, or null on the last."},
                "previous": {**link, "description": "The previous page, or null on the first."},
                "results": schema,
            },
        }


class OldestFirstCursorPagination(NewestFirstCursorPagination):
    """For a run's events, steps, ledger and checkpoints, which read as a story."""

    ordering = "id"


def _invalid(parameter: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"The {parameter} parameter {message}.", details=[{"path": parameter, "message": message}])
