"""The console over real HTTP: each guarantee tried and its refusal checked.

A real ``listferry web`` process on a loopback port; requests made with urllib, cookies
kept as a browser keeps them.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from listferry.testing import Sandbox

from .conftest import ADMIN, VIEWER, Console, hidden, make_site, start_console, stop_console


def runs_of(ws: Sandbox, tenant: str) -> list[dict]:
    result = ws.cli("runs", tenant, "--json", "--limit", "100")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pages_need_a_login_and_the_api_an_operator(console: Console) -> None:
    client = console.client()
    page = client.get("/tenants/acme?page=1")
    assert page.status == 303
    assert page.headers["Location"] == "/login?next=/tenants/acme%3Fpage%3D1"
    for path in ("/api/status", "/api/tenants", "/api/tenants/acme/runs", "/api/me"):
        answer = client.get(path)
        assert answer.status == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json() == {"error": "log in, or send Authorization: Bearer TOKEN"}
    assert client.post("/api/tenants/bravo/runs/2/replay").status == 401


def test_a_login_gives_a_strict_httponly_cookie_and_wrong_ones_get_the_same_refusal(
    console: Console,
) -> None:
    client = console.client()
    answer = client.login(*ADMIN, next="/digest")
    assert answer.status == 303 and answer.headers["Location"] == "/digest"
    cookie = next(c for c in answer.headers.get_all("Set-Cookie") if "listferry_session" in c)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert client.get("/digest").status == 200

    wrong = console.client().login(ADMIN[0], "not the password")
    nobody = console.client().login("nobody", "not the password")
    assert wrong.status == nobody.status == 401
    assert "wrong name or password" in wrong.text and "wrong name or password" in nobody.text
    assert "listferry_session" not in str(wrong.headers)


def test_a_login_form_without_its_token_or_pointing_off_site_is_refused(console: Console) -> None:
    client = console.client()
    client.get("/login")
    refused = client.post("/login", {"name": ADMIN[0], "password": ADMIN[1], "token": "x"})
    assert refused.status == 403 and "listferry_session" not in str(refused.headers)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        answer = console.client().login(*ADMIN, next=target)
        assert answer.status == 303 and answer.headers["Location"] == "/"


def test_the_overview_shows_each_tenant_in_its_state_and_filters(console: Console) -> None:
    client = console.logged_in(VIEWER)
    page = client.get("/").text
    states = dict(re.findall(r'data-tenant="([^"]+)" data-state="([^"]+)"', page))
    assert states == {"acme": "ok", "bravo": "voided", "carol": "new", "delta": "voided"}
    assert "would remove" in page  # bravo's reason, in plain words
    voided = client.get("/?state=voided").text
    assert re.findall(r'data-tenant="([^"]+)"', voided) == ["bravo", "delta"]
    assert re.findall(r'data-tenant="([^"]+)"', client.get("/?q=car").text) == ["carol"]
    assert "No tenant matches" in client.get("/?q=zzz").text


def test_the_api_answers_with_the_clis_shapes(console: Console) -> None:
    client = console.logged_in(VIEWER)
    ws = console.ws
    assert client.get("/api/tenants/bravo/runs").json() == runs_of(ws, "bravo")
    second = client.get("/api/tenants/bravo/runs?limit=1&offset=1").json()
    assert second == runs_of(ws, "bravo")[1:2]
    shown = json.loads(ws.cli("runs", "bravo", "2", "--json").stdout)
    assert client.get("/api/tenants/bravo/runs/2").json() == shown
    listed = json.loads(ws.cli("tenant", "list", "--json").stdout)
    assert client.get("/api/tenants").json() == listed
    status = {item["tenant"]: item for item in json.loads(ws.cli("status", "--json").stdout)}
    for item in client.get("/api/status").json():
        expected = {k: v for k, v in status[item["tenant"]].items() if k != "serve_config"}
        assert {k: v for k, v in item.items() if k not in ("state", "sizes")} == expected
    assert client.get("/api/me").json()["role"] == "viewer"
    missing = client.get("/api/tenants/nobody/runs")
    assert missing.status == 404 and "no tenant 'nobody'" in missing.json()["error"]
    assert client.get("/api/tenants/bravo/runs/99").json() == {"error": "bravo has no run 99"}
    too_few = client.get("/api/tenants/bravo/runs?limit=0")
    assert too_few.status == 422 and too_few.json()["error"].startswith("limit: ")
    bad_page = client.get("/tenants/bravo?page=abc")
    assert bad_page.status == 422 and 'class="problem"' in bad_page.text  # a page, not JSON
    document = client.get("/api/openapi.json").json()
    assert "/api/tenants/{name}/runs/{run_id}/replay" in document["paths"]


def test_a_viewer_is_refused_every_admin_action_and_nothing_happens(console: Console) -> None:
    client = console.logged_in(VIEWER)
    before = runs_of(console.ws, "bravo")
    csrf = client.csrf("/tenants/bravo/runs/2")
    assert "Replay" not in client.get("/tenants/bravo/runs/2").text
    for answer in (
        client.get("/tenants/bravo/runs/2/replay"),
        client.post("/tenants/bravo/runs/2/replay", {"csrf": csrf, "force": "yes"}),
        client.post("/api/tenants/bravo/runs/2/replay?force=true", X_CSRF_Token=csrf),
        client.get("/tenants/bravo/runs/1/archive"),
        client.get("/tenants/bravo/force"),
        client.post("/tenants/bravo/force", {"csrf": csrf}),
        client.post("/api/tenants/bravo/sync", X_CSRF_Token=csrf),
        client.get("/audit"),
        client.get("/api/audit"),
    ):
        assert answer.status == 403, answer.text
        assert "vic is a viewer: this needs an admin" in answer.text
    assert runs_of(console.ws, "bravo") == before


def test_a_state_change_without_the_sessions_csrf_token_is_refused(console: Console) -> None:
    client = console.logged_in(ADMIN)
    other = console.logged_in(ADMIN)
    before = runs_of(console.ws, "bravo")
    for answer in (
        client.post("/tenants/bravo/runs/2/replay", {"force": "yes"}),
        client.post("/tenants/bravo/runs/2/replay", {"csrf": "0" * 64, "force": "yes"}),
        client.post("/tenants/bravo/runs/2/replay", {"csrf": other.csrf(), "force": "yes"}),
        client.post("/api/tenants/bravo/runs/2/replay?force=true"),
        client.post("/tenants/bravo/force", {}),
        client.post("/api/tenants/bravo/sync"),
        client.post("/logout", {}),
    ):
        assert answer.status == 403, answer.text
        assert "CSRF token is missing or wrong" in answer.text
    assert runs_of(console.ws, "bravo") == before
    assert client.get("/").status == 200  # still logged in: the logout was refused too


def test_a_forged_or_stale_session_is_no_session(console: Console, tmp_path) -> None:
    client = console.logged_in(VIEWER)
    cookie = next(c for c in client.jar if c.name == "listferry_session")
    payload, signature = cookie.value.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims[0] = "ada"  # the admin's name, the viewer's signature
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    headers = {"Cookie": f"listferry_session={forged}.{signature}"}
    assert console.client().get("/api/me", **headers).status == 401

    ws = console.ws
    changed = ws.cli("operator", "password", VIEWER[0], "--password-stdin", input=VIEWER[1])
    assert changed.exit_code == 0, changed.output
    assert client.get("/").status == 303  # the session before the new password ended
    assert client.get("/api/me").status == 401


def test_api_tokens_act_for_their_operator_until_revoked(console: Console) -> None:
    ws = console.ws
    made = ws.cli("operator", "token", ADMIN[0], "--label", "nightly script")
    token = made.output.strip()
    assert made.exit_code == 0 and token.startswith("lft_")
    client = console.client()
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.get("/api/me").json()["name"] == ADMIN[0]
    replayed = client.post("/api/tenants/acme/runs/1/replay")  # no cookie, no CSRF needed
    assert replayed.status == 200, replayed.text
    run = replayed.json()
    assert (run["status"], run["replay_of"]) == ("applied", 1)
    assert runs_of(ws, "acme")[0] == run
    audit = client.get("/api/audit?limit=2").json()
    assert audit[0]["action"] == "replayed" and audit[0]["operator"] == ADMIN[0]
    assert audit[0]["target"] == "acme/1" and audit[0]["address"] == "127.0.0.1"
    assert audit[0]["detail"] == {"force": False, "run": run["run_id"], "status": "applied"}

    listed = json.loads(ws.cli("operator", "tokens", "--json").stdout)
    assert token not in json.dumps(listed) and listed[-1]["label"] == "nightly script"
    assert ws.cli("operator", "revoke", str(listed[-1]["id"])).exit_code == 0
    assert client.get("/api/me").status == 401
    client.headers["Authorization"] = "Bearer lft_" + "A" * 43
    assert client.get("/api/me").status == 401


def test_no_answer_holds_a_secret(console: Console) -> None:
    ws = console.ws
    rotated = ws.cli("tenant", "password", "acme", "--password-stdin", input="a long password")
    assert rotated.exit_code == 0, rotated.output
    secret = (ws.root / "state" / "web" / "secret").read_bytes()
    hashes = re.findall(r"scrypt\$[^\"']+", ws.config_path.read_text())
    assert hashes
    client = console.logged_in(ADMIN)
    answers = [
        client.get(path)
        for path in (
            "/",
            "/tenants/acme",
            "/tenants/acme/runs/1",
            "/tenants/bravo/runs/2",
            "/digest",
            "/audit",
            "/api/status",
            "/api/tenants",
            "/api/tenants/acme",
            "/api/audit",
            "/api/tenants/acme/runs",
            "/api/tenants/acme/runs/1",
            "/api/openapi.json",
            "/api/me",
        )
    ]
    for answer in answers:
        assert answer.status == 200
        assert "scrypt$" not in answer.text and "BEGIN" not in answer.text
        assert base64.b64encode(secret).decode() not in answer.text
        assert not any(h in answer.text for h in hashes)
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_an_admin_downloads_an_archived_file_and_it_is_in_the_audit_log(console: Console) -> None:
    client = console.logged_in(ADMIN)
    answer = client.get("/tenants/bravo/runs/1/archive")
    assert answer.status == 200
    assert answer.body.count(b"@example.org") == 10
    assert 'filename="subscriber_list.csv"' in answer.headers["Content-Disposition"]
    page = client.get("/audit").text
    assert "download" in page and "bravo/1" in page
    held = client.get("/tenants/bravo/runs/2/archive")  # voided and held in the home
    assert held.status == 404 and "no archived file here" in held.text


def test_a_body_too_large_or_not_a_form_is_refused_in_one_line(console: Console) -> None:
    client = console.client()
    client.get("/login")
    big = client.post("/login", {"name": "x" * 70_000})
    assert big.status == 413 and "at most 65536 bytes" in big.text
    request = urllib.request.Request(console.url + "/login", data=b"\xff\xfe=\xff", method="POST")
    request.add_header("Cookie", "listferry_login=abc")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert "not URL-encoded UTF-8" in refused.value.read().decode()


def test_failed_logins_from_an_address_are_throttled_before_any_check(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("throttled")
    console = start_console(make_site(root), root)
    try:
        for _ in range(5):
            assert console.client().login(ADMIN[0], "wrong password").status == 401
        refused = console.client().login(*ADMIN)  # the right password, too late
        assert refused.status == 429 and "too many failed logins" in refused.text
        assert int(refused.headers["Retry-After"]) > 800
        log = console.log.read_text()
        assert log.count("event=login operator=ada ip=127.0.0.1 result=refused") == 5
        assert "Traceback" not in log
    finally:
        stop_console(console)


def test_web_without_an_operator_says_how_to_add_one_and_bad_options_are_one_line(
    tmp_path,
) -> None:
    ws = Sandbox.from_starter(tmp_path)
    command = [sys.executable, "-m", "listferry", "--config", str(ws.config_path)]
    bad = subprocess.run([*command, "web", "--port", "99999"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    weak = subprocess.run(
        [*command, "operator", "add", "bob", "--password-stdin"],
        input="short",
        capture_output=True,
        text=True,
    )
    assert weak.returncode == 2 and "at least 12 characters" in weak.stderr
    named = subprocess.run(
        [*command, "operator", "add", "Bob Smith"], capture_output=True, text=True
    )
    assert named.returncode == 2 and "operator name 'Bob Smith'" in named.stderr
    made = subprocess.run([*command, "operator", "add", "bob"], capture_output=True, text=True)
    password = re.search(r"password: (\S+)", made.stdout)
    assert made.returncode == 0 and password and len(password.group(1)) >= 20
    again = subprocess.run([*command, "operator", "add", "bob"], capture_output=True, text=True)
    assert again.returncode == 1 and "operator 'bob' exists already" in again.stderr


def test_an_admin_changes_a_tenants_settings_as_tenant_set_would(console: Console) -> None:
    ws = console.ws
    client = console.logged_in(ADMIN)
    page = client.get("/tenants/carol/settings")
    assert page.status == 200 and 'name="strategy" value="full"' in page.text
    csrf = hidden(page.text, "csrf")
    form = {"csrf": csrf, "strategy": "incremental", "allow_ips": "198.51.100.0/24\n"}
    saved = client.post("/tenants/carol/settings", form)
    assert saved.status == 303, saved.text
    shown = json.loads(ws.cli("tenant", "show", "carol", "--json").stdout)
    assert shown["strategy"] == "incremental" and shown["allow_ips"] == ["198.51.100.0/24"]
    entry = client.get("/api/audit?limit=1").json()[0]
    assert (entry["action"], entry["target"]) == ("settings", "carol")
    assert entry["detail"] == {"strategy": "incremental", "allow_ips": ["198.51.100.0/24"]}

    text = ws.config_path.read_text()
    for bad, problem in (
        ({"strategy": "nope"}, "strategy"),
        ({"allow_ips": "not-an-address"}, "allow list line 1"),
        ({"ssh_keys": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "private key"),
        ({"max_shrink_share": "2"}, "max_shrink_share"),
    ):
        refused = client.post("/tenants/carol/settings", {"csrf": csrf, **bad})
        assert refused.status == 422 and problem in refused.text, refused.text
        assert ws.config_path.read_text() == text  # the last good config stands
    assert client.post("/tenants/carol/settings", {"strategy": "full"}).status == 403
    viewer = console.logged_in(VIEWER)
    assert viewer.get("/tenants/carol/settings").status == 403
    refused = viewer.post("/tenants/carol/settings", {"csrf": viewer.csrf(), "strategy": "full"})
    assert refused.status == 403 and ws.config_path.read_text() == text


def test_a_new_upload_password_is_shown_once_and_kept_as_a_hash(console: Console) -> None:
    from listferry.config import load_config
    from listferry.config.passwords import verify_password

    client = console.logged_in(ADMIN)
    asked = client.get("/tenants/carol/password")  # a page that asks first
    assert asked.status == 200 and "Make a new upload password for carol?" in asked.text
    csrf = hidden(asked.text, "csrf")
    made = client.post("/tenants/carol/password", {"csrf": csrf})
    assert made.status == 200 and made.headers["Cache-Control"] == "no-store"
    password = re.search(r'<code class="password">([^<]+)</code>', made.text).group(1)
    stored = load_config(console.ws.config_path).tenant("carol").password_hash
    assert stored and verify_password(password, stored)
    assert password not in console.ws.config_path.read_text()
    entry = client.get("/api/audit?limit=1").json()[0]
    assert (entry["action"], entry["target"], entry["detail"]) == ("password", "carol", None)
    assert password not in client.get("/tenants/carol/settings").text
    assert client.post("/tenants/carol/password", {}).status == 403


def test_a_tenants_page_counts_opens_and_clicks_per_week(console: Console) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    hours = (20, 30, 40, 24 * 9)  # an event is one (email, type, time, topic): all apart
    when = [(now - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in hours]
    events = [
        {"email": "p0@example.org", "type": kind, "at": at, "topic": ""}
        for kind, at in zip(("open", "open", "click", "open"), when, strict=True)
    ]
    console.ws.record_events(events, tenant="acme")
    page = console.logged_in(VIEWER).get("/tenants/acme").text
    rows = re.findall(
        r"<tr><td>(\d{4}-W\d\d)</td><td class=\"number\">(\d+)</td><td class=\"number\">(\d+)",
        page,
    )
    assert sum(int(o) for _, o, _ in rows) == 3 and sum(int(c) for *_, c in rows) == 1


def test_the_documents_shapes_are_the_clis(console: Console) -> None:
    """Each answer's shape in /api/openapi.json names exactly the keys the CLI prints."""
    client = console.logged_in(VIEWER)
    schemas = client.get("/api/openapi.json").json()["components"]["schemas"]

    def keys(name: str) -> set[str]:
        return set(schemas[name]["properties"])

    ws = console.ws
    assert keys("Run") == set(runs_of(ws, "bravo")[0])
    assert keys("RunWithReport") == set(json.loads(ws.cli("runs", "bravo", "1", "--json").stdout))
    status = json.loads(ws.cli("status", "--json").stdout)[0]
    assert keys("Status") == (set(status) - {"serve_config"}) | {"state", "sizes"}
    assert keys("TenantSettings") == set(json.loads(ws.cli("tenant", "list", "--json").stdout)[0])
    digest = json.loads(ws.cli("digest", "--json").stdout)
    assert keys("Digest") == set(digest)
    assert keys("TenantDay") == set(digest["tenants"][0])
    assert client.get("/api/digest").json()["tenants"] == digest["tenants"]


def test_the_audit_log_keeps_its_newest_entries(tmp_path, monkeypatch) -> None:
    from listferry.web import accounts

    monkeypatch.setattr(accounts, "AUDIT_KEEP", 1500)
    console = accounts.Console(tmp_path / "console.db")
    for i in range(3000):
        console.audit("ada", "127.0.0.1", "login", str(i))
    kept = console.audit_log(limit=5000)
    assert len(kept) == 1500 and kept[0]["target"] == "2999" and kept[-1]["target"] == "1500"
