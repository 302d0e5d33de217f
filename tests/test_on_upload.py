"""``process = "on-upload"`` tenants, synced by a running serve as their files arrive:
a list whose count file never comes is voided when the wait is over, and a sync that
cannot run is recorded as a failed run and tried again."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path

import pytest
from conftest import csv_text, people
from test_ftp_server import add_tenant, ftp

from listferry.config.edit import write_atomically
from listferry.testing import Sandbox, wait_for

LIST = csv_text(people(5)).encode()


def store_runs(ws: Sandbox, tenant: str = "acme") -> list[tuple[str, str | None]]:
    """(status, reason) of the tenant's recorded runs, oldest first, read as status does."""
    database = ws.root / "state" / tenant / "tenant.db"
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            return conn.execute("SELECT status, reason FROM runs ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # being made by the first run
            return []


def name_a_plugin(ws: Sandbox, module: str) -> None:
    text = ws.config_path.read_text().replace(
        'homes = "homes"', f'homes = "homes"\nplugins = ["{module}"]'
    )
    write_atomically(ws.config_path, text)


def upload(port: int, name: str, data: bytes = LIST) -> None:
    client = ftp(port)
    try:
        client.storbinary(f"STOR {name}", io.BytesIO(data))
    finally:
        client.quit()


def test_a_list_whose_count_file_never_comes_is_voided_when_the_wait_is_over(
    ws: Sandbox, served, events
) -> None:
    add_tenant(ws, process="on-upload", count_file="required", count_file_wait="1m", schedule="")
    database = ws.root / "state" / "acme" / "tenant.db"
    with served(["ftp"]) as s:
        upload(s.ports["ftp"], "subscriber_list.csv")
        (held,) = wait_for(lambda: events("run"), "the sync that starts the wait")
        assert "status=idle" in held and "waits for its count file until" in held
        with contextlib.closing(sqlite3.connect(database)) as conn, conn:  # as if 55 s ago
            conn.execute("UPDATE sightings SET first_seen = first_seen - 55")
        upload(s.ports["ftp"], "readme.txt", b"not a list")  # a visit: 5 s still to wait

        wait_for(lambda: len(events("run")) == 3, "the sync at the end of the wait")
    _, again, last = events("run")
    assert "status=idle" in again and "status=voided" in last
    assert store_runs(ws) == [
        ("voided", "count file subscriber_list_count.txt is missing, and this tenant requires one")
    ]
    assert not (ws.home / "subscriber_list.csv").exists()


def test_a_sync_that_cannot_run_is_a_failed_run_and_is_tried_again(
    ws: Sandbox, served, events, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_tenant(ws, process="on-upload", schedule="")
    with served(["ftp"]) as s:
        s.runtime.uploads.retry_seconds = (2.0,)
        name_a_plugin(ws, "lf_acme_crm")  # not installed yet: serve goes on, sync cannot
        upload(s.ports["ftp"], "subscriber_list.csv")  # the sync cannot import the plugin

        (failed,) = wait_for(lambda: store_runs(ws), "the failed run in the store")
        crm = tmp_path / "crm"
        crm.mkdir()
        (crm / "lf_acme_crm.py").write_text('"""Installed after the upload."""\n')
        monkeypatch.setenv("PYTHONPATH", str(crm))  # for the sync processes from now on

        wait_for(lambda: len(store_runs(ws)) == 2, "the run of the retry")
    assert failed == (
        "failed",
        f"the on-upload sync process exited with code 2: Error: {ws.config_path} line 6: "
        "[listferry] plugins: plugin module 'lf_acme_crm' cannot be imported: No module "
        "named 'lf_acme_crm'",
    )
    assert store_runs(ws)[1] == ("applied", None)
    assert [e.split(" status=")[1].split()[0] for e in events("run")] == ["failed", "applied"]


def test_retries_of_a_sync_that_cannot_run_end_and_leave_it_to_the_schedule(
    ws: Sandbox, served, caplog: pytest.LogCaptureFixture
) -> None:
    add_tenant(ws, process="on-upload")
    with served(["ftp"]) as s:
        s.runtime.uploads.retry_seconds = (0.1, 0.1)
        name_a_plugin(ws, "lf_never_installed")
        upload(s.ports["ftp"], "subscriber_list.csv")

        gave_up = "acme: the on-upload sync failed 3 times; its schedule or the next upload"
        wait_for(lambda: gave_up in caplog.text, "the retries to end", timeout=30)
    assert [status for status, _ in store_runs(ws)] == ["failed"] * 3
    assert (ws.root / "homes" / "acme" / "subscriber_list.csv").exists()


def test_a_cluster_node_stopping_queues_the_syncs_still_waiting_out_the_grace(
    tmp_path: Path,
) -> None:
    """A node stopped between an upload and its sync (a rolling restart) queues the sync
    for the cluster's workers as it stops, rather than leave the list to its schedule."""
    from listferry.serve.uploads import UploadDispatcher

    box = Sandbox(tmp_path, process="on-upload")
    queued: list[str] = []
    dispatcher = UploadDispatcher(box.app(), 3600, queue=lambda name: queued.append(name) or "7")
    dispatcher.received(box.tenant, "subscriber_list.csv")
    assert queued == []  # an hour's grace: not yet
    dispatcher.stop(5)
    assert queued == [box.tenant.name]


def test_a_cluster_node_stopping_while_the_database_is_away_tries_it_once(
    tmp_path: Path,
) -> None:
    """Review finding: each waiting tenant's queueing waited for the database in turn,
    so a node stopping during an outage outlived its stop timeout."""
    from listferry.serve.uploads import UploadDispatcher

    box = Sandbox(tmp_path, process="on-upload")
    box.add_tenant("other", process="on-upload")
    tried: list[str] = []

    def away(name: str) -> str:
        tried.append(name)
        raise OSError("the database does not answer")

    dispatcher = UploadDispatcher(box.app(), 3600, queue=away)
    for name in ("other", box.tenant.name):
        dispatcher.received(box.app().config.tenants[name], "subscriber_list.csv")
    dispatcher.stop(5)
    assert len(tried) == 1
