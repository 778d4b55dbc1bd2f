"""A Django test client's response checked against the service's own OpenAPI schema, with the checks the fuzz
test (tests/api/test_schema_fuzz.py) makes of the live service's answers."""

import functools

import requests
import schemathesis
from drf_spectacular.generators import SchemaGenerator


@functools.cache
def _schema():
    return schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))


def assert_conforms(response, *, method: str, path: str) -> None:
    """Raises schemathesis' FailureGroup when `response` breaks the schema of the operation at `path`
    (as the schema spells it, such as "/api/v1/team/")."""
    answered = schemathesis.Response(
        status_code=response.status_code,
        headers={name: [value] for name, value in response.headers.items()},
        content=response.content,
        request=requests.Request(method, f"http://testserver{path}").prepare(),
        elapsed=0,
        verify=True,
    )
    _schema()[path][method].validate_response(answered)
