"""Faults: a corrupt tenant database, a full disk, a customer's server that misbehaves.

Each fault is real where it can be: bytes overwritten in the database file, a sync run
in a process whose disk really fills up (a small tmpfs in a user namespace where the
kernel allows it, else a file size limit), servers on 127.0.0.1 that drop, reset, stall
or cut short. The archive step is failed from Python (``os.replace``): a rename inside
one folder needs no room on tmpfs, so no small disk can make it fail.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import remote_servers
from conftest import csv_text, people
from pyftpdlib.filesystems import AbstractedFS
from remote_servers import FaultProxy, Remote, starter

from listferry.ops.tenants import add_tenant
from listferry.store.database import Store
from listferry.testing import Sandbox

PASSWORD = "Faulty-server-pa55word"
BIG = 2000  # records: about 80 kB, several packets and blocks
LINGER_0 = struct.pack("ii", 1, 0)


def committed(db: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(
            "SELECT email, first_name, last_name, segment_code, status FROM subscribers "
            "ORDER BY email"
        ).fetchall()


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def listferry(ws: Sandbox, *args: str) -> list[str]:
    """The command line of a real listferry process on the sandbox."""
    return [sys.executable, "-m", "listferry", "--config", str(ws.config_path), *args]


def archived(ws: Sandbox, name: str = "acme") -> list[str]:
    folder = ws.app().config.tenant(name).state_dir / "archive"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- a corrupt tenant database ---------------------------------------------------------------


def overwrite(db: Path, where: str) -> None:
    """Overwrite the header, or three pages in the middle of the file, with 0xFF bytes."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    with db.open("r+b") as f:
        if where == "header":
            f.write(b"\xff" * 100)
        else:
            f.seek(page_size * (pages // 2))
            f.write(b"\xff" * page_size * 3)


@pytest.mark.parametrize("where", ["header", "middle pages"])
def test_a_corrupt_store_fails_its_tenant_at_open_and_every_other_tenant_goes_on(
    ws: Sandbox, where: str
) -> None:
    for name in ("acme", "beta", "gamma"):
        ws.add_tenant(name, strategy="full")
        ws.upload(people(3000), tenant=name)
        assert [r.status for r in ws.sync_all(tenant=name)] == ["applied"]
        ws.upload(people(3000, start=100), tenant=name)
    db = ws.app().config.tenant("beta").database
    overwrite(db, where)

    result = subprocess.run(
        listferry(ws, "-v", "sync", "--all", "--json"), capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 1
    runs = {run["tenant"]: run for run in json.loads(result.stdout)}
    assert (runs["acme"]["status"], runs["gamma"]["status"]) == ("applied", "applied")
    failed = runs["beta"]
    assert failed["status"] == "failed"
    assert failed["reason"].startswith(f"{db}: the tenant database ")
    assert "corrupt" in failed["reason"] or "not a database" in failed["reason"]
    assert "\n" not in failed["reason"]
    assert f"beta: failed: {failed['reason']}" in result.stderr  # the log line
    assert (ws.home_of("beta") / "subscriber_list.csv").exists()  # still pending
    assert ws.subscribers("active", tenant="acme").keys() == {
        f"p{i}@example.org" for i in range(100, 3100)
    }


@pytest.mark.parametrize("where", ["header", "middle pages"])
def test_a_corrupt_store_is_one_line_saying_to_restore_it_in_check_status_digest_and_runs(
    ws: Sandbox, tmp_path: Path, where: str
) -> None:
    for name in ("acme", "beta"):
        ws.add_tenant(name, strategy="full")
        ws.upload(people(3000), tenant=name)
        assert [r.status for r in ws.sync_all(tenant=name)] == ["applied"]
    db = ws.app().config.tenant("beta").database
    overwrite(db, where)
    said = re.compile(
        rf"{re.escape(str(db))}: the tenant database is corrupt \([^\n]+\); restore it from a "
        "backup"
    )
    listing = tmp_path / "list.csv"
    listing.write_text(csv_text(people(3000)))

    check = ws.cli("check", str(listing), "--tenant", "beta")
    assert check.exit_code == 1
    assert said.fullmatch(check.output.removeprefix("Error: ").rstrip("\n")), check.output

    status = ws.cli("status")
    assert status.exit_code == 1
    (line,) = [line for line in status.stdout.splitlines() if line.startswith("beta:")]
    head, _, error = line.partition("; ")
    assert head.startswith("beta: error, ") and said.fullmatch(error), line
    entries = {e["tenant"]: e for e in json.loads(ws.cli("status", "--json").stdout)}
    assert said.fullmatch(entries["beta"]["error"]) and entries["acme"]["error"] is None

    digest = ws.cli("digest")
    assert digest.stdout.count("the tenant database is corrupt") == 1, digest.stdout
    assert f"  beta: {entries['beta']['error']}\n" in digest.stdout

    runs = ws.cli("runs", "beta")
    assert runs.exit_code == 1
    assert said.fullmatch(runs.output.removeprefix("Error: ").rstrip("\n")), runs.output


def test_the_check_at_open_runs_again_only_when_the_file_changed_or_a_day_passed(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(50))
    ws.sync()
    db = ws.tenant.database
    with Store(db) as store:
        first = store.checked_at
    with Store(db) as store:
        assert store.checked_at == first  # as listferry left it: not checked again
    st = db.stat()
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))  # written by someone else
    with Store(db) as store:
        assert store.checked_at is not None and store.checked_at > first
        second = store.checked_at
    stamp = db.with_name(db.name + ".checked")
    stamp.write_text(stamp.read_text().replace(str(second), str(second - 25 * 3600)))
    with Store(db) as store:
        assert store.checked_at is not None and store.checked_at > second - 3600


# -- a full disk ------------------------------------------------------------------------------


@functools.cache
def small_disks_can_be_mounted() -> bool:
    """Whether this process may mount a tmpfs in a user namespace of its own."""
    if not shutil.which("unshare"):
        return False
    with contextlib.suppress(OSError):
        probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"listferry-probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        try:
            done = subprocess.run(
                ["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                capture_output=True,
                timeout=30,
            )
        finally:
            probe.rmdir()
        return done.returncode == 0
    return False


def sync_on_a_small_disk(ws: Sandbox, volume: str, room: int) -> tuple[dict, str]:
    """``sync acme`` in a process whose state folder has ``room`` bytes to spare.

    ``tmpfs``: the tenant's state folder is a tmpfs that size (writes fail with ENOSPC),
    copied in before and out after. ``fsize``: the process may not grow any file past the
    biggest the run needs before it applies (writes fail with EFBIG).
    Returns the run (``--json``) and stderr.
    """
    tenant = ws.tenant
    state = tenant.state_dir
    pending = ws.home / "subscriber_list.csv"
    sync = listferry(ws, "-v", "sync", "acme", "--json")
    if volume == "tmpfs":
        used = sum(p.stat().st_size for p in state.rglob("*") if p.is_file())
        size = (used + pending.stat().st_size + room) // 4096 * 4096 + 4096
        before, after = ws.root / "state-before", ws.root / "state-after"
        script = (
            f"set -e; cp -a {state}/. {before}/; "
            f"mount -t tmpfs -o size={size},mode=0700 tmpfs {state}; cp -a {before}/. {state}/; "
            f"set +e; {shlex.join(sync)}; code=$?; cp -a {state}/. {after}/; exit $code"
        )
        before.mkdir()
        after.mkdir()
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300
        )
        shutil.rmtree(state)
        shutil.copytree(after, state)
    else:
        limit = max(pending.stat().st_size, tenant.database.stat().st_size) + room

        def small() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        done = subprocess.run(sync, capture_output=True, text=True, timeout=300, preexec_fn=small)
    assert done.returncode == 1, done.stderr
    [run] = json.loads(done.stdout)
    return run, done.stderr


VOLUMES = [
    pytest.param(
        "tmpfs",
        marks=pytest.mark.skipif(
            "not small_disks_can_be_mounted()", reason="no tmpfs in a user namespace here"
        ),
    ),
    "fsize",
]


@pytest.mark.parametrize("volume", VOLUMES)
def test_a_disk_that_fills_up_during_apply_fails_the_run_and_keeps_the_last_good_list(
    ws: Sandbox, volume: str
) -> None:
    ws.add_tenant("acme", strategy="full")
    ws.upload(people(1000))
    assert [r.status for r in ws.sync_all()] == ["applied"]
    db = ws.tenant.database
    last_good = committed(db)
    pending = ws.upload(people(10_000), count=10_000)  # 9000 adds: megabytes of log

    run, stderr = sync_on_a_small_disk(ws, volume, room=512 * 1024)

    assert run["status"] == "failed"
    assert run["received"] == 10_000 and run["added"] == 0  # read whole; nothing applied
    assert run["reason"].startswith(f"{db}: ")
    if volume == "tmpfs":
        assert "disk full" in run["reason"]
    else:
        assert "could not write the tenant database" in run["reason"]
        assert "is the disk full?" in run["reason"]
    assert f"acme: run {run['run_id']} failed: {run['reason']}" in stderr  # the log line
    assert integrity(db) == "ok"
    assert committed(db) == last_good
    assert pending.exists() and archived(ws) == [n for n in archived(ws) if n[:7] == "000001-"]
    with Store(db) as store:
        assert store.run("acme", run["run_id"]).status == "failed"  # recorded even so

    [retried] = ws.sync_all()  # room again: the next run finishes the work
    assert (retried.status, retried.added) == ("applied", 9000)
    assert not pending.exists()


@pytest.mark.parametrize("outcome", ["applied", "voided"])
def test_a_disk_full_while_archiving_fails_the_run_and_leaves_the_file_pending(
    ws: Sandbox, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    ws.add_tenant("acme", strategy="full")
    ws.upload(people(100))
    assert [r.status for r in ws.sync_all()] == ["applied"]
    db = ws.tenant.database
    last_good = committed(db)
    archive = ws.tenant.state_dir / "archive"
    count = 120 if outcome == "applied" else 999  # a count file that does not match voids
    pending = ws.upload(people(120), count=count)
    content = pending.read_bytes()
    replace = os.replace

    def full(source: Any, dest: Any) -> None:
        if Path(dest).parent == archive:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))
        replace(source, dest)

    monkeypatch.setattr(os, "replace", full)
    [run] = ws.sync_all()
    monkeypatch.setattr(os, "replace", replace)

    assert run.status == "failed"
    assert run.reason.startswith("could not archive subscriber_list.csv: No space left on device: ")
    assert (run.added, run.archive) == (0, None)
    assert committed(db) == last_good and integrity(db) == "ok"
    assert pending.read_bytes() == content  # still pending, whole
    assert [n[:7] for n in archived(ws)] == ["000001-"]
    assert "will be tried again" in (ws.home / "subscriber_list.result.txt").read_text()
    with Store(db) as store:
        assert store.run("acme", run.run_id).status == "failed"

    [retried] = ws.sync_all()
    assert retried.status == outcome
    assert not pending.exists() and len(archived(ws)) == 3  # the first list, this one + count


