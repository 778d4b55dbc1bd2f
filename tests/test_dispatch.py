"""Services send tasks by name (workflows/services/dispatch.py) and never import workflows.tasks."""

import ast
from pathlib import Path

from budgetsvc.celery import app
from workflows.services import dispatch

SERVICES = Path(__file__).resolve().parent.parent / "workflows" / "services"


def test_every_task_name_dispatch_sends_is_a_registered_task():
    import workflows.tasks  # noqa: F401 - registers the tasks, as the worker's autodiscovery does

    assert {dispatch.EXECUTE_STEP, dispatch.DELIVER_WEBHOOK} <= set(app.tasks)


def test_no_service_imports_the_tasks_module():
    importers = []
    for path in SERVICES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            if any(name == "workflows.tasks" for name in names):
                importers.append(str(path.relative_to(SERVICES)))
    assert importers == []
