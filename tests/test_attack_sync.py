"""Issue #14, the sync's part: nothing a tenant uploads stops ``serve`` or holds up
another tenant's sync. Each test makes the attack a customer could make, against real
files, real stores and a real server on 127.0.0.1, and checks the outcome."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import csv_text, people, write_module
from test_ftp_server import add_tenant, ftp
from test_on_upload import name_a_plugin, store_runs

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
    # The folders came before the limits that now stop them (max_depth, max_files).
    home = add_tenant(ws, "acme", schedule="", max_files=5000)
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
            wait_for(lambda: store_runs(ws, "beta"), "beta's on-upload sync", timeout=60)
            upload(port, "subscriber_list.csv", user="acme")
    finally:
        unnest(home)
    assert store_runs(ws, "beta") == [("applied", None)]
    assert (home / "subscriber_list.csv").exists()


GIB = 1 << 30

#: Runs a command and prints, after what it printed, its peak resident memory in KiB.
PEAK_MEMORY = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(done.stdout)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def sync_measured(ws: Sandbox, tenant: str) -> tuple[list[dict], int]:
    """``listferry sync TENANT --json`` as its own process: its runs and its peak memory
    in bytes."""
    argv = [sys.executable, "-m", "listferry", "--config", str(ws.config_path)]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, *argv, "sync", tenant, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output, _, peak = done.stdout.rstrip().rpartition("\n")
    return json.loads(output), int(peak) * 1024


def test_a_count_file_of_gigabytes_is_voided_without_being_read_into_memory(ws: Sandbox) -> None:
    """Finding 7: a 2 GiB sparse ``_count.txt`` made a sync use 2.1 GB of memory
    (``read_bytes()[:200]``); a count file is read only as far as a number can go."""
    # The folders came before the limits that now stop them (max_depth, max_files).
    home = add_tenant(ws, "acme", schedule="", max_files=5000)
    (home / "subscriber_list.csv").write_bytes(LIST)
    with (home / "subscriber_list_count.txt").open("wb") as f:
        f.write(b"5")
        f.truncate(2 * GIB)

    (run,), peak = sync_measured(ws, "acme")
    assert peak < 300 * (1 << 20), f"the sync used {peak} bytes of memory"
    assert (run["status"], run["reason"]) == (
        "voided",
        "count file subscriber_list_count.txt is not a number: it is longer than 4096 bytes",
    )


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def test_a_list_past_max_list_size_is_voided_before_it_is_read_and_a_bomb_as_it_unpacks(
    ws: Sandbox,
) -> None:
    """Findings 7 and 8 (``max_list_size``): a list larger than the limit is voided before
    it is hashed or read; a gzip or zip list counts as what it unpacks to, so a few KB
    that unpack to 64 MiB are voided once 1 MiB has come out."""
    home = add_tenant(ws, "acme", schedule="", max_list_size="1 MiB")
    with (home / "subscriber_list.csv").open("wb") as f:
        f.write(LIST)
        f.truncate(3 * GIB)
    run = ws.sync()
    assert (run.status, run.sha256, run.received) == ("voided", None, 0)
    assert run.reason == (
        "subscriber_list.csv is 3 GiB; a list may be at most 1 MiB (max_list_size), "
        "so it was not taken"
    )

    bomb = LIST + b"x" * (64 << 20)
    for name, data in [
        ("subscriber_list.csv.gz", gzipped(bomb)),
        ("subscriber_list.csv.zip", zipped("subscriber_list.csv", bomb)),
    ]:
        assert len(data) < 100_000
        (home / name).write_bytes(data)
        run = ws.sync()
        assert (run.status, run.file) == ("voided", name)
        assert f"{name} unpacks to" in run.reason and "at most 1 MiB (max_list_size)" in run.reason

    ws.upload(LIST)
    assert ws.sync().status == "applied"


def test_a_huge_list_holds_up_no_other_tenant_and_is_stopped_at_sync_timeout(
    ws: Sandbox, served, events
) -> None:
    """Finding 8: one worker ran every tenant's on-upload sync, with no time limit, so
    an 8 GiB sparse list from one tenant held up another's sync. Now ``sync_workers``
    run them side by side, never one tenant twice at once, and ``sync_timeout`` stops
    the long one; its tenant keeps its last good list."""
    big = add_tenant(
        ws,
        "big",
        process="on-upload",
        schedule="",
        max_list_size="1 TiB",
        quota="1 TiB",
        sync_timeout=4,
    )
    add_tenant(ws, "small", process="on-upload", schedule="")
    ws.upload(LIST, tenant="big")
    assert ws.sync(tenant="big").status == "applied"
    with (big / "subscriber_list.csv").open("wb") as f:
        f.write(LIST)
        f.truncate(64 * GIB)  # hashing it alone takes far longer than 4 s

    with served(["ftp"], sync_workers=2) as s:
        upload(s.ports["ftp"], "note.txt", b"a visit: big's sync starts", user="big")
        upload(s.ports["ftp"], "subscriber_list.csv", user="small")
        upload(s.ports["ftp"], "note2.txt", b"a second visit, while it runs", user="big")
        wait_for(lambda: len(events("run")) == 3, "the runs", timeout=120)
    first, second, third = events("run")
    assert "tenant=small" in first and "status=applied" in first
    # big's second sync waited for its first: a free worker never ran it alongside
    assert "tenant=big" in second and "status=failed" in second
    assert "tenant=big" in third and "status=failed" in third
    reason = "took longer than sync_timeout (4 s) and was stopped; nothing of it was applied"
    assert store_runs(ws, "big") == [("applied", None), ("failed", reason), ("failed", reason)]
    assert len(ws.subscribers(tenant="big")) == 5
    assert (big / "subscriber_list.csv").stat().st_size == 64 * GIB  # left for the operator


def test_a_sync_whose_time_runs_out_while_it_applies_rolls_back_and_keeps_the_last_list(
    ws: Sandbox, plugin_dir: Path
) -> None:
    """Finding 8 (``sync_timeout``): the deadline is looked at last inside the apply's
    transaction, so a run whose time is up when its writes are done applies none of
    them. A plan check that takes 2.5 s stands for a slow plan."""
    write_module(
        plugin_dir,
        "lf_slow_check",
        """
        import time

        from listferry import hookimpl

        @hookimpl
        def check_plan(plan, tenant, force):
            time.sleep(2.5)
        """,
    )
    add_tenant(ws, "acme", schedule="", sync_timeout=2)
    ws.upload(LIST)
    assert ws.sync().status == "applied"
    name_a_plugin(ws, "lf_slow_check")

    ws.upload(csv_text(people(7)))  # two more
    run = ws.sync()
    assert (run.status, run.reason) == (
        "failed",
        "took longer than sync_timeout (2 s) and was stopped; nothing of it was applied",
    )
    assert sorted(ws.subscribers()) == sorted(p[0] for p in people(5))
    assert (ws.home / "subscriber_list.csv").exists()  # it waits for the next run
