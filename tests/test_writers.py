"""One contract, every writer: the template writer, the scripted fake, and the OpenAI writer against the
real llama.cpp server running SmolLM2; plus the OpenAI writer's error translation at its boundary."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.writers import (
    CopyRequest,
    EmailCopy,
    OpenAIWriter,
    ProductFacts,
    ScriptedWriter,
    TemplateWriter,
    Writer,
)
from guardrails.brand_config import BrandConfig, load_brand
from tailor.errors import LLMError, LLMTimeoutError
from tailor.models import Evidence
from tailor.settings import Settings
from tests.llm_server import llm_server

REQUEST = CopyRequest(
    action="replenishment",
    first_name="Ada",
    products=(
        ProductFacts(
            item_id="85123A",
            title="White Hanging Heart T-Light Holder",
            category="Candles & Lights",
            evidence=(Evidence(kind="repeat_purchase", summary="bought 4 times, last on 2011-11-02"),),
        ),
    ),
)
GOOD = EmailCopy(
    subject="Ada, time for more?",
    preheader="Your usual",
    intro="Hello Ada.",
    reasons={"85123A": "A regular."},
)


@pytest.fixture(scope="module")
def llama() -> Iterator[Settings]:
    with llm_server() as server:
        yield Settings(
            writer="openai",
            llm_base_url=server.base_url,
            llm_model=server.model,
            llm_timeout_s=120,
            llm_max_tokens=200,
            llm_json_schema=True,
        )


@pytest.fixture(
    params=[
        "template",
        "scripted",
        pytest.param("llama", marks=[pytest.mark.slow, pytest.mark.llm]),
    ]
)
def writer(request: pytest.FixtureRequest) -> Writer:
    if request.param == "template":
        return TemplateWriter()
    if request.param == "scripted":
        return ScriptedWriter([GOOD])
    return OpenAIWriter(request.getfixturevalue("llama"))


@pytest.fixture(scope="module")
def brand() -> BrandConfig:
    return load_brand()


def test_writer_contract(writer: Writer, brand: BrandConfig) -> None:
    """Every writer returns validated copy for exactly the requested products, or raises LLMError."""
    try:
        result = writer.write_email(REQUEST, brand)
    except LLMError as exc:
        # Only a model may fail; a tiny one often does, and the graph falls back. The error says why.
        assert writer.name == "openai" and str(exc)
        return
    copy = result.copy
    assert isinstance(copy, EmailCopy) and copy.subject.strip() and copy.intro.strip()
    assert set(copy.reasons) <= {p.item_id for p in REQUEST.products}
    assert result.prompts, "a writer names the prompt it used, for the audit"
    if writer.name == "template":
        assert set(copy.reasons) == {"85123A"} and "Ada" in copy.intro
        assert len(copy.subject) <= brand.subject_max_chars


def test_template_writer_is_deterministic(brand: BrandConfig) -> None:
    a, b = TemplateWriter().write_email(REQUEST, brand), TemplateWriter().write_email(REQUEST, brand)
    assert a.copy == b.copy


def test_scripted_writer_raises_scripted_errors_and_fails_when_the_script_runs_out(
    brand: BrandConfig,
) -> None:
    w = ScriptedWriter([LLMTimeoutError("slow"), GOOD])
    with pytest.raises(LLMTimeoutError):
        w.write_email(REQUEST, brand)
    assert w.write_email(REQUEST, brand).copy == GOOD
    with pytest.raises(AssertionError, match="ran out of script after 2 calls"):
        w.write_email(REQUEST, brand)


# -- the OpenAI writer's boundary, against a scripted local endpoint (a fake is the point here) ----------


Reply = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[Reply]]]:
    script: list[Reply] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if not script:
                self.send_error(599, "script ran out")
                raise AssertionError("the scripted endpoint ran out of replies")
            script.pop(0)(self)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up on a stalled reply is the point of the timeout test

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", script
    server.shutdown()
    server.server_close()


def chat(content: str) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": content},
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return reply


def stall(seconds: float) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        chat("{}")(handler)

    return reply


def _writer(url: str, **kw: Any) -> OpenAIWriter:
    return OpenAIWriter(Settings(writer="openai", llm_base_url=url, llm_model="m", llm_max_retries=0, **kw))


def test_openai_writer_parses_json_in_prose_and_drops_unknown_products(
    endpoint: tuple[str, list[Reply]], brand: BrandConfig
) -> None:
    url, script = endpoint
    answer = {**GOOD.model_dump(), "reasons": {"85123A": "You like it.", "99999": "Invented product."}}
    script.append(chat("Sure! ```json\n" + json.dumps(answer) + "\n```"))
    result = _writer(url).write_email(REQUEST, brand)
    assert result.copy.reasons == {"85123A": "You like it."}
    assert result.model == "m" and result.tokens == 2 and not script


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("I cannot write JSON today.", "did not answer with a JSON object"),
        ('{"subject": "", "preheader": "p", "intro": "i", "reasons": {}}', "not a valid email copy"),
        ('{"subject": "s", "preheader": "p"', "did not answer with a JSON object"),
        ('{"subject": "s", "intro": "i", "reasons": {}}', "preheader"),
    ],
)
def test_openai_writer_rejects_unusable_answers(
    endpoint: tuple[str, list[Reply]], brand: BrandConfig, content: str, message: str
) -> None:
    url, script = endpoint
    script.append(chat(content))
    with pytest.raises(LLMError, match=message):
        _writer(url).write_email(REQUEST, brand)


def test_openai_writer_timeout_is_translated_and_bounded(
    endpoint: tuple[str, list[Reply]], brand: BrandConfig
) -> None:
    url, script = endpoint
    script.extend([stall(3.0), stall(3.0)])
    writer = OpenAIWriter(
        Settings(writer="openai", llm_base_url=url, llm_model="m", llm_timeout_s=0.5, llm_max_retries=1)
    )
    with pytest.raises(LLMTimeoutError, match="timed out after"):
        writer.write_email(REQUEST, brand)
    assert not script, "one try plus exactly one retry"


def test_openai_writer_unreachable_endpoint_is_an_llm_error(brand: BrandConfig) -> None:
    with pytest.raises(LLMError, match="failed: APIConnectionError"):
        _writer("http://127.0.0.1:9/v1", llm_timeout_s=2).write_email(REQUEST, brand)


def test_openai_writer_http_error_is_an_llm_error(
    endpoint: tuple[str, list[Reply]], brand: BrandConfig
) -> None:
    url, script = endpoint
    script.append(lambda h: h.send_error(400, "bad request"))
    with pytest.raises(LLMError, match="BadRequestError"):
        _writer(url).write_email(REQUEST, brand)


def test_openai_writer_sends_the_copy_schema_when_asked(
    endpoint: tuple[str, list[Reply]], brand: BrandConfig
) -> None:
    url, script = endpoint
    seen: list[dict[str, Any]] = []

    def reply(handler: BaseHTTPRequestHandler) -> None:
        seen.append(json.loads(handler.body))  # type: ignore[attr-defined]
        chat(GOOD.model_dump_json())(handler)

    script.append(reply)
    assert _writer(url, llm_json_schema=True).write_email(REQUEST, brand).copy == GOOD
    fmt = seen[0]["response_format"]
    assert fmt["type"] == "json_object"
    assert fmt["schema"]["properties"]["reasons"]["required"] == ["85123A"]
    assert fmt["schema"]["properties"]["subject"]["maxLength"] == brand.subject_max_chars
    script.append(reply)
    _writer(url).write_email(REQUEST, brand)
    assert "response_format" not in seen[1]
