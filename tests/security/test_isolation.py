"""One team cannot stall the others: bounded definitions, templates, for_each sources and locks."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from tests.definition.test_parse import fat_laughs
from workflows.models import ApiKey, Workflow, WorkflowVersion
from workflows.services.teams import api_key_create


@pytest.mark.django_db
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


def hold_key_row_and_write_lock(api_key_id: int, held: threading.Event, release: threading.Event) -> None:
    """Another writer: on SQLite it holds the database's write lock, on PostgreSQL the key's row too."""
    try:
        with transaction.atomic():
            ApiKey.objects.select_for_update().filter(pk=api_key_id).update(name="busy")
            held.set()
            release.wait(timeout=30)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_read_never_waits_for_the_write_lock_to_note_its_key_was_used(team):
    api_key, raw_key = api_key_create(team=team, name="reader")
    stale = timezone.now() - timedelta(hours=1)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=stale)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_key_row_and_write_lock, args=(api_key.pk, held, release))
    holder.start()
    try:
        assert held.wait(timeout=10)
        started = time.monotonic()
        response = client.get("/api/v1/team")
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()

    assert response.status_code == 200
    assert waited < 2  # the holder lets go after 30 s
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == stale  # skipped, not waited for
    assert client.get("/api/v1/team").status_code == 200
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at > stale  # the next request records it
