"""The night, end to end: `listferry serve` runs five tenants' syncs at their time.

Lists arrive over SFTP and FTPS; a few seconds later every tenant's scheduled sync runs,
as its own process, in parallel; one tenant's broken file is voided and the operator
and the tenant's contact hear of it by e-mail, and a signed webhook posts the run,
while the other four apply. `listferry status` shows each outcome.
"""

from __future__ import annotations

import io
import json
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from notify_servers import SmtpServer, WebhookServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from load import ListStream, Site, upload_ftps, upload_sftp

from listferry.ops.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

TENANTS = {"alpha": "sftp", "bravo": "ftps", "charlie": "sftp", "delta": "ftps", "echo": "ftps"}
BROKEN = "charlie"
SECRET = "nightly-webhook-secret"


def running_syncs(config: Path) -> set[str]:
    """The tenants whose scheduled `listferry sync` process is alive right now."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in argv and b"sync" in argv:
            found.add(argv[argv.index(b"sync") + 1].decode())
    return found


def runs_of(site: Site, tenant: str) -> list[dict]:
    if not site.database(tenant).exists():
        return []
    try:
        with sqlite3.connect(f"file:{site.database(tenant)}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute("SELECT * FROM runs ORDER BY id")]
    except sqlite3.OperationalError:  # the store is being made
        return []


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_serve_runs_five_tenants_at_their_time_in_parallel_and_tells_of_the_voided_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIGHTLY_SMTP_PASSWORD", "s3cret-smtp")
    monkeypatch.setenv("NIGHTLY_WEBHOOK_SECRET", SECRET)
    site = Site.create(tmp_path / "site", list(TENANTS))
    site.serve_options = ()
    due = (datetime.now(UTC) + timedelta(seconds=14)).replace(microsecond=0)
    with SmtpServer(tmp_path) as smtp, WebhookServer() as hook:
        text = site.config.read_text()
        text = text.replace("[listferry]\n", "[listferry]\nworkers = 5\n", 1)
        for tenant in TENANTS:
            extra = f'schedule = "{due:%H:%M:%S}"\ntimezone = "UTC"\n'
            if tenant == BROKEN:
                extra += 'contact_email = "it@charlie.example"\n'
            text = text.replace(f"[tenants.{tenant}]\n", f"[tenants.{tenant}]\n{extra}", 1)
        text += (
            '\n[notify]\non = ["voided", "failed"]\n'
            "\n[notify.email]\n"
            f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\nca_file = "{smtp.ca_file}"\n'
            'username = "mailer"\npassword_env = "NIGHTLY_SMTP_PASSWORD"\n'
            'from = "listferry@platform.example"\nto = ["night-ops@platform.example"]\n'
            f'\n[notify.webhook]\nurl = "{hook.url}"\nsecret_env = "NIGHTLY_WEBHOOK_SECRET"\n'
        )
        site.config.write_text(text)
        site.start()
        try:
            streams = {}
            for i, (tenant, protocol) in enumerate(TENANTS.items()):
                name = f"members_{tenant}.csv"
                if tenant == BROKEN:
                    data = io.BytesIO(b"name;phone\r\nAda;123\r\n")  # no e-mail column
                else:
                    data = streams[tenant] = ListStream(tenant, f"night{i}", 3 << 20)
                if protocol == "sftp":
                    upload_sftp(site.ports["sftp"], tenant, name, data)
                else:
                    upload_ftps(site.ports["ftps"], site.cert, tenant, name, data)
            assert datetime.now(UTC) < due, "the uploads took longer than the lead time"
            for tenant in TENANTS:  # nothing runs before its time
                assert runs_of(site, tenant) == []

            seen_together = 0
            deadline = time.monotonic() + (due - datetime.now(UTC)).total_seconds() + 90
            while time.monotonic() < deadline:
                seen_together = max(seen_together, len(running_syncs(site.config)))
                if all(runs_of(site, t) for t in TENANTS) and not running_syncs(site.config):
                    break
                time.sleep(0.02)
            smtp.mailbox.wait(1, timeout=30)
            status = site.cli("status", "--json")
        finally:
            site.stop()

    runs = {tenant: runs_of(site, tenant) for tenant in TENANTS}
    assert all(len(r) == 1 for r in runs.values()), runs
    for tenant, (run,) in runs.items():
        started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
        assert due <= started <= due + timedelta(seconds=30), (tenant, run["started_at"], due)
        if tenant == BROKEN:
            assert run["status"] == "voided" and "e-mail" in run["reason"], run
        else:
            assert run["status"] == "applied", run
            assert run["received"] == streams[tenant].rows
    assert seen_together >= 2, "the scheduled syncs did not run side by side"

    (rcpts, message), *others = smtp.mailbox.messages
    assert others == []
    assert rcpts == ["night-ops@platform.example", "it@charlie.example"]
    assert message["Subject"] == f"listferry: {BROKEN} voided members_{BROKEN}.csv"
    assert runs[BROKEN][0]["reason"] in message.get_payload(decode=True).decode()

    ((headers, body),) = hook.requests
    posted = json.loads(body)
    assert (posted["tenant"], posted["status"]) == (BROKEN, "voided")
    assert verify(SECRET.encode(), headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])

    assert status.returncode == 1, status.stderr  # a voided tenant: not all is well
    shown = {item["tenant"]: item for item in json.loads(status.stdout)}
    assert {t: shown[t]["last_status"] for t in TENANTS} == {
        t: ("voided" if t == BROKEN else "applied") for t in TENANTS
    }
    assert shown["alpha"]["subscribers"] == streams["alpha"].rows
    assert shown[BROKEN]["pending"] == 0  # a voided file is archived, the list stands
    assert all(
        shown[t]["next_sync"] == (due + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for t in TENANTS
    )
