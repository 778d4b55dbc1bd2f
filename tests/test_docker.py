"""docker/: one image, run as a user other than root, and a healthcheck on every long-running service
whose command works: the readiness command beat's container runs here, and the ping a worker's
runs in tests/integration/test_worker_healthcheck.py."""

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, call_command

from workflows.services.health import sweep_heartbeat_record

DOCKER = Path(settings.BASE_DIR) / "docker"


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())["services"]


def test_the_app_is_built_once_and_every_service_of_it_runs_that_image(services):
    app = {name: service for name, service in services.items() if service.get("image", "").startswith("budgetsvc")}
    built = [name for name, service in app.items() if "build" in service]

    assert built == ["migrate"]
    assert set(app) == {"migrate", "web", "worker", "alerts-worker", "beat"}
    assert {service["image"] for service in app.values()} == {"budgetsvc:local"}
    assert {service["pull_policy"] for name, service in app.items() if name != "migrate"} == {"never"}


def test_every_long_running_service_has_a_healthcheck(services):
    without = [name for name, service in services.items() if name != "migrate" and "healthcheck" not in service]

    assert without == []
    assert "http://127.0.0.1:8000/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["beat"]["healthcheck"]["test"][-2:] == ["readiness", "sweeper"]


def test_the_image_runs_as_a_user_that_is_not_root():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)

    assert users and users[-1] not in ("root", "0")
    assert dockerfile.index(f"USER {users[-1]}") < dockerfile.index("CMD ")


@pytest.mark.django_db(transaction=True)  # the checks read on connections of their own
def test_the_readiness_command_fails_naming_the_check_until_a_sweep_has_run():
    with pytest.raises(CommandError, match=r"Not ready: sweeper: "):
        call_command("readiness", "sweeper")

    sweep_heartbeat_record()
    call_command("readiness", "sweeper")
