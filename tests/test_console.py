"""The console in a real browser: Debian's chromium, driven by Selenium, against a real ``tailor serve`` (the
real facade: store, Qdrant, ranker, agent) on 127.0.0.1, once per retailer configuration.

Each flow of the console is walked as its user walks it: the support agent logs in, looks a customer up,
opens an explanation and asks a question; the marketer makes a campaign that waits for approval, reads its
preview, sees that nothing was sent, approves it and watches it finish. The customer opens a signed
why-link; an altered or expired one is refused. A support key cannot open campaigns, a crm key cannot read a
customer, a key cannot see another's campaign, and a form without its CSRF token does nothing. Every page is
checked at 1280 and 390 pixels wide (nothing wider than the window, every field labelled) and saved as a
screenshot under ``build/console/``.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tailor.app.http import create_key
from tailor.app.http.tokens import sign
from tailor.app.ops import Ops
from tailor.app.service import Tailor
from tailor.core.models import Event, EventKind
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.retailers import Retailer
from tests.server import ServerProcess, seed_store
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

NOW = "2011-12-10T10:00:00+00:00"
REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "build" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "the console tests need Debian's chromium and chromium-driver: `make test` installs them "
            "(apt-get install chromium chromium-driver)"
        )
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, retailer: Retailer) -> Iterator[dict[str, Any]]:
    """A real server over a small real store sold by ``retailer``, indexed; keys of both roles."""
    data_dir = tmp_path_factory.mktemp(f"console-{retailer.key}") / "data"
    ids = seed_store(data_dir, n_customers=12, domain=retailer.domain, currency=retailer.brand.currency)
    store = Store(data_dir / "tailor.db")
    try:
        # A fuller timeline for the first customer: a view, a cart, a support ticket.
        at = datetime(2011, 12, 1, 9, tzinfo=UTC)
        store.add_events(
            [
                Event(customer_id=ids[0], kind=EventKind.VIEW, item_id="I4", timestamp=at),
                Event(customer_id=ids[0], kind=EventKind.ADD_TO_CART, item_id="I4", quantity=1, timestamp=at),
                Event(
                    customer_id=ids[0],
                    kind=EventKind.SUPPORT_TICKET,
                    text="My lantern arrived with a cracked glass.",
                    timestamp=at.replace(hour=11),
                ),
            ]
        )
    finally:
        store.close()
    with Tailor.open(Settings(data_dir=data_dir, now=NOW, brand_config=retailer.path)) as tailor:
        tailor.index()
    settings = Settings(data_dir=data_dir)
    keys = {
        "support": create_key(settings, "support"),
        "crm": create_key(settings, "crm"),
        "crm_other": create_key(settings, "crm"),
    }
    env = {"TAILOR_NOW": NOW, "TAILOR_BRAND_CONFIG": str(retailer.path)}
    proc = ServerProcess(data_dir, env, facade="real", start_timeout=180)
    with proc, httpx.Client(base_url=proc.base_url, timeout=120) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 180)
        yield {"url": proc.base_url, "client": client, "keys": keys, "customers": ids, "data_dir": data_dir,
               "retailer": retailer}  # fmt: skip


def _shot(driver: WebDriver, name: str, retailer: Retailer) -> None:
    """Check the page at each width (nothing wider than the window, every field labelled) and save it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        driver.set_window_size(width, 900)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
        )
        assert overflow <= 1, f"{name} is {overflow}px wider than a {width}px window"
        unlabelled = driver.execute_script(
            """return Array.from(document.querySelectorAll('input:not([type=hidden]), textarea, select'))
                 .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                 .map(e => e.name || e.id);"""
        )
        assert unlabelled == [], f"{name}: fields without a label: {unlabelled}"
        # The whole page in one picture: the window as tall as the page (within reason).
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(width, max(900, min(int(height) + 100, 4000)))
        driver.save_screenshot(str(SHOTS / f"{retailer.key}-{name}-{width}.png"))
    driver.set_window_size(1280, 900)


def _login(driver: WebDriver, base: str, key: str, then: str = "/console") -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}{then}")
    assert "/console/login" in driver.current_url, "a page without a session goes to the login"
    field = driver.find_element(By.ID, "key")
    field.send_keys(key)
    field.submit()
    wait_until(lambda: "/console/login" not in driver.current_url, 30)
    assert driver.current_url.endswith(then)


