"""GET /api/v1/, the schema and its docs page: where everything is. Any caller may read them: they name
endpoints, not data. Like every endpoint, they refuse query parameters they do not take, and answer
errors in the one JSON shape."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import permissions, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from workflows.api.query import ApiView, StrictQueryParams
from workflows.api.schema import error_responses

# The link's name, and the URL name it reverses to.
LINKS = {
    "workflows": "workflow-list",
    "runs": "run-list",
    "team": "team",
    "provider_routes": "provider-routes",
    "spend": "spend",
    "schema": "schema",
    "docs": "docs",
}


class ApiRootOutputSerializer(serializers.Serializer):
    links = serializers.DictField(
        child=serializers.URLField(), help_text=f"Absolute URLs of {', '.join(LINKS)}; the schema describes the rest."
    )


class JsonErrors:
    """Errors in the one JSON shape, whatever the view renders when it succeeds (YAML, HTML)."""

    def handle_exception(self, exc):
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class SchemaView(JsonErrors, StrictQueryParams, SpectacularAPIView):
    # drf-spectacular reads ?version= and ?lang= too: unchecked, into a header and the translations kept.
    extra_query_params = ("format",)


class DocsView(JsonErrors, StrictQueryParams, SpectacularSwaggerView):
    pass


class ApiRootView(ApiView):
    # No credentials needed, and none checked: a wrong key still finds the way to the docs.
    authentication_classes = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        summary="Links to the API's endpoints, its schema and its docs",
        auth=[],
        responses={200: ApiRootOutputSerializer, **error_responses(authenticated=False)},
    )
    def get(self, request):
        links = {name: request.build_absolute_uri(reverse(url_name)) for name, url_name in LINKS.items()}
        return Response(ApiRootOutputSerializer({"links": links}).data)
