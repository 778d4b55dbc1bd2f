"""The API's request bodies. Every string in a body, its keys included, is checked here, once, for text that
could never be stored or shown again (workflows/definition/text.py); query strings and headers are checked
by workflows.api.middleware."""

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, JSONParser

from workflows.definition.text import unsafe_text_in
from workflows.errors import ValidationFailed


def refuse_unsafe_text(data, *, path: str = ""):
    found = unsafe_text_in(data, path=path)
    if found:
        where, problem = found
        raise ValidationFailed(
            f"The request body {problem}: refused at {where or 'the top level'}.",
            details=[{"path": where, "message": problem}],
        )
    return data


class BoundedJSONParser(JSONParser):
    """JSON whose nesting is too deep for the parser is a 400, not a RecursionError and a 500; so is JSON
    with a NUL or a lone surrogate in any string."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        return refuse_unsafe_text(data)


class DefinitionTextParser(BaseParser):
    """A definition posted as the raw body (`Content-Type: application/yaml`), its name in `?name=`."""

    media_type = "application/yaml"
    query_params = ("name",)

    def parse(self, stream, media_type=None, parser_context=None):
        # Read one byte past the limit, never the whole body: the definition check reports the size.
        try:
            text = stream.read(settings.DEFINITION_MAX_BYTES + 1).decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("The definition must be UTF-8 text.") from None
        data = {"definition": text}
        name = parser_context["request"].query_params.get("name") if parser_context else None
        if name:
            data["name"] = name
        return refuse_unsafe_text(data)
