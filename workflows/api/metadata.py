"""OPTIONS: for each method that takes a body, the fields of that body."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.metadata import SimpleMetadata
from rest_framework.request import clone_request
from rest_framework.serializers import BaseSerializer


class InputMetadata(SimpleMetadata):
    """DRF's metadata describes `view.get_serializer()`, which here is the output serializer: OPTIONS on
    POST /runs would list a run's fields as if they were what to send. This describes the request
    serializer each operation's schema names (its `extend_schema(request=...)`) instead, for plain
    APIViews too."""

    def determine_metadata(self, request, view) -> dict:
        metadata = super().determine_metadata(request, view)
        # DRF describes the body only of views with get_serializer().
        if "actions" not in metadata and (actions := self.determine_actions(request, view)):
            metadata["actions"] = actions
        return metadata

    def determine_actions(self, request, view) -> dict:
        actions = {}
        for method in {"PUT", "POST"} & set(view.allowed_methods):
            view.request = clone_request(request, method)
            try:
                view.check_permissions(view.request)
            except (exceptions.APIException, PermissionDenied, Http404):
                continue
            finally:
                view.request = request
            serializer = request_serializer(view, method)
            if serializer is not None:
                actions[method] = self.get_serializer_info(serializer)
        return actions


def request_serializer(view, method: str) -> BaseSerializer | None:
    """The JSON request serializer the schema gives `method` of `view`, or None if it names none."""
    action_map = getattr(view, "action_map", None)
    handler = getattr(view, action_map.get(method.lower(), "") if action_map else method.lower(), None)
    schema_class = getattr(handler, "kwargs", {}).get("schema")
    if schema_class is None:
        return None
    schema = schema_class()
    schema.view = view
    schema.method = method
    given = schema.get_request_serializer()
    if isinstance(given, dict):
        given = given.get("application/json")
    if isinstance(given, type) and issubclass(given, BaseSerializer):
        return given()
    return given if isinstance(given, BaseSerializer) else None
