from decimal import Decimal

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from workflows import selectors
from workflows.api import filters, serializers
from workflows.api.idempotency import idempotent
from workflows.api.pagination import OldestFirstCursorPagination
from workflows.api.parsers import BoundedJSONParser, DefinitionTextParser
from workflows.api.query import ApiView, StrictQueryParams
from workflows.api.streams import event_stream_response, stream_start
from workflows.api.schema import (
    ID_PARAMETER,
    IDEMPOTENCY_KEY_PARAMETER,
    RUN_EXAMPLE,
    WORKFLOW_EXAMPLE_YAML,
    ServerSentEventSerializer,
    error_responses,
    idempotent_replayed_header,
)
from workflows.definition.bounds import MAX_ID
from workflows.errors import NotFound
from workflows.models import Checkpoint, Event, LedgerEntry, Run, Step, Workflow
from workflows.services.provider_routes import provider_routes_get, provider_routes_set
from workflows.services.inputs import run_answer
from workflows.services.runs import actor_of, run_cancel, run_resume, run_start
from workflows.services.workflows import workflow_create


def path_id(value: str) -> int:
    """An id from a URL (digits, by the route's pattern); one beyond every id names no row: a 404."""
    digits = value.lstrip("0") or "0"
    # Compared by length first: int() of thousands of digits is slow, and refused past 4,300.
    if len(digits) > len(str(MAX_ID)) or int(digits) > MAX_ID:
        raise NotFound(f"No such id: {digits[:30]}{'...' if len(digits) > 30 else ''}.")
    return int(digits)


class TeamScopedViewSet(StrictQueryParams, GenericViewSet):
    """A viewset over one team's rows. Requests read them through `get_queryset`; the `queryset` of
    each viewset and listing action names only the model, for the schema, generated without a team."""

    # The filters of the viewset's list. An extra action that lists gives @action its own, or None.
    filterset_class = None

    @property
    def team(self):
        return self.request.auth.team

    def get_object(self):
        return self.get_team_object(path_id(self.kwargs["pk"]))

    def paginated(self, queryset, serializer_class):
        page = self.paginator.paginate_queryset(queryset, self.request, view=self)
        return self.paginator.get_paginated_response(serializer_class(page, many=True).data)


@extend_schema_view(
    list=extend_schema(
        summary="The team's workflows, newest first",
        responses={200: serializers.WorkflowOutputSerializer(many=True), **error_responses()},
    ),
    retrieve=extend_schema(
        summary="A workflow, with its versions and its latest definition",
        parameters=[ID_PARAMETER],
        responses={200: serializers.WorkflowDetailOutputSerializer, **error_responses("not_found")},
    ),
    create=extend_schema(
        summary="Upload a workflow, or a new version of one",
        description="The definition as JSON (`definition` as YAML text or a JSON object), or the YAML itself as the "
        "body with `Content-Type: application/yaml` and the name, if any, in `?name=`.",
        parameters=[
            OpenApiParameter("name", str, OpenApiParameter.QUERY, description="With a YAML body: the workflow's name."),
        ],
        request={"application/json": serializers.WorkflowCreateInputSerializer, "application/yaml": OpenApiTypes.STR},
        examples=[
            OpenApiExample(
                "A workflow as JSON", value={"definition": WORKFLOW_EXAMPLE_YAML}, media_type="application/json", request_only=True
            ),
            OpenApiExample(
                "A workflow as YAML", value=WORKFLOW_EXAMPLE_YAML, media_type="application/yaml", request_only=True
            ),
        ],
        responses={
            201: serializers.WorkflowCreatedOutputSerializer,
            **error_responses("definition_invalid", body=True),
        },
    ),
)
class WorkflowViewSet(TeamScopedViewSet, mixins.ListModelMixin):
    queryset = Workflow.objects.none()
    serializer_class = serializers.WorkflowOutputSerializer
    parser_classes = [BoundedJSONParser, DefinitionTextParser]
    filterset_class = filters.WorkflowFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.workflows_for_team(team=self.team)

    def get_team_object(self, pk: int):
        return selectors.workflow_get(team=self.team, workflow_id=pk)

    def retrieve(self, request, pk=None):
        return Response(serializers.WorkflowDetailOutputSerializer(self.get_object()).data)

    def create(self, request):
        given = serializers.WorkflowCreateInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        version = workflow_create(team=self.team, **given.validated_data)
        return Response(serializers.WorkflowCreatedOutputSerializer(version).data, status=status.HTTP_201_CREATED)


