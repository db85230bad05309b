"""A scripted model server for end-to-end tests with real agent CLIs, on 127.0.0.1.

It speaks three APIs, each streamed as server-sent events when the request asks for ``stream`` and
as one JSON body otherwise:

* the Anthropic Messages API (``POST /v1/messages``: Claude Code, ``ANTHROPIC_BASE_URL``);
* the OpenAI Responses API (``POST /v1/responses``: Codex, a custom provider's ``base_url``);
* OpenAI Chat Completions (``POST /v1/chat/completions``: Aider, ``OPENAI_API_BASE``).

A test gives it *scripts*: each is a list of steps (a tool call, a text answer, an HTTP error, a
hang, a structured verdict) played one per model request to the requests it matches, whichever API
asked. The same script drives any agent: a ``bash`` step is the agent's own shell tool (Claude Code's
``Bash``, Codex's ``exec_command``), a ``write`` step its way of writing a file (``Write``; a shell
command for Codex; a whole-file listing in Aider's reply), a ``verdict`` its structured output. Every
request is recorded, so a test can assert what the agent was sent (the conversation, the tool
results, the prompt).

Usage::

    server = ModelServer()
    server.script([write("a.txt", "hi"), bash("git add -A && git commit -qm a"), text("done")], match="MC-1")
    env = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-test"}
    ...
    server.requests_for("MC-1")[1].tool_results  # what the agent saw after its first tool call
    server.close()

A request no script matches (or whose script is used up) gets a plain text answer and is listed in
``server.unscripted``, so a test can insist that everything the agent asked for was expected.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# -- steps ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One scripted model answer. ``kind``: text | tool | error | hang."""

    kind: str
    text: str = ""
    tool: str = ""
    tool_input: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    error_type: str = ""
    usage: tuple[int, int] = (120, 30)  # input, output tokens


def text(answer: str, usage: tuple[int, int] = (120, 30)) -> Step:
    """Answer with text and end the turn."""
    return Step("text", text=answer, usage=usage)


def tool(name: str, usage: tuple[int, int] = (120, 30), **tool_input: Any) -> Step:
    """Call the agent's tool ``name`` with ``tool_input``."""
    return Step("tool", tool=name, tool_input=tool_input, usage=usage)


def bash(command: str) -> Step:
    """Run a shell command through the agent's Bash tool."""
    return tool("Bash", command=command, description="scripted step")


def write(path: str, content: str) -> Step:
    """Write a file through the agent's Write tool (``path`` relative paths are the agent's to resolve)."""
    return tool("Write", file_path=path, content=content)


def verdict(value: str, reasons: Iterable[str] = (), gaps: Iterable[str] = ()) -> Step:
    """Return a structured verdict (the CLI's StructuredOutput tool, as ``--json-schema`` offers it)."""
    return tool("StructuredOutput", verdict=value, reasons=list(reasons), gaps=list(gaps))


def error(status: int, error_type: str = "api_error", message: str = "scripted failure") -> Step:
    """Answer with an HTTP error in the API's error format."""
    return Step("error", status=status, error_type=error_type, text=message)


def hang() -> Step:
    """Hold the request open without a byte of answer, until the client goes or the server closes."""
    return Step("hang")


# -- recorded requests ---------------------------------------------------------------------------

MESSAGES, RESPONSES, CHAT = "/v1/messages", "/v1/responses", "/v1/chat/completions"


