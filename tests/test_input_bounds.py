"""Input bounds (issue 25, finding 8): every free-text field has a length cap named in its error, control
and bidirectional formatting characters are refused (never silently stripped), and what the CLI prints is
escaped, so stored text can never drive the terminal."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from rich.console import Console

from agent.support import Suggestion, SupportAnswer
from tailor.app.render import print_outcome, print_support, terminal_safe
from tailor.core.models import (
    FROM_STORE,
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    Customer,
    Event,
    Item,
)
from tests.server import outcome, seed_store

AT = datetime(2011, 12, 1, tzinfo=UTC)
# NUL, BEL, ESC (an ANSI colour), DEL, a C1 control, the right-to-left override, a bidi isolate.
HOSTILE = ["\x00", "\x07", "\x1b[31m", "\x7f", "\x9b", "\u202e", "\u2066"]


def _ticket(text: str) -> dict[str, object]:
    return {"customer_id": "100", "kind": "support_ticket", "text": text, "timestamp": AT.isoformat()}


def test_a_ticket_over_the_cap_is_refused_naming_the_cap() -> None:
    with pytest.raises(ValidationError, match=f"at most {MAX_TEXT_LENGTH} characters \\(got 900000\\)"):
        Event.model_validate(_ticket("x" * 900_000))
    assert Event.model_validate(_ticket("x" * MAX_TEXT_LENGTH)).text == "x" * MAX_TEXT_LENGTH


@pytest.mark.parametrize("bad", HOSTILE)
def test_control_and_bidi_characters_are_refused_with_their_code_and_place(bad: str) -> None:
    with pytest.raises(ValidationError, match=f"U\\+{ord(bad[0]):04X} at position 6"):
        Event.model_validate(_ticket("Hello " + bad + "there"))
    with pytest.raises(ValidationError, match="control character"):
        Customer(id="1", first_name="Ann" + bad, email="a@example.test", country="UK")
    with pytest.raises(ValidationError, match="control character"):
        Item(id="I" + bad, title="Lamp", category="c", price=1, url="https://x.test/p")


def test_tabs_and_newlines_are_text() -> None:
    assert Event.model_validate(_ticket("line one\n\tline two\r\n")).text == "line one\n\tline two"


def test_names_titles_and_categories_are_capped() -> None:
    long = "n" * (MAX_NAME_LENGTH + 1)
    with pytest.raises(ValidationError, match=f"at most {MAX_NAME_LENGTH} characters"):
        Item(id="I1", title=long, category="c", price=1, url="https://x.test/p")
    with pytest.raises(ValidationError, match=f"at most {MAX_NAME_LENGTH} characters"):
        Customer(id="1", first_name="Ann", email="a@example.test", country=long)
    with pytest.raises(ValidationError, match=f"at most {MAX_TEXT_LENGTH} characters"):
        Item(
            id="I1",
            title="t",
            description="d" * (MAX_TEXT_LENGTH + 1),
            category="c",
            price=1,
            url="https://x",
        )


def test_rows_stored_before_the_rule_stay_readable() -> None:
    # Or such a customer could not even be forgotten (forget reads the customer first).
    stored = Event.model_validate(_ticket("\x1b[31m" + "x" * 20_000), context=FROM_STORE)
    assert stored.text is not None and stored.text.startswith("\x1b")


def test_terminal_safe_writes_every_control_character_out() -> None:
    assert terminal_safe("a\x1b[31mb\x00\x07\u202ec\td") == "a\\x1b[31mb\\x00\\x07\\u202ec\td"


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    # Not a terminal: rich adds no escapes of its own, so any ESC in the output came from the data.
    return Console(file=buf, width=200, force_terminal=False, color_system=None), buf


def test_tailor_support_prints_stored_text_escaped() -> None:
    answer = SupportAnswer(
        customer_id="100",
        question="q",
        suggestions=(
            Suggestion(
                kind="repeat_purchase",
                title="[bold red]Lamp\u202e",
                talking_points=("They said \x1b[31mHELLO\x07\x00 \u202eevil",),
                evidence=(),
            ),
        ),
    )
    console, buf = _console()
    print_support(console, answer)
    shown = buf.getvalue()
    assert not any(c in shown for c in "\x1b\x07\x00\u202e")
    assert "\\x1b[31mHELLO\\x07\\x00 \\u202eevil" in shown
    assert "[bold red]Lamp\\u202e" in shown, "markup in data is printed, not obeyed"


def test_an_email_preview_prints_escaped() -> None:
    from tailor.core.models import Email

    email = Email(
        customer_id="100",
        action="campaign",
        subject="Hi \x1b]0;pwned\x07",
        preheader="\u202e",
        body_text="body \x1b[2J",
        body_html="",
        products=(),
        writer="template",
    )
    console, buf = _console()
    print_outcome(console, outcome(email=email))
    assert "\x1b" not in buf.getvalue() and "\\x1b]0;pwned\\x07" in buf.getvalue()


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tailor.app.cli", *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_the_cli_escapes_stored_control_characters(tmp_path: Path) -> None:
    seed_store(tmp_path, n_customers=2)
    # Written as an older store holds it, past the input rule.
    db = sqlite3.connect(tmp_path / "tailor.db")
    doc = json.loads(db.execute("SELECT doc FROM customers WHERE id='100'").fetchone()[0])
    doc["first_name"] = "Ann\x1b[31m\u202e[bold]"
    db.execute("UPDATE customers SET doc=? WHERE id='100'", (json.dumps(doc),))
    db.commit()
    db.close()
    listed = _cli("customers", data_dir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\u202e" not in listed.stdout
    assert "Ann\\x1b[31m\\u202e[bold]" in listed.stdout
    dumped = _cli("customers", "--json", data_dir=tmp_path)
    assert "\u202e" not in dumped.stdout and "\x1b" not in dumped.stdout
    assert json.loads(dumped.stdout)[0]["first_name"] == "Ann\x1b[31m\u202e[bold]", "JSON keeps the value"
    unknown = _cli("why", "no\x1b[31m", "I1", data_dir=tmp_path)
    assert unknown.returncode == 1 and "\x1b" not in unknown.stderr and "no\\x1b[31m" in unknown.stderr
