"""A sent email's id in its links (``tailor.core.sends``): on the real service's own email, and on the cases
a naive replace would get wrong."""

from __future__ import annotations

from pathlib import Path

from markupsafe import escape

from tailor.app.service import Tailor
from tailor.core.sends import SEND_PARAM, job_send_id, send_of_link, send_token, tag_email, tag_link
from tailor.core.settings import Settings
from tests.retailers import Retailer
from tests.server import seed_store

NOW = "2011-12-10T10:00:00+00:00"


def test_a_link_carries_the_send_once_whatever_it_had() -> None:
    token = send_token(b"secret", "j1", "c1")
    assert token == send_token(b"secret", "j1", "c1") != send_token(b"other", "j1", "c1")
    assert token.startswith("s_") and "c1" not in token and "j1" not in token
    assert job_send_id("j1", "c1") == "job:j1:c1"  # what the contact is recorded under, never in a link
    assert send_of_link(tag_link("https://shop.test/p/A", token)) == token
    # The rest of the query as it was written (a signed link stays signed), the fragment kept.
    kept = tag_link(f"https://shop.test/p/A?q=a%20b&path=x/y&flag&{SEND_PARAM}=old&sig=Z%2F#top", token)
    assert kept == f"https://shop.test/p/A?q=a%20b&path=x/y&flag&sig=Z%2F&{SEND_PARAM}={token}#top"
    assert send_of_link("https://shop.test/p/A") is None


def test_only_whole_links_are_tagged_in_the_bodies() -> None:
    a, ab, q = "https://shop.test/p/A", "https://shop.test/p/AB", "https://shop.test/p/Q?x='1'"
    email = {
        "subject": "s",
        "products": [{"item_id": "A", "url": a}, {"item_id": "AB", "url": ab}, {"item_id": "Q", "url": q}],
        "body_text": f"See {a}. And {ab} too, not {a}/reviews, {a}?unsub=1, {a}.html or {a}#x; and {q}",
        "body_html": f'<a href="{escape(a)}">A</a> <a href="{escape(ab)}">AB</a> <a href="{escape(q)}">Q</a>',
    }
    out = tag_email(email, "s_t")
    ta, tab, tq = tag_link(a, "s_t"), tag_link(ab, "s_t"), tag_link(q, "s_t")
    assert [p["url"] for p in out["products"]] == [ta, tab, tq]
    assert (
        out["body_text"]
        == f"See {ta}. And {tab} too, not {a}/reviews, {a}?unsub=1, {a}.html or {a}#x; and {tq}"
    )
    # Escaped as Jinja escapes a template's values (a quote is &#39;, not &#x27;).
    assert out["body_html"] == (
        f'<a href="{escape(ta)}">A</a> <a href="{escape(tab)}">AB</a> <a href="{escape(tq)}">Q</a>'
    )
    assert "&#39;" in out["body_html"]
    assert email["products"][0]["url"] == a, "the email given is not changed"


def test_the_real_services_email_has_every_product_link_tagged_in_both_bodies(
    tmp_path: Path, retailer: Retailer
) -> None:
    """Under each retailer's configuration: its own domain, its own currency, its own email templates."""
    data_dir = tmp_path / "data"
    ids = seed_store(data_dir, n_customers=12, domain=retailer.domain, currency=retailer.brand.currency)
    settings = Settings(data_dir=data_dir, now=NOW, brand_config=retailer.path)
    with Tailor.open(settings) as tailor:
        tailor.index()
        made = [o.email for o in (tailor.email(c) for c in ids) if o.email is not None]
    assert made, "the seeded store gets emails"
    for email in made:
        body = email.model_dump(mode="json")
        token = send_token(b"secret", "j", email.customer_id)
        out = tag_email(body, token)
        for before, after in zip(body["products"], out["products"], strict=True):
            assert send_of_link(after["url"]) == token and after["url"].startswith(
                f"https://{retailer.domain}/"
            )
            # Wherever the email showed the link, it shows the tagged one, as many times.
            n_text, n_html = body["body_text"].count(before["url"]), body["body_html"].count(before["url"])
            assert n_text + n_html >= 1
            assert out["body_text"].count(after["url"]) == n_text
            assert out["body_html"].count(str(escape(after["url"]))) == n_html
        assert out["subject"] == body["subject"] and out["preheader"] == body["preheader"]


def test_segment_email_events_name_their_send_from_the_property_or_the_clicked_link() -> None:
    import pytest

    from tailor.core.errors import RecordError
    from tailor.data.segment import from_segment

    link = tag_link("https://shop.test/p/A", "s_j9")

    def call(event: str, **properties: object) -> dict[str, object]:
        return {"type": "track", "event": event, "userId": "c1", "timestamp": NOW, "properties": properties}

    batch = {
        "batch": [
            call("Email Opened", send_id="s_j9"),
            call("Email Link Clicked", link_url=link, product_id="A"),
            call("Email Link Clicked", link_url="https://shop.test/p/A", product_id="A"),
            call("Email Opened"),
        ]
    }
    events = from_segment(batch, {}).events
    assert [e.send_id for e in events] == ["s_j9", "s_j9", None, None]
    with pytest.raises(RecordError, match="must be a string") as caught:
        from_segment(call("Email Opened", send_id=["s_j9"]), {})
    assert caught.value.field == "properties.send_id"
