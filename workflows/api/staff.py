"""Endpoints for the service's staff, as Django users rather than team API keys, scoped as the admin is:
superusers reach every team, other staff the teams they are staff of (selectors.teams_visible_to)."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from workflows import selectors
from workflows.api import serializers
from workflows.api.auth import ApiKeyAuthentication, MayAdjustLedger, StaffBasicAuthentication
from workflows.api.query import ApiView
from workflows.api.schema import ID_PARAMETER, error_responses
from workflows.api.views import path_id
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