def _text(driver: WebDriver, element_id: str) -> str:
    """The text of the element with ``element_id``, or "" while the page has none (or is being replaced
    under the reader, as a page that reloads itself is)."""
    try:
        return str(driver.find_element(By.ID, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    except WebDriverException as exc:
        # chromedriver's own word for a stale element, when the node goes between finding it and reading it.
        if "does not belong to the document" in str(exc.msg):
            return ""
        raise


def _session_cookies(driver: WebDriver) -> dict[str, str]:
    return {c["name"]: c["value"] for c in driver.get_cookies()}


def test_a_support_agent_looks_up_a_customer_opens_an_explanation_and_asks(
    browser: WebDriver, console: dict[str, Any]
) -> None:
    base, cid, retailer = console["url"], console["customers"][0], console["retailer"]
    _login(browser, base, console["keys"]["support"])
    _shot(browser, "home", retailer)
    browser.find_element(By.ID, "customer_id").send_keys(cid)
    browser.find_element(By.ID, "customer_id").submit()
    wait_until(lambda: f"/console/customers/{cid}" in browser.current_url, 30)
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Ann0" in page and "Consent" in page and "Marketing e-mail" in page
    timeline = browser.find_elements(By.CSS_SELECTOR, "#timeline-h ~ div tbody tr")
    assert len(timeline) == 5, "two purchases, a view, a cart and a ticket"
    assert "support ticket" in browser.find_element(By.CSS_SELECTOR, "#timeline-h ~ div").text
    recs = browser.find_elements(By.LINK_TEXT, "Why?")
    assert recs, "recommendations, each with its explanation"
    _shot(browser, "customer", retailer)

    recs[0].click()
    wait_until(lambda: "why=" in browser.current_url, 30)
    why = browser.find_element(By.ID, "why")
    assert why.text.startswith("Why "), why.text
    sentences = why.find_elements(By.TAG_NAME, "p")
    assert len(sentences) >= 2
    cited = browser.find_elements(By.CSS_SELECTOR, "tr.cited")
    cites = {
        a.get_attribute("href").rsplit("#ev-", 1)[1]
        for a in why.find_elements(By.CSS_SELECTOR, "a[href*='#ev-']")
    }
    # Every event the explanation cites is a highlighted row of this customer's timeline, and only those.
    assert {row.get_attribute("id").removeprefix("ev-") for row in cited} == cites
    link = browser.find_element(By.ID, "why-link").get_attribute("value")
    assert re.search(r"/why/[\w-]+\.[\w-]+$", link), link
    console["why_link"] = link
    _shot(browser, "explanation", retailer)

    browser.find_element(By.ID, "question").send_keys("Where is my last order? It has not arrived.")
    browser.find_element(By.ID, "question").submit()
    wait_until(lambda: browser.find_elements(By.ID, "answer"), 60)
    answer = browser.find_element(By.ID, "answer").text
    assert "Where is my last order?" in answer
    assert "Taken as late delivery" in answer, answer
    assert "Chase order O0-1" in answer, "the suggestion names her latest order"
    assert "Tools used" in answer and "order" in answer
    assert browser.find_elements(By.CSS_SELECTOR, "#answer .email"), "at least one suggestion"
    _shot(browser, "support-answer", retailer)


def test_a_campaign_waits_for_approval_shows_its_preview_and_runs_once_approved(
    browser: WebDriver, console: dict[str, Any]
) -> None:
    base, client, retailer = console["url"], console["client"], console["retailer"]
    _login(browser, base, console["keys"]["crm"], "/console/campaigns")
    wanted = console["customers"][:6]
    browser.find_element(By.ID, "customer_ids").send_keys(", ".join(wanted))
    _shot(browser, "campaigns", retailer)
    browser.find_element(By.CSS_SELECTOR, "form[action='/console/campaigns'] button").click()
    wait_until(lambda: re.search(r"/console/campaigns/job_\w+$", browser.current_url) is not None, 120)
    job_id = browser.current_url.rsplit("/", 1)[1]
    assert browser.find_element(By.ID, "status").text == "awaiting approval"
    emails = browser.find_elements(By.CSS_SELECTOR, "article.email")
    # Six named, one without marketing consent (the seed's second customer): five in the audience.
    assert len(emails) == 5
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "Preheader:" in text and "Writer: template" in text
    assert re.search(r"All \d+ rails passed", text), "each email's rail verdicts"
    assert retailer.brand.currency in browser.page_source or retailer.domain in browser.page_source
    _shot(browser, "campaign-preview", retailer)

    crm = {"Authorization": f"Bearer {console['keys']['crm']}"}
    job = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
    assert (job["status"], job["pending"], job["done"]) == ("awaiting_approval", 5, 0)
    time.sleep(1.5)  # had a worker taken an item, it would have by now
    assert client.get(f"/v1/jobs/{job_id}", headers=crm).json()["done"] == 0
    store = Store(console["data_dir"] / "tailor.db")
    try:
        assert all(store.contacts(c) == [] for c in wanted), "nothing is sent before approval"
    finally:
        store.close()

    browser.find_element(By.ID, "approve").click()
    # The live page polls, then reloads itself once the job ends: wait for the reloaded page (only the
    # server renders the uplift panel), reading through the reload rather than racing it.
    wait_until(lambda: _text(browser, "status") == "done" and _text(browser, "uplift") != "", 180)
    done = browser.find_element(By.ID, "counts").text
    assert done.startswith("5 of 5 finished: 5 sent"), done
    assert "Approved" in browser.find_element(By.TAG_NAME, "main").text
    # What it did: this server holds no one out, and the page says that nothing can be measured then.
    assert "TAILOR_HOLDOUT_SHARE is 0" in browser.find_element(By.ID, "uplift").text
    # Engagement needs no holdout: none opened or clicked yet, of the five emails made.
    engagement = browser.find_element(By.ID, "engagement").text
    assert engagement.startswith("Of 5 emails made: 0 opened (0.0%), 0 clicked"), engagement
    # Credit needs none either: nobody has bought since, so none of the five emails is credited yet.
    credit = browser.find_element(By.ID, "credit").text
    assert credit.startswith("Credited to its 5 emails (last send): 0 bought, 0.00 in revenue"), credit
    assert console["keys"]["crm"].split("_")[1] in browser.find_element(By.TAG_NAME, "main").text
    _shot(browser, "campaign-done", retailer)
    store = Store(console["data_dir"] / "tailor.db")
    try:
        assert sum(len(store.contacts(c)) for c in wanted) == 5
    finally:
        store.close()
    trail = Ops(console["data_dir"] / "ops.db")
    try:
        approvals = trail.job_decisions(job_id)
    finally:
        trail.close()
    assert [(a["action"], a["key_id"]) for a in approvals] == [
        ("campaign.approve", console["keys"]["crm"].split("_")[1])
    ]

    # Another crm key does not see this campaign, in the page or over the API.
    other = console["keys"]["crm_other"]
    assert client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    _login(browser, base, other, "/console/campaigns")
    assert job_id not in browser.page_source
    browser.get(f"{base}/console/campaigns/{job_id}")
    assert browser.title.startswith("Not done")
    assert "Approve" not in browser.page_source and "Preheader" not in browser.page_source


def test_the_model_page_says_what_was_fitted_and_what_was_done(
    browser: WebDriver, console: dict[str, Any]
) -> None:
    _login(browser, console["url"], console["keys"]["crm"], "/console/model")
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "Fitted" in text and "customers" in text
    ops = Ops(console["data_dir"] / "ops.db")
    try:
        made = ops.key_totals(console["keys"]["crm"].split("_")[1])["items"].get("done", 0)
    finally:
        ops.close()
    assert f"from this key: {made} email{'' if made == 1 else 's'} made" in text, text
    _shot(browser, "model", console["retailer"])


def test_a_signed_why_link_opens_one_explanation_and_an_altered_or_expired_one_does_not(
    browser: WebDriver, console: dict[str, Any]
) -> None:
    base, cid, retailer = console["url"], console["customers"][0], console["retailer"]
    link = console.get("why_link")
    if link is None:  # this test alone: make a link as the console does
        ops = Ops(console["data_dir"] / "ops.db")
        try:
            link = f"{base}/why/" + sign(ops.secret("why-link"), {"c": cid, "i": "I1"}, 3600)
        finally:
            ops.close()
    browser.delete_all_cookies()
    browser.get(link)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Why we suggested")
    reasons = browser.find_elements(By.CSS_SELECTOR, "main li")
    assert reasons, "the explanation's sentences"
    # Nothing of another customer's: no other name, and no other customer's id.
    for n, other in enumerate(console["customers"][1:], start=1):
        assert f"Ann{n}" not in browser.page_source and f">{other}<" not in browser.page_source
    assert browser.find_elements(By.TAG_NAME, "nav") == [], "no console around it"
    _shot(browser, "why-link", retailer)

    data, mac = link.rsplit("/", 1)[1].split(".")
    altered = data[:-2] + ("A" if data[-2] != "A" else "B") + data[-1] + "." + mac
    browser.get(f"{base}/why/{altered}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "This link does not open"
    assert client_status(console, f"/why/{altered}") == 404
    ops = Ops(console["data_dir"] / "ops.db")
    try:
        expired = sign(ops.secret("why-link"), {"c": cid, "i": "I1"}, -60)
        other_purpose = sign(ops.secret("console-session"), {"c": cid, "i": "I1"}, 3600)
    finally:
        ops.close()
    browser.get(f"{base}/why/{expired}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "This link does not open"
    assert client_status(console, f"/why/{expired}") == 404
    assert client_status(console, f"/why/{other_purpose}") == 404
    assert client_status(console, "/why/%C3%A9.%C3%A9") == 404


def client_status(console: dict[str, Any], path: str) -> int:
    return int(console["client"].get(path).status_code)


def test_roles_hold_in_the_console(browser: WebDriver, console: dict[str, Any]) -> None:
    base = console["url"]
    _login(browser, base, console["keys"]["support"])
    assert browser.find_elements(By.LINK_TEXT, "Campaigns") == [], "a support key is not offered campaigns"
    browser.get(f"{base}/console/campaigns")
    assert "A support key may not open campaigns" in browser.find_element(By.TAG_NAME, "main").text
    cookies = _session_cookies(browser)
    refused = console["client"].get("/console/campaigns", cookies=cookies)
    assert refused.status_code == 403
    assert console["client"].get("/console/model", cookies=cookies).status_code == 403

    _login(browser, base, console["keys"]["crm"])
    browser.get(f"{base}/console/customers/{console['customers'][0]}")
    assert "A crm key may not open customers" in browser.find_element(By.TAG_NAME, "main").text
    assert "Ann0" not in browser.page_source

    # No session, or one that was altered: the login page, never the data.
    bare = console["client"].get(f"/console/customers/{console['customers'][0]}", follow_redirects=False)
    assert bare.status_code == 303 and bare.headers["location"].startswith("/console/login")
    forged = {"tailor_session": cookies["tailor_session"][:-3] + "AAA"}
    assert console["client"].get("/console", cookies=forged, follow_redirects=False).status_code == 303
    # A key revoked ends its sessions at their next page.
    settings = Settings(data_dir=console["data_dir"])
    doomed = create_key(settings, "support")
    with httpx.Client(base_url=base, timeout=60) as agent:
        form = agent.get("/console/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        logged = agent.post("/console/login", data={"csrf": csrf.group(1), "key": doomed, "next": "/console"})
        assert logged.status_code == 303 and agent.get("/console/customers").status_code == 200
        ops = Ops(settings.ops_database)
        try:
            ops.revoke_key(doomed.split("_")[1])
        finally:
            ops.close()
        gone = agent.get("/console/customers", follow_redirects=False)
        assert gone.status_code == 303 and gone.headers["location"].startswith("/console/login")
    # The login by keyboard alone: the skip link first, then the key field, then Enter.
    browser.delete_all_cookies()
    browser.get(f"{base}/console/login")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    for _ in range(5):
        if browser.switch_to.active_element.get_attribute("id") == "key":
            break
        browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "key", "the key field is reached by Tab"
    browser.switch_to.active_element.send_keys(console["keys"]["support"], Keys.ENTER)
    wait_until(lambda: browser.current_url.endswith("/console"), 30)
    # A wrong key at the login is refused, and says so.
    browser.delete_all_cookies()
    browser.get(f"{base}/console/login")
    browser.find_element(By.ID, "key").send_keys("tk_nothere_nothing")
    browser.find_element(By.ID, "key").submit()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "[role=alert]"), 30)
    assert "not valid" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    _shot(browser, "login-refused", console["retailer"])


def test_a_form_without_its_csrf_token_is_refused_and_does_nothing(
    browser: WebDriver, console: dict[str, Any]
) -> None:
    base, client = console["url"], console["client"]
    _login(browser, base, console["keys"]["crm"], "/console/campaigns")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#list-h ~ div tbody a"))
    # In the browser: the form with its token taken out.
    browser.execute_script(
        "document.querySelector(\"form[action='/console/campaigns'] input[name=csrf]\").remove();"
    )
    browser.find_element(By.ID, "customer_ids").send_keys(console["customers"][0])
    browser.find_element(By.CSS_SELECTOR, "form[action='/console/campaigns'] button").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "[role=alert]"), 30)
    assert "CSRF" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    # Over HTTP, with the session cookie: no token, and another session's token.
    cookies = _session_cookies(browser)
    form = {"customer_ids": console["customers"][0], "kind": "campaign", "approval": "required"}
    assert client.post("/console/campaigns", data=form, cookies=cookies).status_code == 403
    assert (
        client.post("/console/campaigns", data={**form, "csrf": "x" * 43}, cookies=cookies).status_code == 403
    )
    browser.get(f"{base}/console/campaigns")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#list-h ~ div tbody a")) == before, (
        "no campaign was made"
    )
    # The login form too: a post without the login page's cookie and token does not log in.
    key = console["keys"]["crm"]
    login = httpx.post(f"{base}/console/login", data={"key": key}, follow_redirects=False)
    assert login.status_code == 403 and "tailor_session" not in login.cookies
