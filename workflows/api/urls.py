from rest_framework.routers import SimpleRouter

from workflows.api.views import RunViewSet, WorkflowViewSet


class OptionalSlashRouter(SimpleRouter):
    """`/api/v1/runs` and `/api/v1/runs/` both answer; DRF's routers take only one or the other."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("runs", RunViewSet, basename="run")

urlpatterns = router.urls
