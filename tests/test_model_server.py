"""The scripted model server itself: both answer forms, errors, and the record of requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from model_server import ModelServer, bash, error, text, tool, write


def post(server: ModelServer, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        server.url + "/v1/messages", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def ask(content: str, stream: bool = False) -> dict[str, Any]:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": content}]}


def test_a_script_answers_the_requests_it_matches_in_order_and_records_them(model_server: ModelServer) -> None:
    model_server.script([tool("Bash", command="ls"), text("done")], match="ticket A")
    status, body = post(model_server, ask("work on ticket A"))
    first = json.loads(body)
    assert status == 200 and first["stop_reason"] == "tool_use" and first["content"][0]["input"] == {"command": "ls"}
    assert json.loads(post(model_server, ask("ticket A again"))[1])["content"][0]["text"] == "done"
    assert [r.script for r in model_server.requests] == ["ticket A", "ticket A"]
    assert model_server.remaining() == {} and model_server.unscripted == []


def test_streamed_answers_are_server_sent_events_ending_with_message_stop(model_server: ModelServer) -> None:
    model_server.script([text("hello")])
    status, body = post(model_server, ask("hi", stream=True))
    events = [line.split(": ", 1)[1] for line in body.decode().splitlines() if line.startswith("event: ")]
    assert status == 200
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert '"text_delta", "text": "hello"' in body.decode()


@pytest.mark.parametrize("status", [401, 500, 529])
def test_an_error_step_answers_with_its_status_in_the_apis_error_form(model_server: ModelServer, status: int) -> None:
    model_server.script([error(status, "overloaded_error", "try later")])
    code, body = post(model_server, ask("x"))
    assert code == status and json.loads(body)["error"] == {"type": "overloaded_error", "message": "try later"}


def test_requests_nothing_matches_are_answered_and_listed(model_server: ModelServer) -> None:
    model_server.script([text("only for B")], match="ticket B")
    assert post(model_server, ask("ticket C"))[0] == 200
    assert [r.user_text for r in model_server.unscripted] == ["ticket C"]


def post_to(server: ModelServer, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sse_data(body: bytes) -> list[Any]:
    return [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]


def test_the_responses_api_streams_a_bash_step_as_codexs_exec_command(model_server: ModelServer) -> None:
    model_server.script([bash("git status")], match="ticket A")
    ask = {
        "model": "m",
        "stream": True,
        "tools": [{"type": "function", "name": "exec_command"}],
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ticket A"}]}],
    }
    status, body = post_to(model_server, "/v1/responses", ask)
    events = sse_data(body)
    assert status == 200 and events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    call = events[-1]["response"]["output"][0]
    assert (call["type"], call["name"], json.loads(call["arguments"])) == (
        "function_call",
        "exec_command",
        {"cmd": "git status"},
    )
    assert model_server.requests[0].user_text == "ticket A"


def test_chat_completions_answer_a_write_step_with_a_whole_file_listing(model_server: ModelServer) -> None:
    model_server.script([write("a.txt", "hi\n")], match="ticket B")
    ask = {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ticket B"}],
    }
    status, body = post_to(model_server, "/v1/chat/completions", ask)
    answer = json.loads(body)
    assert status == 200 and answer["choices"][0]["message"]["content"] == "a.txt\n```\nhi\n```\n"
    assert answer["usage"] == {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}


def test_an_openai_error_step_answers_in_openais_error_form(model_server: ModelServer) -> None:
    model_server.script([error(401, "invalid_api_key", "bad key")])
    code, body = post_to(model_server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    assert code == 401 and json.loads(body)["error"]["message"] == "bad key"
