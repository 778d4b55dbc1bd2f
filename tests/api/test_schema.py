"""The OpenAPI schema, its Swagger UI, the API's root and the error types the schema documents."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework.test import APIClient

from workflows import errors
from workflows.api.errors import _DRF_TYPES
from workflows.api.schema import ERROR_TYPES

pytestmark = pytest.mark.django_db


def test_the_schema_generates_without_a_warning(tmp_path):
    # --fail-on-warn turns each warning (a field or parameter whose type drf-spectacular cannot tell) into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    assert "/api/v1/runs/{id}/resume/" in (tmp_path / "schema.yaml").read_text()


def test_anyone_may_read_the_schema_even_with_a_wrong_key():
    for client in (APIClient(), _client_with_key("bsk_not-a-key")):
        response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")

        assert response.status_code == 200
        schema = response.json()
        assert schema["openapi"].startswith("3.")
        assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
        assert schema["paths"]["/api/v1/runs/"]["post"]["security"] == [{"apiKey": []}]
        assert schema["paths"]["/api/v1/ledger/{id}/adjustments/"]["post"]["security"] == [{"staffBasic": []}]
        assert schema["components"]["securitySchemes"]["staffBasic"] == {"type": "http", "scheme": "basic"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/?foo=1"),
        # drf-spectacular would put these into a header and into the translations it keeps.
        ("get", "/api/v1/schema/?version=a%0Ab"),
        ("get", "/api/v1/schema/?lang=xx-unknown"),
        ("get", "/api/v1/docs/?format=json"),
    ],
)
def test_the_root_schema_and_docs_refuse_parameters_they_do_not_take_in_the_error_shape(method, path):
    response = getattr(APIClient(), method)(path)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["type"] == "validation_error"


def test_the_schema_and_docs_answer_a_wrong_method_in_the_error_shape():
    for path in ("/api/v1/schema/", "/api/v1/docs/"):
        response = APIClient().delete(path)

        assert response.status_code == 405
        assert response.json()["error"]["type"] == "method_not_allowed"


def test_swagger_ui_loads_its_files_from_the_service_itself():
    response = APIClient().get("/api/v1/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert '"/api/v1/schema"' in page
    assert not re.search(r"(src|href)=\"https?://", page), "no file may come from another host, such as a CDN"


def test_the_root_links_every_endpoint_absolutely_for_any_caller():
    response = APIClient().get("/api/v1/")

    assert response.status_code == 200
    links = response.json()["links"]
    assert links["runs"] == "http://testserver/api/v1/runs"
    assert links["schema"] == "http://testserver/api/v1/schema"
    assert links["docs"] == "http://testserver/api/v1/docs"
    assert set(links) == {"workflows", "runs", "team", "provider_routes", "spend", "schema", "docs"}


def test_post_runs_documents_its_body_202_idempotency_key_and_errors():
    operation = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()["paths"]["/api/v1/runs/"]["post"]

    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/RunCreateInputRequest"}
    assert body["examples"], "an example lets schemathesis start a run that executes"
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= operation["parameters"][0].items()
    assert set(operation["responses"]) == {"202", "400", "401", "404", "406", "409", "413", "415", "422", "429"}
    assert "`idempotency_key_reused`" in operation["responses"]["422"]["description"]
    assert operation["responses"]["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_every_error_type_the_code_raises_is_in_the_schema_with_its_status():
    raised = {cls.type: cls.status_code for cls in _subclasses(errors.ApplicationError) if "type" in vars(cls)}
    raised |= {type_: cls.status_code for cls, type_ in _DRF_TYPES.items()}
    # The types the exception handler and the middleware write themselves.
    raised |= {"request_too_large": 413, "bad_request": 400, "server_error": 500}

    assert {type_: status for type_, (status, _) in ERROR_TYPES.items()} == raised


def test_docs_list_the_same_error_types_with_the_same_statuses():
    text = (Path(settings.BASE_DIR) / "docs" / "api.md").read_text()
    errors_section = text.split("### Errors", 1)[1].split("\n### ", 1)[0]
    documented = {type_: int(status) for status, type_ in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", errors_section, re.M)}

    assert documented == {type_: status for type_, (status, _) in ERROR_TYPES.items()}


def _subclasses(cls) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def _client_with_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client