# -- a customer's server that misbehaves ---------------------------------------------------------


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``remote("sftp", proxy=True)``: a customer's server with ``/in`` (remote_servers)."""
    monkeypatch.setenv("ACME_PASSWORD", PASSWORD)
    with contextlib.ExitStack() as stack:
        yield starter(stack, tmp_path, PASSWORD)


def tenant_on(ws: Sandbox, server: Remote, **settings: Any) -> None:
    add_tenant(ws.app(), "acme", server.tenant_settings(**settings))


def put_list(server: Remote, rows: int = BIG) -> None:
    (server.folder / "subscriber_list.csv").write_text(csv_text(people(rows)))


def assert_nothing_taken(ws: Sandbox, server: Remote) -> None:
    assert ws.subscribers("active") == {}
    assert archived(ws) == []
    assert "subscriber_list.csv" in server.files()
    work = ws.tenant.state_dir / "work"
    assert not [p for p in work.rglob("*") if p.is_file()]  # no partial download left


class ShortFile:
    """A file that ends ``cut`` bytes in, whatever its size says."""

    def __init__(self, f: Any, cut: int) -> None:
        self._f, self._cut = f, cut

    def read(self, n: int = -1) -> bytes:
        room = max(0, self._cut - self._f.tell())
        return self._f.read(room if n < 0 else min(n, room))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class ShortFS(AbstractedFS):
    def open(self, filename: str, mode: str) -> Any:
        f = super().open(filename, mode)
        return ShortFile(f, 30_000) if "r" in mode else f


