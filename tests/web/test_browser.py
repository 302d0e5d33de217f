"""The console in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against a real ``listferry web`` process.

The screenshots in docs/console.md are taken here: ``LISTFERRY_SCREENSHOTS=1`` writes
them into docs/images/ (otherwise into the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ADMIN, VIEWER, Console

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        message = "no Chromium: apt-get install chromium"
        if os.environ.get("LISTFERRY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LISTFERRY_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("LISTFERRY_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(exist_ok=True)
        return DOCS_IMAGES
    return tmp_path


def log_in(browser, console: Console, who: tuple[str, str], path: str = "/"):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(console.url + path)
    assert page.url.startswith(console.url + "/login")
    page.fill("input[name=name]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def runs_of(console: Console, tenant: str) -> list[dict]:
    return json.loads(console.ws.cli("runs", tenant, "--json").stdout)


def test_an_admin_finds_the_voided_tenant_forces_its_run_and_sees_it_applied(
    browser, console: Console, shots: Path
) -> None:
    page = log_in(browser, console, ADMIN)
    assert page.url == console.url + "/"
    assert page.locator("tr[data-tenant=bravo]").get_attribute("data-state") == "voided"
    page.screenshot(path=str(shots / "console-overview.png"), full_page=True)

    page.select_option("select[name=state]", "voided")
    page.click("form.filter button")
    rows = page.locator("tbody tr[data-tenant]")
    assert [rows.nth(i).get_attribute("data-tenant") for i in range(rows.count())] == [
        "bravo",
        "delta",
    ]
    rows.first.locator("a", has_text="run 2").click()
    assert page.url == console.url + "/tenants/bravo/runs/2"
    assert page.locator("h1 .state").inner_text() == "voided"
    assert "would remove" in page.locator("p.why").inner_text()
    page.screenshot(path=str(shots / "console-run-voided.png"), full_page=True)

    assert page.locator("a.button:has-text('Replay')").count() == 0  # held, not archived
    page.click("a.button:has-text('Apply past the guards')")
    assert page.locator("h1").inner_text() == "Apply bravo's held list past the guards?"
    page.screenshot(path=str(shots / "console-confirm.png"), full_page=True)
    page.click("button.danger")
    page.wait_for_load_state()
    assert page.url == console.url + "/tenants/bravo/runs/3"
    assert page.locator("h1 .state").inner_text() == "applied"
    assert page.locator("[data-count=removed]").inner_text() == "8"
    page.screenshot(path=str(shots / "console-run-applied.png"), full_page=True)

    newest = runs_of(console, "bravo")[0]
    assert (newest["run_id"], newest["status"], newest["removed"]) == (3, "applied", 8)
    page.goto(console.url + "/")
    assert page.locator("tr[data-tenant=bravo]").get_attribute("data-state") == "ok"
    page.goto(console.url + "/audit")
    assert page.locator("table.audit tbody tr").first.locator("td").nth(3).inner_text() == (
        "forced"
    )
    page.goto(console.url + "/tenants/bravo")
    page.screenshot(path=str(shots / "console-tenant.png"), full_page=True)
    page.context.close()


def test_an_admin_fixes_a_setting_replays_the_voided_run_and_sees_it_applied(
    browser, console: Console
) -> None:
    page = log_in(browser, console, ADMIN, "/tenants/delta")
    page.click("tr[data-run='1'] a")
    assert page.locator("h1 .state").inner_text() == "voided"
    assert "invalid" in page.locator("p.why").inner_text()
    page.goto(console.url + "/tenants/delta/settings")
    page.fill("input[name=max_invalid_share]", "0.1")
    page.click("form.settings button[type=submit]")
    page.wait_for_load_state()
    assert "Saved: 1 setting(s) changed." in page.locator("p.saved").inner_text()
    page.goto(console.url + "/tenants/delta/runs/1")
    page.click("a.button:has-text('Replay…')")
    assert page.locator("h1").inner_text() == "Replay run 1 of delta?"
    page.click("button.danger")
    page.wait_for_load_state()
    assert page.url == console.url + "/tenants/delta/runs/2"
    assert page.locator("h1 .state").inner_text() == "applied"
    assert page.locator("[data-count=added]").inner_text() == "20"
    assert runs_of(console, "delta")[0]["replay_of"] == 1
    page.context.close()


def test_a_viewer_sees_no_action_and_is_refused_the_replay(browser, console: Console) -> None:
    before = runs_of(console, "acme")
    page = log_in(browser, console, VIEWER, "/tenants/acme/runs/1")
    assert page.url == console.url + "/tenants/acme/runs/1"
    assert page.locator("a.button").count() == 0
    answer = page.goto(console.url + "/tenants/acme/runs/1/replay")
    assert answer is not None and answer.status == 403
    assert "vic is a viewer: this needs an admin" in page.locator("p.problem").inner_text()
    assert runs_of(console, "acme") == before
    page.context.close()


def test_a_form_without_its_csrf_token_is_refused(browser, console: Console) -> None:
    before = runs_of(console, "acme")
    page = log_in(browser, console, ADMIN, "/tenants/acme/runs/1/replay")
    page.evaluate("document.querySelector('main form input[name=csrf]').remove()")
    page.click("button.danger")
    page.wait_for_load_state()
    assert "CSRF token is missing or wrong" in page.locator("p.problem").inner_text()
    assert runs_of(console, "acme") == before
    page.context.close()
