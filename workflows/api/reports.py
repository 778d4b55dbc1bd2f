"""Read-only reports: spend grouped over the ledger (JSON or CSV), and a workflow's cost profile."""

import csv
import io

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from workflows import selectors
from workflows.api.query import ApiView
from workflows.api.schema import ID_PARAMETER, error_responses
from workflows.api.serializers import money
from workflows.api.views import path_id
from workflows.reports.cost_profile import cost_profile
from workflows.reports.spend import DEFAULT_GROUP_BY, GROUPINGS, SPEND_COLUMNS, spend_by
from workflows.reports.spreadsheet import csv_cell


class SpendQueryInputSerializer(serializers.Serializer):
    # group_by and the order of the dates are rules of the report, checked by spend_by.
    group_by = serializers.CharField(required=False, default=DEFAULT_GROUP_BY, help_text=f"One of {', '.join(GROUPINGS)}.")
    since = serializers.DateField(required=False, default=None, input_formats=["%Y-%m-%d"], help_text="The first UTC day.")
    until = serializers.DateField(required=False, default=None, input_formats=["%Y-%m-%d"], help_text="The last UTC day.")


class SpendGroupOutputSerializer(serializers.Serializer):
    key = serializers.CharField()
    spent_usd = money()
    estimated_usd = money()
    runs = serializers.IntegerField()
    steps = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    unpriced_steps = serializers.IntegerField()
    unpriced_input_tokens = serializers.IntegerField()
    unpriced_output_tokens = serializers.IntegerField()


class SpendReportOutputSerializer(serializers.Serializer):
    total_usd = money()
    estimated_usd = money()
    unpriced_steps = serializers.IntegerField()
    groups = SpendGroupOutputSerializer(many=True)


class WouldHaveStoppedOutputSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    step_agent = serializers.CharField()
    spent_usd = money()
    projected_usd = money()
    budget_usd = money()


class CostProfileOutputSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    completed_runs = serializers.IntegerField()
    percentile_method = serializers.CharField()
    p50 = money(allow_null=True)
    p95 = money(allow_null=True)
    max = money(allow_null=True)
    mean_cost_by_agent = serializers.DictField(child=money(allow_null=True))
    would_have_stopped = WouldHaveStoppedOutputSerializer(many=True)
    recommended_budget_usd = money(allow_null=True)
    margin = serializers.DecimalField(max_digits=4, decimal_places=2, read_only=True)
    rule = serializers.CharField()
    note = serializers.CharField(allow_null=True)


class SpendCSVRenderer(BaseRenderer):
    """A spend report's groups as CSV: the header, then one row per group, values as in the JSON
    (text that would open as a spreadsheet formula gets a leading apostrophe)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(SPEND_COLUMNS)
        writer.writerows([csv_cell(group[column]) for column in SPEND_COLUMNS] for group in data["groups"])
        return out.getvalue().encode(self.charset)


class SpendView(ApiView):
    """GET /spend: JSON by default; CSV for `Accept: text/csv` or `?format=csv`."""

    renderer_classes = [JSONRenderer, SpendCSVRenderer]
    extra_query_params = (*SpendQueryInputSerializer().fields, "format")
    throttle_scope = "report"

    @extend_schema(
        summary="The team's spend, grouped",
        parameters=[
            SpendQueryInputSerializer,
            OpenApiParameter("format", str, OpenApiParameter.QUERY, enum=["json", "csv"], description="As `Accept` does."),
        ],
        responses={
            (200, JSONRenderer.media_type): SpendReportOutputSerializer,
            (200, SpendCSVRenderer.media_type): OpenApiResponse(
                OpenApiTypes.STR, description=f"The groups as CSV, with the header {','.join(SPEND_COLUMNS)}."
            ),
            **error_responses(media_type=JSONRenderer.media_type),
        },
    )
    def get(self, request):
        given = SpendQueryInputSerializer(data=request.query_params)
        given.is_valid(raise_exception=True)
        report = spend_by(team=request.auth.team, **given.validated_data)
        return Response(SpendReportOutputSerializer(report).data)

    def handle_exception(self, exc):
        # Errors keep the one JSON error shape, even when the report was asked for as CSV.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class WorkflowCostProfileView(ApiView):
    """GET /workflows/{id}/cost-profile."""

    throttle_scope = "report"

    @extend_schema(
        summary="What the workflow's runs cost, and the budget that would have stopped the costliest",
        parameters=[ID_PARAMETER],
        responses={200: CostProfileOutputSerializer, **error_responses("not_found")},
    )
    def get(self, request, pk: str):
        workflow = selectors.workflow_get(team=request.auth.team, workflow_id=path_id(pk))
        return Response(CostProfileOutputSerializer(cost_profile(workflow=workflow)).data)
