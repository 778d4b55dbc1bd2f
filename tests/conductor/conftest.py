from tests.integration.conftest import celery_worker  # noqa: F401 - conductor's workflows run on a real worker
