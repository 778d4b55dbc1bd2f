"""What the model is shown of a server's answers, and the bounds on what a server may list."""

import pytest
from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
)

from workflows.toolservers import ToolServerError
from workflows.toolservers.results import MAX_DESCRIPTION_CHARS, MAX_INPUT_SCHEMA_BYTES, listed_tool, outcome


def tool(**changes) -> Tool:
    return Tool(**{"name": "search", "description": "Search.", "input_schema": {"type": "object"}, **changes})


def test_a_long_description_is_cut_saying_so():
    listed = listed_tool(tool(description="d" * (MAX_DESCRIPTION_CHARS + 5)), server_name="docs")

    assert listed.description == "d" * MAX_DESCRIPTION_CHARS + "\n[cut: 5 more characters]"


def test_a_tool_with_an_input_schema_past_the_bound_fails_the_listing_naming_it():
    schema = {"type": "object", "description": "s" * MAX_INPUT_SCHEMA_BYTES}

    with pytest.raises(ToolServerError, match=r"^docs lists the tool 'search' with an input schema of \d+ bytes"):
        listed_tool(tool(input_schema=schema), server_name="docs")


def test_no_hints_means_neither_read_only_nor_idempotent():
    listed = listed_tool(tool(description=None), server_name="docs")

    assert (listed.description, listed.read_only, listed.idempotent) == ("", False, False)


def test_structured_content_beside_text_is_not_shown_twice():
    result = CallToolResult(content=[TextContent(text="one")], structured_content={"result": "one"})

    assert outcome(result).content == "one"
    # With no text to say it, it is shown as JSON.
    blank = CallToolResult(content=[TextContent(text=" ")], structured_content={"a": 1})
    assert outcome(blank).content == ' \n{"a": 1}'


def test_binary_content_is_named_and_text_resources_are_shown():
    result = CallToolResult(
        content=[
            AudioContent(data="AAAA", mime_type="audio/wav"),
            EmbeddedResource(resource=BlobResourceContents(uri="file:///a.pdf", blob="AAAA", mime_type="application/pdf")),
            EmbeddedResource(resource=TextResourceContents(uri="file:///a.txt", text="the notes")),
            ResourceLink(uri="file:///b.txt", name="b"),
        ],
        is_error=True,
    )

    assert outcome(result).content.splitlines() == [
        "[audio content, audio/wav, not shown]",
        "[resource content, application/pdf, not shown]",
        "the notes",
        "[resource link: file:///b.txt]",
    ]
    assert outcome(result).is_error is True


def test_nul_characters_are_replaced_so_any_database_stores_the_text():
    assert outcome(CallToolResult(content=[TextContent(text="a\x00b")])).content == "a\ufffdb"
