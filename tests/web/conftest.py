"""Fixtures of the console tests: a site with tenants in every state, its operators, and
``listferry web`` running as its own process on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from listferry.testing import Sandbox, wait_for

pytest.importorskip("fastapi", reason="the console needs pip install -e '.[web]' (in a checkout)")

ADMIN, VIEWER = ("ada", "ada's long password"), ("vic", "vic's long password")


def people(n: int, start: int = 0) -> list[tuple[str, str, str, str]]:
    return [(f"p{i}@example.org", f"First{i}", f"Last{i}", "GOLD") for i in range(start, start + n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


@dataclass
class Client:
    """An HTTP client of the console with its own cookies (a browser without a screen)."""

    base: str
    jar: CookieJar = field(default_factory=CookieJar)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, **headers: str
    ) -> Answer:
        data = urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        for name, value in {**self.headers, **headers}.items():
            request.add_header(name.replace("_", "-"), value)
        try:
            with self.opener.open(request, timeout=30) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.headers, exc.read())

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, **headers)

    def post(self, path: str, form: dict[str, str] | None = None, **headers: str) -> Answer:
        return self.request("POST", path, form if form is not None else {}, **headers)

    def login(self, name: str, password: str, next: str = "/") -> Answer:
        page = self.get(f"/login?next={next}")
        token = hidden(page.text, "token")
        return self.post(
            "/login", {"name": name, "password": password, "token": token, "next": next}
        )

    def csrf(self, path: str = "/") -> str:
        return hidden(self.get(path).text, "csrf")


def hidden(page: str, name: str) -> str:
    import re

    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden field {name} in the page"
    return found.group(1)


@dataclass
class Console:
    """The site, its console's address, and ways in."""

    ws: Sandbox
    url: str
    process: subprocess.Popen[str]
    log: Path

    def client(self) -> Client:
        return Client(self.url)

    def logged_in(self, who: tuple[str, str] = ADMIN) -> Client:
        client = self.client()
        answer = client.login(*who)
        assert answer.status == 303, answer.text
        return client


def make_site(root: Path) -> Sandbox:
    """Tenants in several states: acme fine, bravo's last list voided by the shrink guard
    (held in its home, to apply past the guards), carol never ran, delta's list voided
    for an invalid address (archived, to replay once the setting allows it); and an
    admin and a viewer."""
    ws = Sandbox.from_starter(root)
    ws.add_tenant("acme")
    ws.upload(people(5), tenant="acme")
    assert ws.sync(tenant="acme").status == "applied"
    ws.add_tenant("bravo", max_shrink_share=0.5)
    ws.upload(people(10), tenant="bravo")
    assert ws.sync(tenant="bravo").status == "applied"
    ws.upload(people(2), tenant="bravo")
    assert ws.sync(tenant="bravo").status == "voided"
    ws.add_tenant("carol")
    ws.add_tenant("delta", max_invalid_share=0.01)  # voided, its file archived
    ws.upload([*people(20), ("not-an-address", "X", "Y", "GOLD")], tenant="delta")
    assert ws.sync(tenant="delta").status == "voided"
    for (name, password), role in ((ADMIN, "admin"), (VIEWER, "viewer")):
        added = ws.cli("operator", "add", name, "--role", role, "--password-stdin", input=password)
        assert added.exit_code == 0, added.output
    return ws


def start_web(command: list[str], log: Path, client: Client) -> subprocess.Popen[str]:
    """``command`` (``listferry ... web`` or ``serve``) as a process of its own session,
    its output in ``log``, once its console answers ``client``."""
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True
    )

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return client.get("/login").status == 200
        except OSError:
            return False

    wait_for(up, "the console to answer", timeout=30)
    return process


def stop_web(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the process's session, SIGKILL if it is still there after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def start_console(ws: Sandbox, root: Path) -> Console:
    port = free_port()
    log = root / "web.log"
    command = [sys.executable, "-m", "listferry", "--config", str(ws.config_path)]
    url = f"http://127.0.0.1:{port}"
    process = start_web([*command, "web", "--port", str(port)], log, Client(url))
    return Console(ws, url, process, log)


def stop_console(console: Console) -> None:
    stop_web(console.process)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One site and console for a module's tests (they must leave it as they found it,
    or work on tenants of their own)."""
    root = tmp_path_factory.mktemp("site")
    running = start_console(make_site(root), root)
    yield running
    stop_console(running)
