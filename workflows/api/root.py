"""GET /api/v1/: where everything is. Any caller may read it, as the schema: it names endpoints, not data."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

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


class ApiRootView(APIView):
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
