"""Text a team sends is checked at the edge: NUL and lone surrogates are refused before anything is saved."""

import pytest

from tests.factories import THREE_STEP_YAML
from tests.security.conftest import admin_reads, all_ok, row_counts, team_reads
from workflows.definition import DefinitionError, load_definition
from workflows.definition.text import unsafe_text_in, unsafe_text_problem
from workflows.models import Run

pytestmark = pytest.mark.django_db


def refused(response, path: str) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    assert path in [detail["path"] for detail in error["details"]], error["details"]
    return error


def test_a_lone_surrogate_in_run_inputs_is_refused_and_the_team_and_admin_lists_still_answer(acme, admin_client):
    """The case found in review: a run saved with "\\ud800" in its inputs made the run list and the admin 500."""
    before = row_counts()

    response = acme.api.post(
        "/api/v1/runs", '{"workflow": "acme-flow", "inputs": {"topic": "\\ud800"}}', content_type="application/json"
    )

    error = refused(response, "inputs.topic")
    assert error["type"] == "validation_error"
    assert "lone surrogate U+D800" in error["message"]
    assert row_counts() == before
    assert all_ok(team_reads(acme)) == {}
    assert all_ok(admin_reads(admin_client)) == {}


@pytest.mark.parametrize(
    "body,path",
    [
        ('{"workflow": "acme-flow", "inputs": {"topic": "ti\\u0000des"}}', "inputs.topic"),
        ('{"workflow": "acme-flow", "inputs": {"topic": ["a", "\\udfff"]}}', "inputs.topic[1]"),
        ('{"workflow": "acme-flow", "inputs": {"\\ud800": "x"}}', "inputs"),
        ('{"workflow": "acme-\\u0000flow"}', "workflow"),
    ],
)
def test_nul_or_a_lone_surrogate_anywhere_in_a_json_body_is_refused_at_its_path(acme, body, path):
    before = row_counts()

    refused(acme.api.post("/api/v1/runs", body, content_type="application/json"), path)

    assert row_counts() == before


@pytest.mark.parametrize(
    "url,body,path",
    [
        ("/api/v1/runs/{run}/resume", '{"reason": "more\\u0000"}', "reason"),
        ("/api/v1/runs/{run}/cancel", '{"reason": "\\udc00"}', "reason"),
        ("/api/v1/workflows", '{"definition": "x", "name": "n\\ud800"}', "name"),
    ],
)
def test_reasons_and_names_are_checked_by_the_same_edge(acme, url, body, path):
    before = row_counts()

    refused(acme.api.post(url.format(run=acme.run_id), body, content_type="application/json"), path)

    assert row_counts() == before
    assert Run.objects.get(pk=acme.run_id).status == "queued"


@pytest.mark.parametrize(
    "escape,path",
    [('"x\\ud800"', "workflow.description"), ('"x\\0"', "workflow.description"), ('"\\udc00"', "workflow.description")],
)
def test_yaml_escapes_that_spell_nul_or_a_surrogate_are_refused_at_upload(acme, escape, path):
    source = THREE_STEP_YAML.replace("description: Research a topic, draft a note, review the draft.", f"description: {escape}")
    before = row_counts()

    response = acme.api.post("/api/v1/workflows?name=escaped", source, content_type="application/yaml")

    error = refused(response, path)
    assert error["type"] == "definition_invalid"
    assert row_counts() == before


@pytest.mark.parametrize(
    "url,headers,path",
    [
        ("/api/v1/runs?status=%00", {}, "query.status[0]"),
        ("/api/v1/workflows?x%00=1", {}, "query"),
        ("/api/v1/spend", {"HTTP_X_REQUEST_ID": "abc\x00"}, "header X-Request-Id"),
    ],
)
def test_nul_in_a_query_parameter_or_a_header_is_refused_before_any_view(acme, url, headers, path):
    refused(acme.api.get(url, **headers), path)


def test_a_name_given_as_a_query_parameter_with_a_yaml_body_is_refused_with_nul(acme):
    before = row_counts()

    response = acme.api.post("/api/v1/workflows?name=a%00b", THREE_STEP_YAML, content_type="application/yaml")

    refused(response, "query.name[0]")
    assert row_counts() == before


def test_real_unicode_is_accepted_and_read_back_exactly(acme):
    """No false alarm: a surrogate pair in JSON is one character, and CJK, emoji and RTL text are text."""
    topic = "潮汐 🌊 مد وجزر"
    response = acme.api.post(
        "/api/v1/runs",
        '{"workflow": "acme-flow", "inputs": {"topic": "潮汐 \\ud83c\\udf0a مد وجزر"}}',
        content_type="application/json",
    )

    assert response.status_code == 202, response.content
    assert acme.api.get(f"/api/v1/runs/{response.json()['id']}").json()["inputs"] == {"topic": topic}


@pytest.mark.parametrize(
    "text,problem",
    [
        ("a\x00", "contains a NUL character (at 1)"),
        ("\ud800", "contains a lone surrogate U+D800 (at 0), which is not valid Unicode"),
        ("ok\udfff", "contains a lone surrogate U+DFFF (at 2), which is not valid Unicode"),
        ("🌊 \u200b\ufeff", None),
    ],
)
def test_unsafe_text_problem_names_what_and_where(text, problem):
    assert unsafe_text_problem(text) == problem


def test_unsafe_text_in_finds_keys_and_nested_values_without_echoing_them():
    assert unsafe_text_in({"a": [{"b": "x\x00"}]}) == ("a[0].b", "contains a NUL character (at 1)")
    assert unsafe_text_in({"a": {"\ud800": 1}}) == ("a", "has a key that contains a lone surrogate U+D800 (at 0), which is not valid Unicode")
    assert unsafe_text_in({"a": ["fine", 1, None, 2.5]}) is None


@pytest.mark.parametrize(
    "source", ['workflow: {name: "a\\0b", entry_point: x}\nagents: []', {"workflow": {"name": "a\x00b"}, "agents": []}]
)
def test_the_definition_loader_refuses_unsafe_text_in_yaml_and_in_an_already_parsed_mapping(source):
    with pytest.raises(DefinitionError) as refused_definition:
        load_definition(source)
    assert [(p.path, p.message) for p in refused_definition.value.problems] == [
        ("workflow.name", "contains a NUL character (at 1)")
    ]