class ShortHandle(remote_servers._Handle):
    def read(self, offset: int, length: int) -> Any:
        return super().read(offset, max(0, min(length, 30_000 - offset)))


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_a_server_that_sends_less_than_the_size_it_lists_fails_the_run_and_applies_nothing(
    ws: Sandbox, remote: Any, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    server = remote(protocol)
    if protocol == "ftp":
        handler = server.server.server.handler
        handler.abstracted_fs, handler.use_sendfile = ShortFS, False
    else:
        monkeypatch.setattr(remote_servers, "_Handle", ShortHandle)
    tenant_on(ws, server, remote_retries=1)
    put_list(server)
    size = (server.folder / "subscriber_list.csv").stat().st_size

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert run.reason == (
        f"{server.url}: could not fetch subscriber_list.csv: the transfer was cut short "
        f"(30000 of {size} bytes) (gave up after 2 tries)"
    )
    assert_nothing_taken(ws, server)


class ResetProxy(FaultProxy):
    """A :class:`FaultProxy` whose ``cut`` is a TCP reset (RST), not an orderly close."""

    def _pump(self, source: socket.socket, sink: socket.socket, watched: bool, control: bool):
        carried, pending = 0, b""
        try:
            while data := source.recv(65536):
                if control:  # FTP: passive replies point at the proxy (FaultProxy._pump)
                    pending += data
                    if b"\n" not in pending:
                        continue
                    data, _, pending = pending.rpartition(b"\n")
                    data = remote_servers.PASV.sub(self._passive, data + b"\n")
                if watched and carried + len(data) > self.after and self._should_fault():
                    sink.sendall(data[: max(0, self.after - carried)])
                    sink.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_RD)  # wakes the other pump, sends nothing
                    sink.close()  # linger 0: the client gets a reset, not an end of file
                    break
                carried += len(data)
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


