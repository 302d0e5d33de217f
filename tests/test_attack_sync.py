"""Issue #14, the sync's part: nothing a tenant uploads stops ``serve`` or holds up
another tenant's sync. Each test makes the attack a customer could make, against real
files, real stores and a real server on 127.0.0.1, and checks the outcome."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import csv_text, people
from test_ftp_server import add_tenant, ftp

from listferry.serve.keys import ensure_server_keys
from listferry.testing import Sandbox, wait_for

LIST = csv_text(people(5)).encode()


def nest(home: Path, depth: int) -> None:
    """``depth`` folders, each in the one before, below ``home`` (relative to a folder
    descriptor: no path grows past PATH_MAX)."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def unnest(home: Path) -> None:
    """Remove what :func:`nest` made, deepest first (``shutil.rmtree`` recurses)."""
    fds = [os.open(home, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        while "d" in os.listdir(fds[-1]):
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


def runs_of(ws: Sandbox, tenant: str) -> list[tuple[str, str | None]]:
    """(status, reason) of the tenant's recorded runs, oldest first."""
    database = ws.root / "state" / tenant / "tenant.db"
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            return conn.execute("SELECT status, reason FROM runs ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # being made by the first run
            return []


def upload(port: int, name: str, data: bytes = LIST, user: str = "acme") -> None:
    client = ftp(port, user)
    try:
        client.storbinary(f"STOR {name}", io.BytesIO(data))
    finally:
        client.quit()


@contextlib.contextmanager
def serving(ws: Sandbox, *options: str) -> Iterator[int]:
    """``listferry serve`` for FTP on a free port, as its own process; the port."""
    ensure_server_keys(ws.app().config.server)
    argv = [sys.executable, "-m", "listferry", "--config", str(ws.config_path), "serve"]
    with (ws.root / "serve.log").open("ab") as log:
        server = subprocess.Popen(
            [*argv, "--protocols", "ftp", "--ftp-port", "0", *options],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        for line in server.stdout:
            if line.startswith("listening "):
                break
        else:
            pytest.fail(f"serve did not start: exit {server.wait()}, see {ws.root}/serve.log")
        yield int(line.split()[2].rsplit(":", 1)[1])
        assert server.poll() is None, "serve died"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        server.stdout.close()


def test_folders_nested_thousands_deep_do_not_stop_serve_nor_another_tenants_sync(
    ws: Sandbox,
) -> None:
    """Finding 2: 1,100 nested folders made ``serve`` fail to start (RecursionError in
    remove_stale_uploads); every walk of a home is now iterative and bounded."""
    home = add_tenant(ws, "acme", schedule="")
    add_tenant(ws, "beta", process="on-upload", schedule="")
    nest(home, 1500)
    stale = [
        home / ".subscriber_list.csv.0123456789ab.part",
        home / "d" / "d" / ".x.0a0b0c0d0e0f.part",
    ]
    for path in stale:
        path.write_bytes(b"half a list")

    try:
        with serving(ws) as port:
            assert not any(path.exists() for path in stale)
            upload(port, "subscriber_list.csv", user="beta")
            wait_for(lambda: runs_of(ws, "beta"), "beta's on-upload sync", timeout=60)
            upload(port, "subscriber_list.csv", user="acme")
    finally:
        unnest(home)
    assert runs_of(ws, "beta") == [("applied", None)]
    assert (home / "subscriber_list.csv").exists()
