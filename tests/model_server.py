"""A scripted model server for end-to-end tests with real agent CLIs, on 127.0.0.1.

It speaks the Anthropic Messages API (``POST /v1/messages``, streamed as server-sent events when the
request asks for ``stream``, one JSON body otherwise). A test gives it *scripts*: each is a list of
steps (a tool call, a text answer, an HTTP error, a hang, a structured verdict) played one per model
request to the requests it matches. Every request is recorded, so a test can assert what the agent
was sent (the conversation, the tool results, the prompt).

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
import threading
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


@dataclass
class Request:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    script: str | None = None  # the name of the script that answered it

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def tools(self) -> list[str]:
        return [t.get("name", "") for t in self.body.get("tools") or []]

    def _texts(self, blocks: Any) -> Iterable[str]:
        if isinstance(blocks, str):
            yield blocks
            return
        for block in blocks or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                yield block.get("text", "")
            elif block.get("type") == "tool_result":
                yield from self._texts(block.get("content"))

    @property
    def text(self) -> str:
        """Every text the request carries: system prompt, messages and tool results."""
        parts = list(self._texts(self.body.get("system")))
        for message in self.messages:
            parts.extend(self._texts(message.get("content")))
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
        results = []
        for message in self.messages:
            content = message.get("content")
            for block in content if isinstance(content, list) else []:
                if _is_result(block):
                    results.append("\n".join(self._texts(block.get("content"))))
        return results

    @property
    def tool_result_errors(self) -> list[bool]:
        """For each tool result in the request, whether the agent's CLI marked it an error (refused)."""
        return [
            bool(block.get("is_error"))
            for message in self.messages
            if isinstance(message.get("content"), list)
            for block in message["content"]
            if _is_result(block)
        ]

    @property
    def tool_uses(self) -> list[str]:
        """The ids of the assistant's earlier tool calls in the conversation."""
        return [
            block.get("id", "")
            for message in self.messages
            if message.get("role") == "assistant" and isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_use"
        ]


def _is_result(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "tool_result"


# -- the server ----------------------------------------------------------------------------------


@dataclass
class _Script:
    name: str
    steps: list[Step]
    match: Callable[[Request], bool]
    played: int = 0


class ModelServer:
    """A scripted Anthropic Messages API on 127.0.0.1 (an ephemeral port), serving from a thread."""

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
        """The base URL to give an agent CLI (``ANTHROPIC_BASE_URL``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

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

        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

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
            if path != "/v1/messages":
                self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
                return
            request = Request(self.path, dict(self.headers), body)
            step = server._next_step(request) or text("(unscripted request)")
            if step.kind == "hang":
                while not server._closing.wait(0.2):
                    pass
                self.close_connection = True
                return
            if step.kind == "error":
                error = {"type": step.error_type, "message": step.text}
                self._json(step.status, {"type": "error", "error": error})
                return
            message = server._message(request, step)
            if body.get("stream"):
                self._stream(message)
            else:
                self._json(200, message)

        def _event(self, name: str, data: dict[str, Any]) -> None:
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        def _stream(self, message: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
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

    parser = argparse.ArgumentParser(description="A scripted Anthropic Messages API on 127.0.0.1.")
    parser.add_argument("scripts", help='JSON: [{"match": "text in the request", "steps": [{"text": "hi"}, ...]}, ...]')
    args = parser.parse_args(argv)
    with open(args.scripts, encoding="utf-8") as handle:
        scripts = json.load(handle)
    server = ModelServer()
    for entry in scripts:
        server.script([step_from_json(s) for s in entry["steps"]], match=entry.get("match", ""))
    print(f"ANTHROPIC_BASE_URL={server.url}", flush=True)
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