def behind(server: Remote, proxy: FaultProxy) -> None:
    """Point the tenant's URL (and known_hosts) at ``proxy`` instead of the server."""
    server.proxy = server.stack.enter_context(proxy)
    if server.known_hosts:
        text = server.known_hosts.read_text()
        server.known_hosts.write_text(text.replace(f":{server.port} ", f":{proxy.port} "))
    server.port = proxy.port


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_a_connection_reset_mid_download_is_retried_then_fails_and_applies_nothing(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol)
    if protocol == "sftp":  # SFTP: the one connection carries the file; reset it mid-way
        behind(server, ResetProxy(server.port).fault("cut", after=40_000))
    else:  # FTP: reset the data connections, where the file is
        behind(server, ResetProxy(server.port, ftp=True).fault("cut", after=30_000))
    tenant_on(ws, server, remote_retries=2)
    put_list(server)

    [run] = ws.sync_all()

    assert run.status == "failed"
    # A reset can overtake the bytes before it (the client sees the cut), arrive after
    # the client read them and EOF (it sees fewer bytes than the file holds), or reach
    # the FTP server first (it answers 426 on the control connection): the last try's.
    cut = (
        r"(the connection was cut|the transfer was cut short \(\d+ of \d+ bytes\)"
        r"|426 Transfer aborted; \d+ bytes transmitted\.)"
    )
    assert re.fullmatch(
        re.escape(f"{server.url}: could not fetch subscriber_list.csv: ")
        + cut
        + re.escape(" (gave up after 3 tries)"),
        run.reason,
    ), run.reason
    assert server.proxy.faults == 3
    assert_nothing_taken(ws, server)


@pytest.mark.parametrize("fault", ["cut", "stall"])
@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_a_server_that_drops_or_never_answers_the_connection_is_retried_then_fails(
    ws: Sandbox, remote: Any, protocol: str, fault: str
) -> None:
    server = remote(protocol)
    behind(server, FaultProxy(server.port).fault(fault, after=0))  # before the greeting
    tenant_on(ws, server, remote_retries=1, remote_timeout=0.5)
    put_list(server, rows=5)

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert run.reason.startswith(f"{server.url}: could not list the folder: ")
    assert run.reason.endswith("(gave up after 2 tries)")
    if fault == "stall" and protocol == "ftp":
        assert "timed out: no answer from the server for 0.5 s" in run.reason
    assert server.proxy.faults == 2
    assert ws.subscribers("active") == {} and archived(ws) == []
