from django.urls import re_path
from rest_framework.routers import SimpleRouter

from workflows.api.reports import SpendView, WorkflowCostProfileView
from workflows.api.root import ApiRootView, DocsView, SchemaView
from workflows.api.staff import LedgerAdjustmentsView, StaffSpendView
from workflows.api.views import (
    LedgerViewSet,
    ProviderRoutesView,
    RunEventStreamView,
    RunViewSet,
    TeamView,
    WorkflowViewSet,
)


class OptionalSlashRouter(SimpleRouter):
    """`/api/v1/runs` and `/api/v1/runs/` both answer; DRF's routers take only one or the other."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("runs", RunViewSet, basename="run")
router.register("ledger", LedgerViewSet, basename="ledger")

urlpatterns = [
    re_path(r"^$", ApiRootView.as_view(), name="api-root"),
    re_path(r"^schema/?$", SchemaView.as_view(), name="schema"),
    re_path(r"^docs/?$", DocsView.as_view(url_name="schema"), name="docs"),
    re_path(r"^runs/(?P<pk>\d+)/events/stream/?$", RunEventStreamView.as_view(), name="run-events-stream"),
    *router.urls,
    re_path(r"^team/?$", TeamView.as_view(), name="team"),
    re_path(r"^team/provider-routes/?$", ProviderRoutesView.as_view(), name="provider-routes"),
    re_path(r"^spend/?$", SpendView.as_view(), name="spend"),
    re_path(r"^workflows/(?P<pk>\d+)/cost-profile/?$", WorkflowCostProfileView.as_view(), name="workflow-cost-profile"),
    re_path(r"^ledger/(?P<pk>\d+)/adjustments/?$", LedgerAdjustmentsView.as_view(), name="ledger-adjustments"),
    re_path(r"^staff/spend/?$", StaffSpendView.as_view(), name="staff-spend"),
]
