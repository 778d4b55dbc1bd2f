from django.apps import AppConfig
from django.db.models.signals import post_migrate


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Budget-governed workflows"

    def ready(self) -> None:
        from django.conf import settings

        from workflows import checks  # noqa: F401 - registers the deploy checks
        from workflows.definition import configure_render_budget
        from workflows.ledger_triggers import ensure_ledger_triggers
        from workflows.services.steps.kinds import register_builtin_step_kinds

        post_migrate.connect(ensure_ledger_triggers, sender=self)
        configure_render_budget(seconds=settings.TEMPLATE_RENDER_SECONDS)
        register_builtin_step_kinds()