_RUN_RESPONSES = error_responses("not_found")
_IDEMPOTENCY_ERRORS = ("idempotency_key_in_progress", "idempotency_key_reused")
# What a workflow needs to run (its prices, credentials, routes and endpoints) is checked again when it starts
# or resumes.
_RUNNABLE_ERRORS = ("unpriced_model", "missing_credentials", "provider_not_routed", "endpoint_mismatch")


@extend_schema_view(
    list=extend_schema(
        summary="The team's runs, newest first",
        responses={200: serializers.RunOutputSerializer(many=True), **error_responses()},
    ),
    retrieve=extend_schema(summary="A run", parameters=[ID_PARAMETER], responses={200: serializers.RunOutputSerializer, **_RUN_RESPONSES}),
    create=extend_schema(
        summary="Start a run of a workflow",
        parameters=[IDEMPOTENCY_KEY_PARAMETER, idempotent_replayed_header(202)],
        request=serializers.RunCreateInputSerializer,
        examples=[OpenApiExample("A run of the uploaded example", value=RUN_EXAMPLE, request_only=True)],
        responses={
            202: serializers.RunOutputSerializer,
            **error_responses("not_found", *_RUNNABLE_ERRORS, *_IDEMPOTENCY_ERRORS, body=True),
        },
    ),
    resume=extend_schema(
        summary="Resume a stopped run, with new limits if given",
        parameters=[ID_PARAMETER, IDEMPOTENCY_KEY_PARAMETER, idempotent_replayed_header(202)],
        request=serializers.RunResumeInputSerializer,
        responses={
            202: serializers.RunOutputSerializer,
            **error_responses("not_found", "invalid_run_state", *_RUNNABLE_ERRORS, *_IDEMPOTENCY_ERRORS, body=True),
        },
    ),
    answer=extend_schema(
        summary="Answer the step the run waits on",
        parameters=[ID_PARAMETER, IDEMPOTENCY_KEY_PARAMETER, idempotent_replayed_header(200)],
        request=serializers.RunAnswerInputSerializer,
        responses={
            200: serializers.RunOutputSerializer,
            **error_responses("not_found", "invalid_run_state", *_IDEMPOTENCY_ERRORS, body=True),
        },
    ),
    cancel=extend_schema(
        summary="Cancel a run",
        parameters=[ID_PARAMETER],
        request=serializers.RunCancelInputSerializer,
        responses={200: serializers.RunOutputSerializer, **error_responses("not_found", "invalid_run_state", body=True)},
    ),
    events=extend_schema(
        summary="The run's events, oldest first",
        parameters=[ID_PARAMETER],
        responses={200: serializers.EventOutputSerializer(many=True), **_RUN_RESPONSES},
    ),
    steps=extend_schema(
        summary="The run's steps, oldest first",
        parameters=[ID_PARAMETER],
        responses={200: serializers.StepOutputSerializer(many=True), **_RUN_RESPONSES},
    ),
    ledger=extend_schema(
        summary="The run's ledger entries, oldest first",
        parameters=[ID_PARAMETER],
        responses={200: serializers.LedgerEntryOutputSerializer(many=True), **_RUN_RESPONSES},
    ),
    checkpoints=extend_schema(
        summary="The run's checkpoints, oldest first",
        parameters=[ID_PARAMETER],
        responses={200: serializers.CheckpointOutputSerializer(many=True), **_RUN_RESPONSES},
    ),
)
class RunViewSet(TeamScopedViewSet, mixins.ListModelMixin):
    queryset = Run.objects.none()
    serializer_class = serializers.RunOutputSerializer
    filterset_class = filters.RunFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.runs_for_team(team=self.team)

    def get_team_object(self, pk: int):
        return selectors.run_get(team=self.team, run_id=pk)

    def retrieve(self, request, pk=None):
        return Response(self.get_serializer(self.get_object()).data)

    @idempotent
    def create(self, request):
        given = serializers.RunCreateInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        run = run_start(team=self.team, started_by=request.auth, **given.validated_data)
        # As created: nothing else has written it yet but the worker, which may have begun already.
        # Its spend is the $0 it started with, none of it estimated.
        run.estimated_usd = Decimal("0")
        return Response(self.get_serializer(run).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    @idempotent
    def resume(self, request, pk=None):
        given = serializers.RunResumeInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        run = run_resume(
            run=self.get_object(),
            actor=actor_of(request.auth),
            limits=given.limit_overrides(),
            reason=given.validated_data["reason"],
            workflow_version=given.validated_data.get("workflow_version"),
        )
        return Response(self._fresh(run), status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"], url_path="input")
    @idempotent
    def answer(self, request, pk=None):
        given = serializers.RunAnswerInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        run = run_answer(run=self.get_object(), given=given.validated_data, actor=actor_of(request.auth))
        return Response(self._fresh(run))

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        given = serializers.RunCancelInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        run = run_cancel(run=self.get_object(), actor=actor_of(request.auth), reason=given.validated_data["reason"])
        return Response(self._fresh(run))

    @action(
        detail=True, methods=["get"], pagination_class=OldestFirstCursorPagination,
        filterset_class=filters.EventFilter, queryset=Event.objects.none(),
    )  # fmt: skip
    def events(self, request, pk=None):
        return self._history(selectors.events_of(run=self.get_object()), serializers.EventOutputSerializer)

    @action(
        detail=True, methods=["get"], pagination_class=OldestFirstCursorPagination,
        filterset_class=None, queryset=Step.objects.none(),
    )  # fmt: skip
    def steps(self, request, pk=None):
        return self._history(selectors.steps_of(run=self.get_object()), serializers.StepOutputSerializer)

    @action(
        detail=True, methods=["get"], pagination_class=OldestFirstCursorPagination,
        filterset_class=filters.RunLedgerFilter, queryset=LedgerEntry.objects.none(),
    )  # fmt: skip
    def ledger(self, request, pk=None):
        entries = selectors.ledger_of(run=self.get_object()).select_related("step")
        return self._history(entries, serializers.LedgerEntryOutputSerializer)

    @action(
        detail=True, methods=["get"], pagination_class=OldestFirstCursorPagination,
        filterset_class=None, queryset=Checkpoint.objects.none(),
    )  # fmt: skip
    def checkpoints(self, request, pk=None):
        checkpoints = selectors.checkpoints_of(run=self.get_object()).select_related("next_step")
        return self._history(checkpoints, serializers.CheckpointOutputSerializer)

    def _history(self, queryset, serializer_class):
        return self.paginated(self.filter_queryset(queryset), serializer_class)

    def _fresh(self, run) -> dict:
        return self.get_serializer(self.get_team_object(run.pk)).data


@extend_schema_view(
    list=extend_schema(
        summary="The team's ledger entries, newest first",
        responses={200: serializers.LedgerEntryOutputSerializer(many=True), **error_responses()},
    ),
)
class LedgerViewSet(TeamScopedViewSet, mixins.ListModelMixin):
    """The team's ledger entries, newest first."""

    queryset = LedgerEntry.objects.none()
    serializer_class = serializers.LedgerEntryOutputSerializer
    filterset_class = filters.TeamLedgerFilter

    def get_queryset(self):
        return selectors.ledger_for_team(team=self.team)


class TeamView(ApiView):
    """The caller's team: its defaults, its period budget with spend and reset time, its lifetime spend."""

    @extend_schema(summary="The caller's team", responses={200: serializers.TeamOutputSerializer, **error_responses()})
    def get(self, request):
        # One moment for both: at a period's end, two reads could describe two periods.
        now = timezone.now()
        budget_status = selectors.team_budget_status(team=request.auth.team, now=now)
        forecast = selectors.team_forecast(team=request.auth.team, now=now)
        return Response(serializers.TeamOutputSerializer(budget_status, context={"forecast": forecast}).data)


class ProviderRoutesView(ApiView):
    """The backend each of conductor's runtime provider names reaches in the team's runs."""

    @extend_schema(
        summary="The team's provider routes",
        responses={200: serializers.ProviderRoutesOutputSerializer, **error_responses()},
    )
    def get(self, request):
        routes = provider_routes_get(team=request.auth.team)
        return Response(serializers.ProviderRoutesOutputSerializer(routes).data)

    @extend_schema(
        summary="Replace the team's provider routes",
        request=serializers.ProviderRoutesInputSerializer,
        responses={200: serializers.ProviderRoutesOutputSerializer, **error_responses(body=True)},
    )
    def put(self, request):
        given = serializers.ProviderRoutesInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        routes = provider_routes_set(
            team=request.auth.team,
            routes=given.validated_data["routes"],
            default_models=given.validated_data.get("default_models"),
        )
        return Response(serializers.ProviderRoutesOutputSerializer(routes).data)


class JsonErrorsNegotiation(BaseContentNegotiation):
    """The first renderer (JSON), whatever the Accept header: for an endpoint whose success is another media
    type that no renderer writes (an event stream), so that its errors are JSON and an EventSource's
    `Accept: text/event-stream` is not refused."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class RunEventStreamView(ApiView):
    """The run's events as server-sent events, as they happen (workflows/api/streams.py)."""

    content_negotiation_class = JsonErrorsNegotiation
    extra_query_params = ("after",)
    # A HEAD would hold the stream open with nothing to send it to.
    http_method_names = ["get", "options"]

    @extend_schema(
        summary="The run's events as server-sent events, as they happen",
        description="Every event after `Last-Event-ID` (or `?after=`, or from the start), then each new one as it "
        "is written, as `id: <event id>`, `event: <type>`, `data: <the event as /events lists it>`; a "
        "`: keep-alive` comment after 15 s of silence; `event: end` with `{\"status\"}` once the run waits for a "
        "person and every event is sent. The server closes a stream after EVENT_STREAM_MAX_SECONDS: reconnect "
        "with `Last-Event-ID`. Errors are JSON, before the stream starts.",
        parameters=[
            ID_PARAMETER,
            OpenApiParameter(
                "after", {"type": "integer", "minimum": 0, "maximum": MAX_ID}, OpenApiParameter.QUERY,
                description="The id of the last event the client has; Last-Event-ID wins over it.",
            ),
            OpenApiParameter(
                "Last-Event-ID", {"type": "string", "pattern": "^[0-9]{1,19}$"}, OpenApiParameter.HEADER, required=False,
                description="The id of the last event the client has, as an EventSource sends it when it reconnects.",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                ServerSentEventSerializer, description="Server-sent events: `id`, `event` and `data` lines per event."
            ),
            **error_responses("not_found", "too_many_streams", media_type="application/json"),
        },
    )  # fmt: skip
    def get(self, request, pk):
        run = selectors.run_get(team=request.auth.team, run_id=path_id(pk))
        after = stream_start(last_event_id=request.headers.get("Last-Event-ID"), after=request.query_params.get("after"))
        return event_stream_response(team_id=run.team_id, run_id=run.pk, after=after)