@dataclass
class Request:
    """One request the server received, in any of the three APIs (``api`` is its path)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    script: str | None = None  # the name of the script that answered it

    @property
    def api(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation: Messages' and Chat's ``messages``, the Responses API's ``input`` items."""
        items = self.body.get("input") if self.api == RESPONSES else self.body.get("messages")
        if isinstance(items, str):
            return [{"role": "user", "content": items}]
        return [m for m in items or [] if isinstance(m, dict)]

    @property
    def tools(self) -> list[str]:
        names = []
        for spec in self.body.get("tools") or []:
            function = spec.get("function") if isinstance(spec.get("function"), dict) else spec
            names.append(function.get("name", "") or spec.get("type", ""))
        return names

    def _texts(self, blocks: Any) -> Iterable[str]:
        if isinstance(blocks, str):
            yield blocks
            return
        for block in blocks or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") in ("text", "input_text", "output_text"):
                yield block.get("text", "")
            elif block.get("type") == "tool_result":
                yield from self._texts(block.get("content"))

    def _results(self) -> Iterable[tuple[str, bool]]:
        for message in self.messages:
            if message.get("type") == "function_call_output":  # Responses
                output = message.get("output")
                yield (output if isinstance(output, str) else "\n".join(self._texts(output))), False
            elif message.get("role") == "tool":  # Chat
                yield "\n".join(self._texts(message.get("content"))), False
            elif isinstance(message.get("content"), list):  # Messages
                for block in message["content"]:
                    if _is_result(block):
                        yield "\n".join(self._texts(block.get("content"))), bool(block.get("is_error"))

    @property
    def text(self) -> str:
        """Every text the request carries: system prompt (or instructions), messages and tool results."""
        parts = list(self._texts(self.body.get("system") or self.body.get("instructions")))
        for message in self.messages:
            parts.extend(self._texts(message.get("content")))
        parts.extend(result for result, _ in self._results() if self.api != MESSAGES)
        return "\n".join(parts)

    @property
    def user_text(self) -> str:
        """The text of the user turns, tool results excluded."""
        parts = []
        for message in self.messages:
            if message.get("role") != "user":
                continue
            content = message.get("content")
            blocks = [content] if isinstance(content, str) else content or []
            parts.extend(b if isinstance(b, str) else b.get("text", "") for b in blocks if not _is_result(b))
        return "\n".join(parts)

    @property
    def tool_results(self) -> list[str]:
        """The contents of the tool results in the request, in order."""
        return [result for result, _ in self._results()]

    @property
    def tool_result_errors(self) -> list[bool]:
        """For each tool result in the request, whether the agent's CLI marked it an error (refused)."""
        return [refused for _, refused in self._results()]

    @property
    def tool_uses(self) -> list[str]:
        """The ids of the assistant's earlier tool calls in the conversation."""
        ids = []
        for message in self.messages:
            if message.get("type") == "function_call":
                ids.append(message.get("call_id", ""))
            for call in message.get("tool_calls") or [] if message.get("role") == "assistant" else []:
                ids.append(call.get("id", ""))
            if message.get("role") == "assistant" and isinstance(message.get("content"), list):
                ids.extend(
                    b.get("id", "") for b in message["content"] if isinstance(b, dict) and b.get("type") == "tool_use"
                )
        return ids


