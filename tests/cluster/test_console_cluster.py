"""The console in cluster mode, with real PostgreSQL, a real S3 server and a real
``listferry web``: it shows the tenants and runs of the cluster's database, an admin
changes a tenant's setting there and replays a run whose archived file is in storage."""

from __future__ import annotations

import sys

import pytest
from web.conftest import ADMIN, Client, free_port, hidden, start_web, stop_web

from .test_cluster_sync import (  # noqa: F401  (nodes: the fixture)
    csv_text,
    listferry,
    nodes,
    people,
    sync_here,
    upload,
)

pytest.importorskip("fastapi", reason="the console needs pip install -e '.[web]'")


def test_the_console_shows_the_cluster_and_replays_a_run_from_storage(nodes, tmp_path) -> None:
    node = nodes("a")
    upload(nodes.bucket, "list.csv", csv_text(people(20)))
    assert [run["status"] for run in sync_here(node)] == ["applied"]
    set_share = listferry(node, "tenant", "set", "acme", "max_invalid_share=0.01")
    assert set_share.returncode == 0, set_share.stderr
    upload(nodes.bucket, "list.csv", csv_text([*people(30), ("not-an-address", "X", "Y", "G")]))
    (voided,) = sync_here(node)
    assert voided["status"] == "voided" and voided["archive"]

    console = nodes("console")
    added = listferry(
        console, "operator", "add", ADMIN[0], "--role", "admin", "--password-stdin", input=ADMIN[1]
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    log = tmp_path / "web.log"
    command = [sys.executable, "-m", "listferry", "--config", str(console), "web"]
    client = Client(f"http://127.0.0.1:{port}")
    process = start_web([*command, "--port", str(port)], log, client)
    try:
        assert client.login(*ADMIN).status == 303
        (status,) = client.get("/api/status").json()
        assert (status["tenant"], status["state"], status["last_run"]) == ("acme", "voided", 2)
        runs = client.get("/api/tenants/acme/runs").json()
        assert [run["status"] for run in runs] == ["voided", "applied"]
        page = client.get("/tenants/acme/runs/2").text
        assert "Replay…" in page and "download" not in page  # the file is in storage

        csrf = hidden(client.get("/tenants/acme/settings").text, "csrf")
        saved = client.post("/tenants/acme/settings", {"csrf": csrf, "max_invalid_share": "0.1"})
        assert saved.status == 303, saved.text
        shown = listferry(node, "tenant", "show", "acme", "--json")  # another node sees it
        assert '"max_invalid_share": 0.1' in shown.stdout

        replayed = client.post("/api/tenants/acme/runs/2/replay", X_CSRF_Token=csrf)
        assert replayed.status == 200, replayed.text
        run = replayed.json()
        assert (run["status"], run["replay_of"], run["received"]) == ("applied", 2, 31)
        (status,) = client.get("/api/status").json()
        assert status["state"] == "ok" and status["last_run"] == run["run_id"]
    finally:
        stop_web(process)
    assert "Traceback" not in log.read_text()
