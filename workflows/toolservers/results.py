"""What a server answered, as the types a tool loop uses: its tools within bounds, and a call's
result as text for the model. Pure: no connection, no settings."""

import json
import mcp_types as types

from workflows.toolservers import ListedTool, ToolOutcome, ToolServerError

# The most tools one server may list, and the most pages it may list them in: past them, the listing
# fails, rather than leave the model without tools that nobody knows are missing.
MAX_TOOLS = 128
MAX_LISTING_PAGES = 16
# A tool's description is cut to this; its input schema, as JSON, may be no larger than this or the
# listing fails naming the tool (a schema cut short would no longer describe the arguments).
MAX_DESCRIPTION_CHARS = 4000
MAX_INPUT_SCHEMA_BYTES = 32 * 1024
# The most of a call's result the model is shown (the tool's own tool_output.max_chars may cut more).
MAX_RESULT_CHARS = 256 * 1024


def listed_tool(tool: types.Tool, *, server_name: str) -> ListedTool:
    """`tool` as listed, or ToolServerError when its input schema is past the bound."""
    schema_bytes = len(json.dumps(tool.input_schema, ensure_ascii=False).encode())
    if schema_bytes > MAX_INPUT_SCHEMA_BYTES:
        raise ToolServerError(
            f"{server_name} lists the tool '{bounded_text(tool.name, 100)}' with an input schema of "
            f"{schema_bytes} bytes; at most {MAX_INPUT_SCHEMA_BYTES} are accepted."
        )
    hints = tool.annotations or types.ToolAnnotations()
    return ListedTool(
        name=tool.name,
        description=bounded_text(tool.description or "", MAX_DESCRIPTION_CHARS),
        input_schema=tool.input_schema,
        read_only=hints.read_only_hint is True,
        idempotent=hints.idempotent_hint is True,
    )


def too_many_tools(*, server_name: str) -> ToolServerError:
    return ToolServerError(f"{server_name} lists more than {MAX_TOOLS} tools, the most one server may offer.")


def too_many_pages(*, server_name: str) -> ToolServerError:
    return ToolServerError(f"{server_name} lists its tools in more than {MAX_LISTING_PAGES} pages.")


def outcome(result: types.CallToolResult) -> ToolOutcome:
    """The result's content blocks as text, one after another, binary content as a placeholder
    naming what it was; its structured content as JSON only when no text block says anything (the
    spec asks a server to send structured content as text too, and a model shown both pays twice)."""
    parts = [_block_text(block) for block in result.content]
    said = any(isinstance(block, types.TextContent) and block.text.strip() for block in result.content)
    if result.structured_content is not None and not said:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return ToolOutcome(content=bounded_text("\n".join(parts), MAX_RESULT_CHARS), is_error=result.is_error)


def _block_text(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        return f"[{block.type} content, {block.mime_type}, not shown]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.uri}]"
    if isinstance(block, types.EmbeddedResource) and isinstance(block.resource, types.TextResourceContents):
        return block.resource.text  # text the tool returned, filed as a resource
    mime = getattr(getattr(block, "resource", None), "mime_type", None) or "unknown type"
    return f"[{block.type} content, {mime}, not shown]"


def bounded_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was cut, without NUL characters (which no
    PostgreSQL text column stores)."""
    text = text.replace("\x00", "\ufffd")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[cut: {len(text) - limit} more characters]"
