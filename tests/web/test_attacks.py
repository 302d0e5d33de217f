"""Attacks on the console, each made over real sockets on loopback, and its refusal.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a client bound to
127.0.0.3 (or .4, .5) is another address to the console: each test that fails logins
does so from addresses of its own, so that the throttle it trips holds no other test.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

from listferry.testing import wait_for
from listferry.web.run import HEAD_SECONDS

from .conftest import ADMIN, VIEWER, Console, hidden


def request(
    console: Console,
    method: str,
    path: str,
    body: bytes | None = None,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """One request from ``source``: (status, headers, body)."""
    port = urlsplit(console.url).port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode("utf-8", "replace")
    finally:
        conn.close()


def login_from(console: Console, source: str, name: str, password: str, **headers: str) -> int:
    """A whole login (form, then post) from ``source``: the post's status."""
    status, got, page = request(console, "GET", "/login", source=source)
    nonce = got["set-cookie"].split("listferry_login=", 1)[1].split(";", 1)[0]
    form = urlencode({"name": name, "password": password, "token": hidden(page, "token")})
    status, _, _ = request(
        console,
        "POST",
        "/login",
        form.encode(),
        source,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"listferry_login={nonce}",
            **headers,
        },
    )
    return status


def test_a_body_of_no_stated_length_is_refused_before_it_is_read(console: Console) -> None:
    port = urlsplit(console.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        )
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(3):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the console may close first
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.1 411")


def test_x_forwarded_for_is_not_believed(console: Console) -> None:
    for i in range(5):
        forged = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert login_from(console, "127.0.0.3", ADMIN[0], "wrong password", **forged) == 401
    refused = login_from(console, "127.0.0.3", *ADMIN, **{"X-Forwarded-For": "198.51.100.99"})
    assert refused == 429
    log = console.log.read_text()
    assert "ip=127.0.0.3 result=throttled" in log and "198.51.100" not in log


def test_logins_sent_all_at_once_count_as_they_arrive(console: Console) -> None:
    with ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(
                lambda _: login_from(console, "127.0.0.4", VIEWER[0], "wrong password"),
                range(16),
            )
        )
    assert statuses.count(401) <= 5  # no more checked than one address may fail
    assert set(statuses) <= {401, 429, 503} and 429 in statuses


def test_an_account_under_attack_still_lets_its_operator_in_from_a_clean_address(
    console: Console,
) -> None:
    carl = ("carl", "carl's long password")
    added = console.ws.cli("operator", "add", carl[0], "--password-stdin", input=carl[1])
    assert added.exit_code == 0, added.output
    statuses = [
        login_from(console, source, carl[0], "wrong password")
        for source in ("127.0.0.6", "127.0.0.7", "127.0.0.8")
        for _ in range(4)  # under each address's limit of 5; 12 against the account's 10
    ]
    assert statuses.count(401) == 10 and statuses[-2:] == [429, 429]
    assert login_from(console, "127.0.0.6", *carl) == 429  # an address that failed
    assert login_from(console, "127.0.0.9", *carl) == 303  # one that never did


def test_a_removed_operator_added_again_is_a_new_account(console: Console) -> None:
    ws = console.ws
    assert (
        ws.cli(
            "operator",
            "add",
            "bob",
            "--role",
            "admin",
            "--password-stdin",
            input="bob's long password",
        ).exit_code
        == 0
    )
    old = console.logged_in(("bob", "bob's long password"))
    assert old.get("/api/me").json()["role"] == "admin"
    assert ws.cli("operator", "remove", "bob").exit_code == 0
    assert (
        ws.cli(
            "operator", "add", "bob", "--password-stdin", input="another long password"
        ).exit_code
        == 0
    )
    assert old.get("/api/me").status == 401
    assert old.get("/").status == 303


def test_a_copied_cookie_dies_with_its_logout(console: Console) -> None:
    client = console.logged_in(VIEWER)
    cookie = next(c for c in client.jar if c.name == "listferry_session")
    copied = {"Cookie": f"listferry_session={cookie.value}"}
    assert console.client().get("/api/me", **copied).status == 200
    assert client.post("/logout", {"csrf": client.csrf()}).status == 303
    assert console.client().get("/api/me", **copied).status == 401


def test_a_login_cookie_set_by_another_site_logs_nobody_in(console: Console) -> None:
    """Another port of this host may set cookies for it: its own nonce and a token it
    made up are refused, so it cannot log a victim's browser in as the attacker."""
    form = urlencode({"name": VIEWER[0], "password": VIEWER[1], "token": "tossed"})
    status, headers, _ = request(
        console,
        "POST",
        "/login",
        form.encode(),
        headers={
            "Cookie": "listferry_login=tossed",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert status == 403 and "listferry_session" not in json.dumps(headers)


def test_any_bytes_in_a_cookie_or_token_are_a_refusal_not_an_error(console: Console) -> None:
    port = urlsplit(console.url).port
    for path, header in (
        ("/", b"Cookie: listferry_session=abc.\xe9\xe9"),
        ("/api/me", b"Cookie: listferry_session=\xff\xfe.\x00"),
        ("/api/me", b"Authorization: Bearer lft_\xe9\xe9"),
        ("/login", b"Cookie: listferry_login=\xe9"),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + header
            sock.sendall(head + b"\r\n\r\n")
            status = sock.recv(100).split(b" ")[1]
        assert status in (b"200", b"303", b"400", b"401"), (path, header, status)
    assert "internal error" not in console.log.read_text()


def test_silent_connections_are_closed_and_lock_nobody_out(console: Console) -> None:
    port = urlsplit(console.url).port
    silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(40)]
    try:
        assert console.client().get("/login").status == 200
        started = time.monotonic()
        for sock in silent:
            assert sock.recv(10) == b""  # closed by the console
        assert time.monotonic() - started < HEAD_SECONDS + 5
    finally:
        for sock in silent:
            sock.close()
    wait_for(lambda: console.client().get("/login").status == 200, "the console")
