"""A sent email's id in its links (``tailor.core.sends``): on the real service's own email, and on the cases
a naive replace would get wrong."""

from __future__ import annotations

import html
from pathlib import Path

from tailor.app.service import Tailor
from tailor.core.sends import SEND_PARAM, job_send_id, send_of_link, tag_email, tag_link
from tailor.core.settings import Settings
from tests.server import seed_store

NOW = "2011-12-10T10:00:00+00:00"


def test_a_link_carries_the_send_once_whatever_it_had() -> None:
    send = job_send_id("j1", "c 1")
    assert send_of_link(tag_link("https://shop.test/p/A", send)) == send == "job:j1:c 1"
    kept = tag_link(f"https://shop.test/p/A?utm_source=crm&{SEND_PARAM}=old#top", send)
    assert kept.startswith("https://shop.test/p/A?utm_source=crm&") and kept.endswith("#top")
    assert send_of_link(kept) == send and kept.count(SEND_PARAM) == 1
    assert send_of_link("https://shop.test/p/A") is None


def test_only_whole_links_are_tagged_in_the_bodies() -> None:
    a, ab = "https://shop.test/p/A", "https://shop.test/p/AB"
    email = {
        "subject": "s",
        "products": [{"item_id": "A", "url": a}, {"item_id": "AB", "url": ab}],
        "body_text": f"See {a}. And {ab} too, or {a}/reviews (not a product link).",
        "body_html": f'<a href="{a}">A</a> <a href="{ab}">AB</a>',
    }
    out = tag_email(email, "job:j:c")
    ta, tab = tag_link(a, "job:j:c"), tag_link(ab, "job:j:c")
    assert [p["url"] for p in out["products"]] == [ta, tab]
    assert out["body_text"] == f"See {ta}. And {tab} too, or {a}/reviews (not a product link)."
    assert out["body_html"] == f'<a href="{html.escape(ta)}">A</a> <a href="{html.escape(tab)}">AB</a>'
    assert email["products"][0]["url"] == a, "the email given is not changed"


def test_the_real_services_email_has_every_product_link_tagged_in_both_bodies(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ids = seed_store(data_dir, n_customers=12)
    with Tailor.open(Settings(data_dir=data_dir, now=NOW)) as tailor:
        tailor.index()
        made = [o.email for o in (tailor.email(c) for c in ids) if o.email is not None]
    assert made, "the seeded store gets emails"
    for email in made:
        body = email.model_dump(mode="json")
        out = tag_email(body, "job:j:" + email.customer_id)
        for before, after in zip(body["products"], out["products"], strict=True):
            assert send_of_link(after["url"]) == "job:j:" + email.customer_id
            # Wherever the email showed the link, it shows the tagged one, as many times.
            n_text, n_html = body["body_text"].count(before["url"]), body["body_html"].count(before["url"])
            assert n_text + n_html >= 1
            assert out["body_text"].count(after["url"]) == n_text
            assert out["body_html"].count(html.escape(after["url"])) == n_html
        assert out["subject"] == body["subject"] and out["preheader"] == body["preheader"]


def test_segment_email_events_name_their_send_from_the_property_or_the_clicked_link() -> None:
    import pytest

    from tailor.core.errors import RecordError
    from tailor.data.segment import from_segment

    link = tag_link("https://shop.test/p/A", "job:j9:c1")

    def call(event: str, **properties: object) -> dict[str, object]:
        return {"type": "track", "event": event, "userId": "c1", "timestamp": NOW, "properties": properties}

    batch = {
        "batch": [
            call("Email Opened", send_id="job:j9:c1"),
            call("Email Link Clicked", link_url=link, product_id="A"),
            call("Email Link Clicked", link_url="https://shop.test/p/A", product_id="A"),
            call("Email Opened"),
        ]
    }
    events = from_segment(batch, {}).events
    assert [e.send_id for e in events] == ["job:j9:c1", "job:j9:c1", None, None]
    with pytest.raises(RecordError, match="must be a string") as caught:
        from_segment(call("Email Opened", send_id=["job:j9:c1"]), {})
    assert caught.value.field == "properties.send_id"
