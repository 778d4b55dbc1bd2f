from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, JSONParser


class BoundedJSONParser(JSONParser):
    """JSON whose nesting is too deep for the parser is a 400, not a RecursionError and a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None


class DefinitionTextParser(BaseParser):
    """A definition posted as the raw body (`Content-Type: application/yaml`), its name in `?name=`."""

    media_type = "application/yaml"

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
        return data
