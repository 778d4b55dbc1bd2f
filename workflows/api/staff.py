"""Endpoints for the service's staff, as Django users rather than team API keys, scoped as the admin is:
superusers reach every team, other staff the teams they are staff of (selectors.teams_visible_to)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from workflows import selectors
from workflows.api import serializers
from workflows.api.auth import ApiKeyAuthentication, MayAdjustLedger, MayReadLedger, StaffBasicAuthentication
from workflows.api.query import ApiView
from workflows.api.reports import SpendCSVRenderer, SpendQueryInputSerializer, SpendReportOutputSerializer, SpendView
from workflows.api.schema import ID_PARAMETER, error_responses
from workflows.api.views import path_id
from workflows.errors import NotFound
from workflows.models import Team
from workflows.reports.spend import SPEND_COLUMNS, spend_of_teams
from workflows.services.adjustments import check_adjustment, ledger_adjust


class LedgerAdjustmentsView(ApiView):
    """POST /ledger/{id}/adjustments: an operator's correction of a charge, as the admin's Adjust page makes it.

    HTTP Basic, so that a script can call it with a staff user's name and password. A browser could send
    cached Basic credentials across sites, but not as the JSON this endpoint alone accepts. Team API keys
    are recognised only to be refused with 403 rather than asked for a password."""

    authentication_classes = [StaffBasicAuthentication, ApiKeyAuthentication]
    permission_classes = [MayAdjustLedger]
    throttle_scope = "staff"

    @extend_schema(
        summary="Correct a ledger entry's charge (staff only)",
        auth=[{"staffBasic": []}],
        parameters=[ID_PARAMETER],
        request=serializers.LedgerAdjustmentInputSerializer,
        responses={201: serializers.LedgerEntryOutputSerializer, **error_responses("permission_denied", "not_found", body=True)},
    )
    def post(self, request, pk: str):
        entry = selectors.ledger_entry_visible_to(user=request.user, entry_id=path_id(pk))
        given = serializers.LedgerAdjustmentInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        adjustment = check_adjustment(**given.validated_data)
        made = ledger_adjust(entry=entry, adjustment=adjustment, actor=f"user:{request.user.get_username()}")
        return Response(serializers.LedgerEntryOutputSerializer(made).data, status=status.HTTP_201_CREATED)


class StaffSpendQueryInputSerializer(SpendQueryInputSerializer):
    team = drf_serializers.CharField(
        required=False, default=None, max_length=Team._meta.get_field("name").max_length, help_text="Only this team's spend, by name."
    )


class StaffSpendView(SpendView):
    """GET /staff/spend: GET /spend over every team the staff user may see, as the admin's Spend page reads it."""

    authentication_classes = [StaffBasicAuthentication, ApiKeyAuthentication]
    permission_classes = [MayReadLedger]
    extra_query_params = (*StaffSpendQueryInputSerializer().fields, "format")
    throttle_scope = "staff"

    @extend_schema(
        summary="The spend of the staff user's teams, grouped (staff only)",
        auth=[{"staffBasic": []}],
        parameters=[
            StaffSpendQueryInputSerializer,
            OpenApiParameter("format", str, OpenApiParameter.QUERY, enum=["json", "csv"], description="As `Accept` does."),
        ],
        responses={
            (200, JSONRenderer.media_type): SpendReportOutputSerializer,
            (200, SpendCSVRenderer.media_type): OpenApiResponse(
                OpenApiTypes.STR, description=f"The groups as CSV, with the header {','.join(SPEND_COLUMNS)}."
            ),
            **error_responses("permission_denied", "not_found", media_type=JSONRenderer.media_type),
        },
    )
    def get(self, request):
        given = StaffSpendQueryInputSerializer(data=request.query_params)
        given.is_valid(raise_exception=True)
        query = dict(given.validated_data)
        name = query.pop("team")
        teams = selectors.teams_visible_to(user=request.user)
        if name is not None:
            teams = teams.filter(name=name)
            if not teams.exists():  # another team's name answers as an unknown one
                raise NotFound(f"No team named '{name}'.")
        return Response(SpendReportOutputSerializer(spend_of_teams(teams=teams, **query)).data)
