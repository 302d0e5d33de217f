"""Two-way sync with a customer's own server, as the issue's 'done when' describes it.

A plain client puts the CRM's list on the customer's server; listferry pulls it through
its client transport and applies it; engagement is loaded; ``listferry export`` pushes
the return file back; a plain client reads it and every data point is compared with the
events that were loaded.
"""

from __future__ import annotations

import contextlib
import csv
import ftplib
import io
import ssl
from pathlib import Path

import paramiko
import pytest
from conftest import csv_text
from remote_servers import HOST, Remote
from test_export import API_EVENTS, FILE_EVENTS, HEADER, LIST, STORED, engagement

from listferry.config.settings import EXPORT_FIELDS
from listferry.ops.tenants import add_tenant
from listferry.testing import Sandbox

PASSWORD = "customer-side-secret"


class PlainClient:
    """ftplib or paramiko, as the CRM's own scheduled job would use them."""

    def __init__(self, server: Remote) -> None:
        self.server = server

    def put(self, name: str, data: bytes) -> None:
        with self._session() as session:
            if isinstance(session, paramiko.SFTPClient):
                with session.open(f"/in/{name}", "wb") as f:
                    f.write(data)
            else:
                session.storbinary(f"STOR /in/{name}", io.BytesIO(data))

    def get(self, path: str) -> bytes:
        with self._session() as session:
            if isinstance(session, paramiko.SFTPClient):
                with session.open(path, "rb") as f:
                    return f.read()
            out = io.BytesIO()
            session.retrbinary(f"RETR {path}", out.write)
            return out.getvalue()

    def names(self, folder: str) -> list[str]:
        with self._session() as session:
            if isinstance(session, paramiko.SFTPClient):
                return sorted(session.listdir(folder))
            return sorted(Path(n).name for n in session.nlst(folder))

    @contextlib.contextmanager
    def _session(self):
        if self.server.protocol == "sftp":
            transport = paramiko.Transport((HOST, self.server.port))
            try:
                transport.connect(username="acme", password=PASSWORD)
                yield paramiko.SFTPClient.from_transport(transport)
            finally:
                transport.close()
            return
        if self.server.protocol == "ftps":
            context = ssl.create_default_context(cafile=str(self.server.ca_file))
            session: ftplib.FTP = ftplib.FTP_TLS(context=context)
        else:
            session = ftplib.FTP()
        session.connect(HOST, self.server.port, timeout=10)
        session.login("acme", PASSWORD)
        if isinstance(session, ftplib.FTP_TLS):
            session.prot_p()
        try:
            yield session
        finally:
            session.quit()


@pytest.mark.parametrize("protocol", ["ftp", "ftps", "sftp"])
def test_pull_apply_export_push_and_read_back_every_data_point(
    ws: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("ACME_PASSWORD", PASSWORD)
    with contextlib.ExitStack() as stack:
        server = Remote(stack, tmp_path / "remote", protocol, PASSWORD)
        crm = PlainClient(server)
        add_tenant(
            ws.app(),
            "acme",
            server.tenant_settings(export_fields=[*EXPORT_FIELDS, "fields.CRM Id"]),
        )
        crm.put("subscriber_list.csv", csv_text(LIST, HEADER).encode("utf-8"))
        crm.put("subscriber_list_count.txt", f"{len(LIST)}\n".encode())

        [run] = ws.sync_all()
        assert (run.status, run.added) == ("applied", 4), run.reason
        assert crm.names("/in") == ["subscriber_list.result.txt"]  # pulled, report left

        events = ws.root / "events.csv"
        events.write_text(csv_text(FILE_EVENTS, ("email", "type", "at", "topic")))
        assert ws.cli("events", "load", "acme", str(events)).exit_code == 0
        ws.record_events(API_EVENTS)
        server.folder.joinpath("outbox").mkdir()

        exported = ws.cli("export", "acme")
        assert exported.exit_code == 0, exported.output

        [data_name, count_name] = sorted(crm.names("/in/outbox"), key=len)
        text = crm.get(f"/in/outbox/{data_name}").decode("utf-8")
        count = int(crm.get(f"/in/outbox/{count_name}"))

    rows = {row["email"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}
    assert count == len(rows) == len(LIST)
    for email, first, last, segment, crm_id in LIST:
        row = rows[email]
        assert (row["first_name"], row["last_name"], row["segment_code"]) == (first, last, segment)
        assert row["fields.CRM Id"] == crm_id
        assert {k: row[k] for k in engagement(STORED, email)} == engagement(STORED, email)
    assert [rows[e]["topics"] for e in rows] == ["sport;news;arts", "news", "", ""]
    bob = rows["bob@example.org"]
    assert (bob["status"], bob["opted_out"], bob["opted_out_at"]) == (
        "unsubscribed",
        "true",
        "2026-03-05T11:00:00Z",
    )
    assert all(rows[e]["opted_out"] == "false" for e in rows if e != "bob@example.org")