def _is_result(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "tool_result"


# -- what each API's answer is made of -----------------------------------------------------------


def _shell_call(request: Request, command: str) -> tuple[str, dict[str, Any]]:
    """The Responses API's form of a shell command: Codex's ``exec_command`` (or its older ``shell``)."""
    if "exec_command" in request.tools or "shell" not in request.tools:
        return "exec_command", {"cmd": command}
    return "shell", {"command": ["bash", "-lc", command]}


def openai_call(request: Request, step: Step) -> tuple[str, dict[str, Any]] | None:
    """A tool step as an OpenAI-dialect function call (name, arguments); None where it is text."""
    if step.tool == "Bash":
        return _shell_call(request, step.tool_input["command"])
    if step.tool == "Write":
        path, content = step.tool_input["file_path"], step.tool_input["content"]
        folder = os.path.dirname(path)
        make = f"mkdir -p {shlex.quote(folder)} && " if folder else ""
        return _shell_call(request, f"{make}printf %s {shlex.quote(content)} > {shlex.quote(path)}")
    if step.tool == "StructuredOutput":
        return None  # the final message's text is the structured output (--output-schema)
    return step.tool, step.tool_input


def openai_text(step: Step) -> str:
    """A step's text in an OpenAI-dialect answer: a verdict as its JSON, a written file as a whole-file
    listing (the form Aider's ``whole`` edit format reads), a shell command as a fenced block."""
    if step.kind == "text":
        return step.text
    if step.tool == "StructuredOutput":
        return json.dumps(step.tool_input)
    if step.tool == "Write":
        content = step.tool_input["content"]
        return f"{step.tool_input['file_path']}\n```\n{content}{'' if content.endswith(chr(10)) else chr(10)}```\n"
    if step.tool == "Bash":
        return f"```bash\n{step.tool_input['command']}\n```\n"
    return json.dumps({step.tool: step.tool_input})


# -- the server ----------------------------------------------------------------------------------


@dataclass
class _Script:
    name: str
    steps: list[Step]
    match: Callable[[Request], bool]
    played: int = 0


class ModelServer:
    """A scripted model API on 127.0.0.1 (an ephemeral port), serving from a thread."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.unscripted: list[Request] = []
        self._scripts: list[_Script] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="model-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL to give Claude Code (``ANTHROPIC_BASE_URL``); the OpenAI APIs are under ``/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_url(self) -> str:
        """The base URL to give an OpenAI client (Codex's provider ``base_url``, Aider's ``OPENAI_API_BASE``)."""
        return f"{self.url}/v1"

    def script(self, steps: Iterable[Step], match: str | Callable[[Request], bool] = "", name: str = "") -> None:
        """Play ``steps`` to requests that ``match`` (a substring of the request's text, or a predicate).

        Scripts are tried in the order they were given; a used-up script matches nothing more.
        """
        predicate = match if callable(match) else (lambda request, needle=match: needle in request.text)
        with self._lock:
            self._scripts.append(
                _Script(name or str(match) or f"script{len(self._scripts) + 1}", list(steps), predicate)
            )

    def requests_for(self, name: str) -> list[Request]:
        """The requests the script called ``name`` (by default its match string) answered."""
        return [r for r in self.requests if r.script == name]

    def remaining(self) -> dict[str, int]:
        """Steps not yet played, per script."""
        return {s.name: len(s.steps) - s.played for s in self._scripts if s.played < len(s.steps)}

    def close(self) -> None:
        """Stop serving; hanging requests are let go."""
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- answering ------------------------------------------------------------------------------

    def _next_step(self, request: Request) -> Step | None:
        with self._lock:
            self.requests.append(request)
            for script in self._scripts:
                if script.played < len(script.steps) and script.match(request):
                    request.script = script.name
                    script.played += 1
                    return script.steps[script.played - 1]
            self.unscripted.append(request)
            return None

    def _message(self, request: Request, step: Step) -> dict[str, Any]:
        """A Messages API answer."""
        number = next(self._ids)
        if step.kind == "tool":
            block = {"type": "tool_use", "id": f"toolu_{number:08d}", "name": step.tool, "input": step.tool_input}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": step.text}
            stop = "end_turn"
        return {
            "id": f"msg_{number:08d}",
            "type": "message",
            "role": "assistant",
            "model": request.body.get("model", "scripted"),
            "content": [block],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": step.usage[0], "output_tokens": step.usage[1]},
        }

    def _response(self, request: Request, step: Step) -> dict[str, Any]:
        """A Responses API answer: one output item, a function call or a message."""
        number = next(self._ids)
        call = openai_call(request, step) if step.kind == "tool" else None
        if call is not None:
            name, arguments = call
            item = {
                "type": "function_call",
                "id": f"fc_{number:08d}",
                "call_id": f"call_{number:08d}",
                "name": name,
                "arguments": json.dumps(arguments),
                "status": "completed",
            }
        else:
            content = [{"type": "output_text", "text": openai_text(step), "annotations": []}]
            item = {
                "type": "message",
                "id": f"msg_{number:08d}",
                "role": "assistant",
                "status": "completed",
                "content": content,
            }
        usage = {
            "input_tokens": step.usage[0],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": step.usage[1],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": sum(step.usage),
        }
        return {
            "id": f"resp_{number:08d}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": request.body.get("model", "scripted"),
            "output": [item],
            "usage": usage,
        }

    def _completion(self, request: Request, step: Step) -> dict[str, Any]:
        """A Chat Completions answer (a tool step is a tool call where the request offered tools)."""
        number = next(self._ids)
        call = openai_call(request, step) if step.kind == "tool" and request.tools else None
        message: dict[str, Any] = {"role": "assistant", "content": None if call else openai_text(step)}
        if call is not None:
            function = {"name": call[0], "arguments": json.dumps(call[1])}
            message["tool_calls"] = [{"id": f"call_{number:08d}", "type": "function", "function": function}]
        usage = {"prompt_tokens": step.usage[0], "completion_tokens": step.usage[1], "total_tokens": sum(step.usage)}
        return {
            "id": f"chatcmpl-{number:08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.body.get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}],
            "usage": usage,
        }


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, path: str) -> None:
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})

        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            path = self.path.split("?", 1)[0]
            if path == "/v1/models":  # clients that list models first
                self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                return
            self._not_found(path)

        def do_POST(self) -> None:  # noqa: N802 - the base class's name
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = {}
            path = self.path.split("?", 1)[0]
            if path == "/v1/messages/count_tokens":
                self._json(200, {"input_tokens": 100})
                return
            if path not in (MESSAGES, RESPONSES, CHAT):
                self._not_found(path)
                return
            request = Request(self.path, dict(self.headers), body if isinstance(body, dict) else {})
            step = server._next_step(request) or text("(unscripted request)")
            if step.kind == "hang":
                while not server._closing.wait(0.2):
                    pass
                self.close_connection = True
                return
            if step.kind == "error":
                self._error(path, step)
            elif path == MESSAGES:
                message = server._message(request, step)
                self._stream_message(message) if request.body.get("stream") else self._json(200, message)
            elif path == RESPONSES:
                response = server._response(request, step)
                self._stream_response(response) if request.body.get("stream") else self._json(200, response)
            else:
                completion = server._completion(request, step)
                if request.body.get("stream"):
                    self._stream_completion(completion, bool((body.get("stream_options") or {}).get("include_usage")))
                else:
                    self._json(200, completion)

        def _error(self, path: str, step: Step) -> None:
            if path == MESSAGES:
                self._json(step.status, {"type": "error", "error": {"type": step.error_type, "message": step.text}})
            else:
                error = {"message": step.text, "type": step.error_type, "param": None, "code": step.error_type}
                self._json(step.status, {"error": error})

        def _begin_stream(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True

        def _event(self, name: str | None, data: dict[str, Any] | str) -> None:
            payload = data if isinstance(data, str) else json.dumps(data)
            self.wfile.write((f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode())

        def _stream_message(self, message: dict[str, Any]) -> None:
            self._begin_stream()
            usage = message["usage"]
            start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            self._event("message_start", {"type": "message_start", "message": start})
            for index, block in enumerate(message["content"]):
                if block["type"] == "text":
                    opening, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
                else:
                    opening = {**block, "input": {}}
                    delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                self._event(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
                )
                self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                self._event("content_block_stop", {"type": "content_block_stop", "index": index})
            final = {"stop_reason": message["stop_reason"], "stop_sequence": None}
            self._event("message_delta", {"type": "message_delta", "delta": final, "usage": usage})
            self._event("message_stop", {"type": "message_stop"})
            self.wfile.flush()

        def _stream_response(self, response: dict[str, Any]) -> None:
            self._begin_stream()
            opening = {**response, "status": "in_progress", "output": [], "usage": None}
            self._event("response.created", {"type": "response.created", "response": opening})
            self._event("response.in_progress", {"type": "response.in_progress", "response": opening})
            for index, item in enumerate(response["output"]):
                self._event(
                    "response.output_item.added",
                    {
                        "type": "response.output_item.added",
                        "output_index": index,
                        "item": {**item, "status": "in_progress"},
                    },
                )
                if item["type"] == "message":
                    text_delta = {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "delta": item["content"][0]["text"],
                    }
                    self._event("response.output_text.delta", text_delta)
                self._event(
                    "response.output_item.done",
                    {"type": "response.output_item.done", "output_index": index, "item": item},
                )
            self._event("response.completed", {"type": "response.completed", "response": response})
            self.wfile.flush()

        def _stream_completion(self, completion: dict[str, Any], include_usage: bool) -> None:
            self._begin_stream()
            choice = completion["choices"][0]
            head = {key: completion[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
            message = choice["message"]
            delta: dict[str, Any] = {"role": "assistant", "content": message["content"]}
            if message.get("tool_calls"):
                delta["tool_calls"] = [{"index": 0, **call} for call in message["tool_calls"]]
            self._event(None, {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            self._event(
                None, {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
            )
            if include_usage:
                self._event(None, {**head, "choices": [], "usage": completion["usage"]})
            self._event(None, "[DONE]")
            self.wfile.flush()

    return Handler


# -- by hand ---------------------------------------------------------------------------------------


def step_from_json(data: dict[str, Any]) -> Step:
    """A step from its JSON form: {"text": ...}, {"tool": NAME, "input": {...}}, {"bash": CMD},
    {"write": PATH, "content": TEXT}, {"verdict": V, "reasons": [...], "gaps": [...]}, {"error": STATUS},
    {"hang": true}."""
    if "text" in data:
        return text(data["text"])
    if "tool" in data:
        return tool(data["tool"], **data.get("input", {}))
    if "bash" in data:
        return bash(data["bash"])
    if "write" in data:
        return write(data["write"], data.get("content", ""))
    if "verdict" in data:
        return verdict(data["verdict"], data.get("reasons", ()), data.get("gaps", ()))
    if "error" in data:
        return error(int(data["error"]), data.get("type", "api_error"), data.get("message", "scripted failure"))
    if data.get("hang"):
        return hang()
    raise ValueError(f"not a step: {data!r}")


def main(argv: list[str] | None = None) -> int:
    """Serve scripts from a JSON file until interrupted, and print each request's path and script."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description="A scripted model server (Anthropic and OpenAI APIs) on 127.0.0.1.")
    parser.add_argument("scripts", help='JSON: [{"match": "text in the request", "steps": [{"text": "hi"}, ...]}, ...]')
    args = parser.parse_args(argv)
    with open(args.scripts, encoding="utf-8") as handle:
        scripts = json.load(handle)
    server = ModelServer()
    for entry in scripts:
        server.script([step_from_json(s) for s in entry["steps"]], match=entry.get("match", ""))
    print(f"ANTHROPIC_BASE_URL={server.url}", flush=True)
    print(f"OPENAI_BASE_URL={server.openai_url}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            for request in server.requests[seen:]:
                print(f"{request.path} -> {request.script or '(unscripted)'}", flush=True)
            seen = len(server.requests)
    except KeyboardInterrupt:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
