"""The schedule on several nodes: one leader queues, another takes over when it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listferry.cluster.database import connect

from .test_cluster_sync import nodes  # noqa: F401  (the fixture)


def start_schedule(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
    command = [sys.executable, "-m", "listferry", "-v", "--config", str(config), "schedule"]
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_for(predicate, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.1)


def status(config: Path) -> dict:
    command = [sys.executable, "-m", "listferry", "--config", str(config), "cluster"]
    done = subprocess.run([*command, "status", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_one_node_leads_and_another_takes_over_when_it_dies(nodes, tmp_path: Path) -> None:
    extra = 'schedule = "*/5 * * * *"\nexport_schedule = "*/5 * * * *"\n'
    a, b = nodes("a", extra), nodes("b", extra)
    done = subprocess.run(
        [sys.executable, "-m", "listferry", "--config", str(a), "cluster", "init"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    with connect(nodes.database_url) as conn:  # added yesterday: it missed its time
        conn.execute("UPDATE listferry_tenants SET created_at = now() - interval '1 day'")
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    first = start_schedule(a, log_a)
    second = None
    try:
        wait_for(lambda: "this node leads" in log_a.read_text(), "a to lead")
        # the sync and export that fell due before the schedule started are queued once,
        # by a
        wait_for(lambda: "acme: sync queued as job" in log_a.read_text(), "a to queue acme")
        wait_for(lambda: "acme: export queued as job" in log_a.read_text(), "a to queue it")
        second = start_schedule(b, log_b)
        wait_for(lambda: "schedule:" in log_b.read_text(), "b to start")
        assert status(b)["leader"] == f"{os.uname().nodename}:{first.pid}"
        time.sleep(4)  # b looks for the lead every few seconds meanwhile
        assert "this node leads" not in log_b.read_text()
        assert "queued" not in log_b.read_text()
        first.send_signal(signal.SIGKILL)
        first.wait()
        wait_for(lambda: "this node leads" in log_b.read_text(), "b to take over")
        assert status(b)["leader"] == f"{os.uname().nodename}:{second.pid}"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    # however often they fell due and whoever led, acme's sync and export wait once each
    with connect(nodes.database_url) as conn:
        jobs = conn.execute("SELECT task_name FROM procrastinate_jobs ORDER BY id").fetchall()
    assert jobs == [("listferry.sync",), ("listferry.export",)]


def test_the_digest_is_mailed_once_by_the_leader(
    nodes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes run the schedule with the same digest_at: the one that leads sends it."""
    from notify_servers import SmtpServer

    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "s3cret-smtp")
    due = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    with SmtpServer(tmp_path) as smtp:
        extra = (
            f'\n[notify]\ndigest_at = "{due:%H:%M:%S}"\ndigest_timezone = "UTC"\n'
            "\n[notify.email]\n"
            f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\nca_file = "{smtp.ca_file}"\n'
            'username = "mailer"\npassword_env = "DIGEST_SMTP_PASSWORD"\n'
            'from = "listferry@platform.example"\nto = ["night-ops@platform.example"]\n'
        )
        both = []
        try:
            for name in ("a", "b"):
                config = nodes(name)
                config.write_text(config.read_text() + extra)
                both.append(start_schedule(config, tmp_path / f"{name}.log"))
            mails = smtp.mailbox.wait(1, timeout=60)
            time.sleep(3)  # the due time has passed on both nodes
            assert len(smtp.mailbox.messages) == len(mails) == 1, smtp.mailbox.messages
        finally:
            for process in both:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    ((recipients, message),) = mails
    assert recipients == ["night-ops@platform.example"]
    assert "digest" in message["Subject"].lower(), message["Subject"]
