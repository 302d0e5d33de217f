"""The console inside ``serve`` ([web] enabled = true): the servers page shows the
sessions open and the addresses blocked, and an admin lifts a block.

Real FTP sessions (ftplib) on loopback; failed logins come from 127.0.0.2, a different
address to the servers, so that the block does not stop the console's own requests.
"""

from __future__ import annotations

import ftplib
import sys
from pathlib import Path

import pytest

from listferry.config.passwords import hash_password
from listferry.serve.keys import ensure_server_keys
from listferry.testing import Sandbox, wait_for

from .conftest import ADMIN, Client, free_port, start_web, stop_web

PASSWORD = "acme's long password"


def ftp_login(port: int, password: str, source: str = "127.0.0.1") -> ftplib.FTP:
    client = ftplib.FTP(timeout=10, source_address=(source, 0))
    client.connect("127.0.0.1", port)
    try:
        client.login("acme", password)
    except BaseException:
        client.close()
        raise
    return client


def test_serve_runs_the_console_which_shows_sessions_and_blocks_and_lifts_one(
    tmp_path: Path,
) -> None:
    ws = Sandbox.from_starter(tmp_path)
    ws.add_tenant("acme", password_hash=hash_password(PASSWORD))
    ftp_port, web_port = free_port(), free_port()
    with ws.config_path.open("a") as f:
        f.write(
            f"\n[server]\nftp_port = {ftp_port}\nblock_after_failures = 2\n"
            f"delay_after_failures = 10\n\n[web]\nenabled = true\nport = {web_port}\n"
        )
    assert (
        ws.cli(
            "operator", "add", ADMIN[0], "--role", "admin", "--password-stdin", input=ADMIN[1]
        ).exit_code
        == 0
    )
    token = ws.cli("operator", "token", ADMIN[0]).output.strip()
    ensure_server_keys(ws.app().config.server)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "listferry", "--config", str(ws.config_path)]
    client = Client(f"http://127.0.0.1:{web_port}", headers={"Authorization": f"Bearer {token}"})
    process = start_web([*command, "serve", "--protocols", "ftp", "--no-schedule"], log, client)
    session = None
    try:
        session = ftp_login(ftp_port, PASSWORD)
        for _ in range(2):
            with pytest.raises(ftplib.error_perm):
                ftp_login(ftp_port, "wrong password", source="127.0.0.2")

        def shown() -> dict:
            facts = client.get("/api/servers").json()
            return facts if facts["sessions"] and facts["blocked"] else {}

        facts = wait_for(shown, "the session and the block on the servers page", timeout=20)
        assert facts["serving"] and facts["protocols"] == ["ftp"]
        assert facts["sessions"] == {"ftp": {"acme": 1}}
        assert [b["source"] for b in facts["blocked"]] == ["127.0.0.2"]
        assert facts["blocked"][0]["accounts"] == ["acme"]
        assert {"who": "127.0.0.2", "why": "blocked after 2 failed logins", "times": 1} in (
            facts["refusals"]
        )
        refused = {"who": "acme from 127.0.0.2", "why": "login refused: wrong credentials"}
        assert {**refused, "times": 2} in facts["refusals"]
        page = client.get("/servers").text  # a token works for pages too
        assert 'data-protocol="ftp" data-tenant="acme"' in page and "127.0.0.2" in page

        not_one = client.post("/api/servers/unblock?address=10.0.0.0/8")
        assert not_one.status == 422 and "give one address" in not_one.json()["error"]
        lifted = client.post("/api/servers/unblock?address=127.0.0.2")
        assert lifted.json() == {"source": "127.0.0.2", "unblocked": True}
        assert client.post("/api/servers/unblock?address=127.0.0.2").status == 404
        ftp_login(ftp_port, PASSWORD, source="127.0.0.2").quit()  # let in again at once
        audit = client.get("/api/audit?limit=1").json()
        assert (audit[0]["action"], audit[0]["target"]) == ("unblock", "127.0.0.2")
    finally:
        if session is not None:
            session.close()
        stop_web(process)
    text = log.read_text()
    assert process.returncode == 0, text
    assert "Traceback" not in text
    assert not (ws.root / "state" / "server" / "live.json").exists()
