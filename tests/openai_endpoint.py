"""A scripted OpenAI-compatible endpoint on 127.0.0.1, for the writer's boundary and the agent's handling of
a failing model: each POST is answered by the next reply in the script (a fake is the point here: the
failures are what is being tested); running out of script is answered 599 and recorded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Endpoint", "Reply", "chat", "copy_replies", "fail", "good_part", "scripted_endpoint", "stall"]

Reply = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Endpoint:
    url: str  # the OpenAI-compatible root, ending in /v1
    script: list[Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    overruns: int = 0


@contextmanager
def scripted_endpoint() -> Iterator[Endpoint]:
    state = Endpoint(url="", script=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.requests.append(json.loads(self.body or b"{}"))
            if not state.script:
                state.overruns += 1
                self.send_error(599, "script ran out")
                return
            state.script.pop(0)(self)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up on a stalled reply is the point of the timeout test

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def chat(content: str | Callable[[dict[str, Any]], str], usage: tuple[int, int] = (1, 1)) -> Reply:
    """A chat completion whose content is given, or made from the request body."""

    def reply(handler: BaseHTTPRequestHandler) -> None:
        request = json.loads(getattr(handler, "body", b"") or b"{}")
        text = content(request) if callable(content) else content
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                ],
                "usage": {
                    "prompt_tokens": usage[0],
                    "completion_tokens": usage[1],
                    "total_tokens": sum(usage),
                },
            }
        ).encode()
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return reply


def copy_replies(copy: Any, usage: tuple[int, int] = (1, 1)) -> list[Reply]:
    """The answers to the OpenAI writer's per-part requests for an ``EmailCopy``, in the order it asks:
    subject, preheader, intro, then each product's reason."""
    texts = [copy.subject, copy.preheader, copy.intro, *copy.reasons.values()]
    return [chat(json.dumps({"text": t}), usage) for t in texts]


def good_part(request: dict[str, Any]) -> str:
    """What a careful writer answers to one of the OpenAI writer's per-part requests, from that request's
    own data: the subject names the first product, a reason says its Why line to the customer."""
    data = request["messages"][-1]["content"]
    name = data.split("Customer: ", 1)[1].split("\n", 1)[0]
    products = [line.removeprefix("Product: ") for line in data.splitlines() if line.startswith("Product: ")]
    title = products[0].split(" (", 1)[0]
    why = products[0].split(". Why: ", 1)[1] if ". Why: " in products[0] else ""
    ask = data.rsplit("Write ", 1)[1]
    if ask.startswith("the subject"):
        text = f"{name}, a new pick for you: {title}"[:60]
    elif ask.startswith("the preview"):
        text = f"Picked from what you have bought before: {title}."
    elif ask.startswith("the opening"):
        text = f"Hello {name}, we picked a few things for you from your past orders."
    else:
        text = f"We chose it because {why}."
    return json.dumps({"text": text})


def fail(status: int = 500) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_error(status, "scripted failure")

    return reply


def stall(seconds: float) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        chat("{}")(handler)

    return reply
