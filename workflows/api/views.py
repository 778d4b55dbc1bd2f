from decimal import Decimal

from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from workflows import selectors
from workflows.api import filters, serializers
from workflows.api.idempotency import idempotent
from workflows.api.pagination import OldestFirstCursorPagination
from workflows.api.parsers import BoundedJSONParser, DefinitionTextParser
from workflows.api.query import ApiView, StrictQueryParams
from workflows.definition.bounds import MAX_ID
from workflows.errors import NotFound
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


class WorkflowViewSet(TeamScopedViewSet, mixins.ListModelMixin):
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


class RunViewSet(TeamScopedViewSet, mixins.ListModelMixin):
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
            resumed_by=request.auth,
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
        run = run_cancel(run=self.get_object(), cancelled_by=request.auth, reason=given.validated_data["reason"])
        return Response(self._fresh(run))

    @action(detail=True, methods=["get"], pagination_class=OldestFirstCursorPagination, filterset_class=filters.EventFilter)
    def events(self, request, pk=None):
        return self._history(selectors.events_of(run=self.get_object()), serializers.EventOutputSerializer)

    @action(detail=True, methods=["get"], pagination_class=OldestFirstCursorPagination, filterset_class=None)
    def steps(self, request, pk=None):
        return self._history(selectors.steps_of(run=self.get_object()), serializers.StepOutputSerializer)

    @action(detail=True, methods=["get"], pagination_class=OldestFirstCursorPagination, filterset_class=filters.RunLedgerFilter)
    def ledger(self, request, pk=None):
        entries = selectors.ledger_of(run=self.get_object()).select_related("step")
        return self._history(entries, serializers.LedgerEntryOutputSerializer)

    @action(detail=True, methods=["get"], pagination_class=OldestFirstCursorPagination, filterset_class=None)
    def checkpoints(self, request, pk=None):
        checkpoints = selectors.checkpoints_of(run=self.get_object()).select_related("next_step")
        return self._history(checkpoints, serializers.CheckpointOutputSerializer)

    def _history(self, queryset, serializer_class):
        return self.paginated(self.filter_queryset(queryset), serializer_class)

    def _fresh(self, run) -> dict:
        return self.get_serializer(self.get_team_object(run.pk)).data


class LedgerViewSet(TeamScopedViewSet, mixins.ListModelMixin):
    """The team's ledger entries, newest first."""

    serializer_class = serializers.LedgerEntryOutputSerializer
    filterset_class = filters.TeamLedgerFilter

    def get_queryset(self):
        return selectors.ledger_for_team(team=self.team)


class TeamView(ApiView):
    """The caller's team: its defaults, its period budget with spend and reset time, its lifetime spend."""

    def get(self, request):
        budget_status = selectors.team_budget_status(team=request.auth.team)
        return Response(serializers.TeamOutputSerializer(budget_status).data)


class ProviderRoutesView(ApiView):
    """The backend each of conductor's runtime provider names reaches in the team's runs."""

    def get(self, request):
        routes = provider_routes_get(team=request.auth.team)
        return Response(serializers.ProviderRoutesOutputSerializer(routes).data)

    def put(self, request):
        given = serializers.ProviderRoutesInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        routes = provider_routes_set(
            team=request.auth.team,
            routes=given.validated_data["routes"],
            default_models=given.validated_data.get("default_models"),
        )
        return Response(serializers.ProviderRoutesOutputSerializer(routes).data)
