"""Wire-compatible stand-ins for the OpenAI and Anthropic APIs, on 127.0.0.1, for the real SDKs to call.

A test scripts the answers in order; each request is recorded with its headers and JSON body.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: dict | None = None
    events: list[tuple[str | None, dict | str]] | None = None  # SSE: (event name or None, data)
    headers: dict[str, str] = field(default_factory=dict)
    # Stream only this many events, then drop the connection in the middle of the body.
    cut_after: int | None = None
    # Answer only after this long, as a slow model does: a client that stops waiting has gone by then.
    delay_seconds: float = 0
    # Stream each event this long after the one before, as a model writing slowly does.
    pause_seconds: float = 0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict


class WireServer:
    def __init__(self):
        self.answers: list[Answer] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    answer = server.answers.pop(0) if server.answers else Answer(500, {"error": {"message": "no answer scripted"}})
                time.sleep(answer.delay_seconds)
                try:
                    if answer.events is not None:
                        self._stream(answer)
                    else:
                        self._json(answer)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client stopped waiting

            def _json(self, answer: Answer):
                payload = json.dumps(answer.body or {}).encode()
                self.send_response(answer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, answer: Answer):
                frames = []
                for event, data in answer.events:
                    text = data if isinstance(data, str) else json.dumps(data)
                    frames.append(((f"event: {event}\n" if event else "") + f"data: {text}\n\n").encode())
                self.send_response(answer.status)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                if answer.cut_after is not None:
                    # The whole body's length, then less of it: the client sees the connection cut.
                    self.send_header("content-length", str(sum(map(len, frames))))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for frame in frames[: answer.cut_after]:
                    time.sleep(answer.pause_seconds)
                    self.wfile.write(frame)
                    self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self.answers.extend(answers)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# OpenAI's Chat Completions formats.


def openai_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


def openai_completion(content: str, usage: dict, *, request_id: str = "req_openai_1") -> Answer:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage,
    }
    return Answer(body=body, headers={"x-request-id": request_id})


def openai_stream(pieces: list[str], usage: dict, *, request_id: str = "req_openai_stream") -> Answer:
    def chunk(delta: dict, finish=None, usage_=None, choices=True):
        return {
            "id": "chatcmpl-2",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
            "usage": usage_,
        }

    events = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": piece})) for piece in pieces]
    events += [(None, chunk({}, finish="stop")), (None, chunk({}, usage_=usage, choices=False)), (None, "[DONE]")]
    return Answer(events=events, headers={"x-request-id": request_id})


def openai_message(
    message: dict, usage: dict, *, finish_reason: str = "tool_calls", request_id: str = "req_openai_tools"
) -> Answer:
    """An unstreamed completion whose message is given whole (tool calls, content or both)."""
    answer = openai_completion("", usage, request_id=request_id)
    answer.body["choices"] = [{"index": 0, "message": message, "finish_reason": finish_reason}]
    return answer


def openai_stream_deltas(
    deltas: list[dict], usage: dict, *, finish_reason: str = "tool_calls", request_id: str = "req_openai_stream"
) -> Answer:
    """A streamed completion of the given deltas (pieces of tool calls, content or both), then the
    finishing chunk, the usage chunk and [DONE]."""
    answer = openai_stream([], usage, request_id=request_id)
    first, *_, finish, usage_chunk, done = answer.events
    finish[1]["choices"][0]["finish_reason"] = finish_reason

    def chunk(delta: dict) -> tuple[None, dict]:
        return None, {**first[1], "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}

    answer.events = [first, *map(chunk, deltas), finish, usage_chunk, done]
    return answer


def openai_error(status: int, message: str, *, usage: dict | None = None, headers: dict | None = None) -> Answer:
    body = {"error": {"message": message, "type": "error", "param": None, "code": None}}
    if usage is not None:
        body["usage"] = usage
    return Answer(status=status, body=body, headers={"x-request-id": f"req_err_{status}", **(headers or {})})


# Anthropic's Messages formats.


def anthropic_usage(input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0) -> dict:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


def anthropic_message(content: list[dict], usage: dict, *, request_id: str = "req_anthropic_1") -> Answer:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    return Answer(body=body, headers={"request-id": request_id})


def anthropic_stream(
    text_pieces: list[str] | None = None,
    *,
    tool_json_pieces: list[str] | None = None,
    start_usage: dict,
    final_output_tokens: int,
    error_after_start: bool = False,
    thinking_pieces: list[str] | None = None,
    request_id: str = "req_anthropic_stream",
) -> Answer:
    message = {
        "id": "msg_2",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events: list = [("message_start", {"type": "message_start", "message": message})]
    if error_after_start:
        events.append(("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        return Answer(events=events, headers={"request-id": request_id})
    if tool_json_pieces is not None:
        block = {"type": "tool_use", "id": "toolu_1", "name": "output", "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in tool_json_pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in text_pieces or []]
    blocks = [(block, deltas)]
    if thinking_pieces is not None:  # extended thinking comes first, in a block of its own
        thinking = [{"type": "thinking_delta", "thinking": piece} for piece in thinking_pieces]
        thinking.append({"type": "signature_delta", "signature": "sig_1"})
        blocks.insert(0, ({"type": "thinking", "thinking": "", "signature": ""}, thinking))
    for index, (block, deltas) in enumerate(blocks):
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": final_output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return Answer(events=events, headers={"request-id": request_id})


def anthropic_error(status: int, message: str, *, headers: dict | None = None) -> Answer:
    kind = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return Answer(
        status=status,
        body={"type": "error", "error": {"type": kind, "message": message}},
        headers={"request-id": f"req_err_{status}", **(headers or {})},
    )


def anthropic_stream_blocks(
    blocks: list[tuple[dict, list[dict]]],
    *,
    start_usage: dict,
    final_output_tokens: int,
    stop_reason: str = "tool_use",
    request_id: str = "req_anthropic_stream",
) -> Answer:
    """A streamed message of the given content blocks, each its content_block_start block and the
    deltas that follow it (text, thinking, signature, input_json)."""
    answer = anthropic_stream([], start_usage=start_usage, final_output_tokens=final_output_tokens, request_id=request_id)
    message_start, *_, message_delta, message_stop = answer.events
    message_delta[1]["delta"]["stop_reason"] = stop_reason
    events = [message_start]
    for index, (block, deltas) in enumerate(blocks):
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    answer.events = [*events, message_delta, message_stop]
    return answer
