"""A file in the embedded broker's queue folder that is not a message does not stop a real worker."""

from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import wait_for_run
from tests.factories import workflow_version
from workflows.services.runs import run_start

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("filesystem://"), reason="the embedded broker only"),
]


def test_a_worker_moves_a_file_that_is_not_a_message_aside_and_runs_the_next(team, celery_worker):
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    # The oldest name in the steps queue: what kombu's transport stopped the worker on.
    bad = f"{'0' * 15}_cut-short.{settings.CELERY_TASK_DEFAULT_QUEUE}.msg"
    (Path(options["data_folder_in"]) / bad).write_bytes(b'{"body": "eyJ')
    run = run_start(team=team, workflow=workflow_version(team=team).workflow_id, inputs={"topic": "x"})

    assert wait_for_run(run.pk, "completed", "failed").status == "completed"
    assert (Path(options["rejected_folder"]) / bad).read_bytes() == b'{"body": "eyJ'
