"""One team cannot stall the others: bounded definitions, templates, for_each sources and locks."""

import pytest

from tests.definition.test_parse import fat_laughs
from workflows.models import Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db


def test_a_yaml_alias_bomb_is_refused_by_its_expanded_size_and_leaves_no_row(api):
    source = "workflow: {name: bomb, entry_point: a}\nagents: [{name: a, prompt: hi}]\n" + fat_laughs()

    response = api.post("/api/v1/workflows", {"definition": source}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "definition_invalid"
    assert error["details"] == [
        {"path": "definition", "message": "expands to more than 1,048,576 bytes (the expanded size limit)"}
    ]
    assert not Workflow.objects.exists() and not WorkflowVersion.objects.exists()
