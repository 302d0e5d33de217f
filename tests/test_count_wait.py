"""A list whose required count file has not come yet waits ``count_file_wait``, then voids.

CRMs often upload the list first and its count file a little later. Until the wait is
over the list stays where it is (on the customer's server too), and ``status`` shows it
as waiting for its count file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import people
from remote_servers import starter

from listferry.ops.tenants import add_tenant
from listferry.testing import Sandbox

PASSWORD = "Pa55-w0rd-only-the-server-knows"


def seen_hours_ago(ws: Sandbox, hours: float, tenant: str = "acme") -> None:
    """Make the waiting files look first seen ``hours`` ago."""
    with sqlite3.connect(ws.app().config.tenant(tenant).database) as conn:
        conn.execute("UPDATE sightings SET first_seen = ?", (time.time() - hours * 3600,))


def status_of(ws: Sandbox) -> dict:
    (item,) = json.loads(ws.cli("status", "--json").stdout)
    return item


def test_a_list_without_its_required_count_file_waits_and_is_shown_waiting(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", count_file="required")
    ws.upload(people(4))

    result = ws.cli("sync", "acme", "--json")

    assert result.exit_code == 0
    assert [r["status"] for r in json.loads(result.stdout)] == ["idle"]
    assert (ws.home / "subscriber_list.csv").exists()
    assert not (ws.home / "subscriber_list.result.txt").exists()
    shown = status_of(ws)
    assert shown["pending"] == 1 and shown["last_run"] is None
    (waiting,) = shown["waiting"]
    assert waiting["file"] == "subscriber_list.csv"
    since = time.mktime(time.strptime(waiting["since"], "%Y-%m-%dT%H:%M:%SZ"))
    until = time.mktime(time.strptime(waiting["until"], "%Y-%m-%dT%H:%M:%SZ"))
    assert until - since == 2 * 3600  # the default count_file_wait
    assert "subscriber_list.csv waiting for its count file until " in ws.cli("status").output


def test_a_list_no_sync_has_seen_is_not_yet_looked_at_and_the_sync_says_until_when_it_waits(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", count_file="required", count_file_wait="30m")
    ws.upload(people(4))

    unseen = {"file": "subscriber_list.csv", "since": None, "until": None, "as_of": None}
    assert status_of(ws)["waiting"] == [unseen]  # no deadline before a sync has seen it
    assert "subscriber_list.csv waiting for its count file (not yet looked at)" in (
        ws.cli("status").output
    )

    result = ws.cli("sync", "acme", "--json")
    (run,) = json.loads(result.stdout)
    (waiting,) = status_of(ws)["waiting"]
    assert status_of(ws)["waiting"] == [waiting]  # the same deadline at each look
    assert (run["status"], run["reason"]) == ("idle", None)
    assert run["hint"] == f"subscriber_list.csv waits for its count file until {waiting['until']}"
    assert ws.cli("sync", "acme").output == f"acme: idle ({run['hint']})\n"
    since = time.mktime(time.strptime(waiting["since"], "%Y-%m-%dT%H:%M:%SZ"))
    until = time.mktime(time.strptime(waiting["until"], "%Y-%m-%dT%H:%M:%SZ"))
    assert until - since == 30 * 60

    ws.upload(people(5))  # uploaded again: its wait starts afresh at the next sync
    assert status_of(ws)["waiting"] == [unseen]


def test_the_count_file_arriving_within_the_wait_lets_the_list_apply(ws: Sandbox) -> None:
    ws.add_tenant("acme", count_file="required")
    ws.upload(people(4))
    assert [r.status for r in ws.sync_all()] == ["idle"]
    seen_hours_ago(ws, 1.5)

    (ws.home / "subscriber_list_count.txt").write_text("4\n")
    (run,) = ws.sync_all()

    assert (run.status, run.added) == ("applied", 4)
    assert status_of(ws)["waiting"] == []


def test_a_list_whose_count_file_never_came_is_voided_once_the_wait_is_over(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", count_file="required", count_file_wait="30m")
    ws.upload(people(4))
    assert [r.status for r in ws.sync_all()] == ["idle"]
    seen_hours_ago(ws, 0.4)
    assert [r.status for r in ws.sync_all()] == ["idle"]

    seen_hours_ago(ws, 0.6)
    (run,) = ws.sync_all()

    assert run.status == "voided"
    assert run.reason == (
        "count file subscriber_list_count.txt is missing, and this tenant requires one"
    )
    assert not (ws.home / "subscriber_list.csv").exists()
    assert ws.subscribers("active") == {}


def test_a_list_uploaded_again_waits_afresh(ws: Sandbox) -> None:
    ws.add_tenant("acme", count_file="required")
    ws.upload(people(4))
    ws.sync()
    seen_hours_ago(ws, 3)

    ws.upload(people(5))  # a new upload under the same name
    assert [r.status for r in ws.sync_all()] == ["idle"]

    assert (ws.home / "subscriber_list.csv").exists()


def test_incremental_files_after_a_waiting_one_wait_with_it(ws: Sandbox) -> None:
    ws.add_tenant("acme", count_file="required", strategy="incremental")
    first = ws.upload(people(2), name="monday.csv")
    old = time.time() - 60
    os.utime(first, (old, old))
    ws.upload(people(2, start=10), name="tuesday.csv", count=2)

    assert [r.status for r in ws.sync_all()] == ["idle"]  # tuesday waits behind monday

    (ws.home / "monday_count.txt").write_text("2\n")
    assert [(r.file, r.status) for r in ws.sync_all()] == [
        ("monday.csv", "applied"),
        ("tuesday.csv", "applied"),
    ]


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("ACME_PASSWORD", PASSWORD)
    with contextlib.ExitStack() as stack:
        yield starter(stack, tmp_path, PASSWORD)


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_a_list_waiting_on_a_customer_server_is_left_there(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol)
    add_tenant(ws.app(), "acme", server.tenant_settings(count_file="required", stable_seconds=0))
    (server.folder / "subscriber_list.csv").write_text("email\na@example.org\n")

    assert [r.status for r in ws.sync_all()] == ["idle"]

    assert (server.folder / "subscriber_list.csv").exists()
    (server.folder / "subscriber_list_count.txt").write_text("1\n")
    assert [r.status for r in ws.sync_all()] == ["applied"]
    assert not (server.folder / "subscriber_list.csv").exists()


def test_status_shows_what_the_last_sync_saw_waiting_on_a_customer_server(
    ws: Sandbox, remote: Any
) -> None:
    server = remote("sftp")
    add_tenant(ws.app(), "acme", server.tenant_settings(count_file="required", stable_seconds=0))
    (server.folder / "subscriber_list.csv").write_text("email\na@example.org\n")
    assert status_of(ws)["waiting"] == []  # not listed by status: no sync has looked yet

    (run,) = ws.sync_all()

    shown = status_of(ws)
    (waiting,) = shown["waiting"]
    assert (waiting["file"], waiting["as_of"]) == ("subscriber_list.csv", shown["looked_at"])
    assert run.hint == f"subscriber_list.csv waits for its count file until {waiting['until']}"
    assert (
        f"subscriber_list.csv waiting for its count file until {waiting['until']} "
        f"(seen {shown['looked_at']})"
    ) in ws.cli("status").output

    seen_hours_ago(ws, 3)  # the wait is over: the next sync voids the list
    assert [r.status for r in ws.sync_all()] == ["voided"]
    assert status_of(ws)["waiting"] == []
