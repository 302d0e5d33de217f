"""A running serve and the config file: changes take effect from the next login; a config
it cannot use leaves the last good one in place, and `status` says so."""

from __future__ import annotations

import ftplib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue

import paramiko
import pytest
from test_crash import listferry_command
from test_ftp_server import PASSWORD, add_tenant, ftp

from listferry.config.edit import write_atomically
from listferry.config.passwords import hash_password
from listferry.serve.live import problem_path
from listferry.testing import Sandbox, wait_for


def refused(port: int, user: str = "acme", password: str = PASSWORD) -> bool:
    try:
        ftp(port, user, password).quit()
    except ftplib.error_perm:
        return True
    return False


def edit(ws: Sandbox, old: str, new: str) -> None:
    text = ws.config_path.read_text()
    assert old in text
    write_atomically(ws.config_path, text.replace(old, new, 1))


@dataclass(frozen=True)
class Pack:
    """A CRM pack with a dialect ``latercrm``, as ``pip install -e`` installs it: its
    distribution's metadata in ``site`` (site-packages), its module in ``source`` (the
    checkout), which only processes started after the install find (through a .pth file)."""

    name: str
    module: str
    site: Path
    source: Path

    def install(self) -> None:
        info = self.site / f"{self.module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {self.name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[listferry]\n{self.name} = {self.module}\n")


def a_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pack:
    """A pack not installed yet; this process loads it (and no other) once it is, and can
    import it once ``source`` is put on its path."""
    module = "lf_later_" + re.sub(r"\W", "_", tmp_path.name)
    pack = Pack(module.replace("_", "-"), module, tmp_path / "site", tmp_path / "checkout")
    pack.site.mkdir()
    pack.source.mkdir()
    (pack.source / f"{module}.py").write_text(
        textwrap.dedent("""\
        from listferry import hookimpl
        from listferry.dialect import Dialect


        @hookimpl
        def register_dialects(register):
            register(Dialect(name="latercrm"))
    """)
    )
    monkeypatch.syspath_prepend(str(pack.site))
    monkeypatch.setenv("LISTFERRY_LOAD_PLUGINS", pack.name)
    return pack


def test_a_running_serve_takes_set_and_remove_from_the_next_login(ws: Sandbox, served) -> None:
    add_tenant(ws, allow_ips=["127.0.0.1"])
    with served(["ftp"]) as s:
        port = s.ports["ftp"]
        ftp(port).quit()
        assert ws.cli("tenant", "set", "acme", "--allow-ip", "192.0.2.0/24").exit_code == 0
        assert refused(port)
        assert ws.cli("tenant", "set", "acme", "--add-allow-ip", "127.0.0.0/8").exit_code == 0
        ftp(port).quit()
        assert ws.cli("tenant", "remove", "acme").exit_code == 0
        assert refused(port)


def test_a_config_serve_cannot_use_keeps_the_last_good_one_and_is_recorded(
    ws: Sandbox, served
) -> None:
    add_tenant(ws)
    good_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ws.config_path.stat().st_mtime))
    record = problem_path(ws.app().config.state_dir)
    with served(["ftp"]) as s:
        port = s.ports["ftp"]
        ftp(port).quit()
        hashed = ws.tenant.password_hash
        edit(ws, hashed, f'{hash_password("n3w-Passw0rd")}"\ndialect = "nosuch')
        ftp(port).quit()  # an unknown dialect: the config is not used, the old password holds
        assert refused(port, password="n3w-Passw0rd")
        problem = json.loads(record.read_text())
        assert problem["config_of"] == good_at and problem["pid"] == os.getpid()
        assert "unknown dialect 'nosuch'" in problem["reason"]

        edit(ws, 'dialect = "nosuch"', 'dialect = "default"')
        ftp(port, password="n3w-Passw0rd").quit()
        assert refused(port)
        assert not record.exists()


def test_a_config_put_in_place_with_the_same_size_and_time_is_read_again(
    ws: Sandbox, served
) -> None:
    """Two quick `tenant set`s can leave a file of the same size within one clock tick."""
    add_tenant(ws)
    with served(["ftp"]) as s:
        port = s.ports["ftp"]
        ftp(port).quit()
        old = ws.config_path.stat()
        hashed = ws.tenant.password_hash
        new = hash_password("n3w-Passw0rd")
        assert len(new) == len(hashed)
        replacement = ws.root / "replacement.toml"
        replacement.write_text(ws.config_path.read_text().replace(hashed, new))
        os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(replacement, ws.config_path)
        assert (ws.config_path.stat().st_size, ws.config_path.stat().st_mtime_ns) == (
            old.st_size,
            old.st_mtime_ns,
        )
        ftp(port, password="n3w-Passw0rd").quit()


def test_a_pack_installed_while_serve_runs_leaves_tenant_changes_working(
    ws: Sandbox, served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    add_tenant(ws)
    hashed = ws.tenant.password_hash
    record = problem_path(ws.app().config.state_dir)
    pack = a_pack(tmp_path, monkeypatch)
    caplog.set_level(logging.WARNING, logger="listferry.server")
    with served(["ftp"]) as s:
        port = s.ports["ftp"]
        ftp(port).quit()
        pack.install()  # this process cannot import it: loading every plugin again fails

        edit(ws, hashed, hash_password("n3w-Passw0rd"))
        ftp(port, password="n3w-Passw0rd").quit()
        assert refused(port)
        edit(ws, 'homes = "homes"', f'homes = "homes"\nplugins = ["{pack.module}"]')
        ftp(port, password="n3w-Passw0rd").quit()
        assert not record.exists()
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warning == (
            "the config's [listferry] plugins changed since serve started: serve uses the "
            "new value(s) only when it starts again"
        )
        text = ws.config_path.read_text()
        write_atomically(ws.config_path, text[: text.index("[tenants.acme]")])
        assert refused(port, password="n3w-Passw0rd")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_status_says_when_serve_runs_an_older_config(
    ws: Sandbox, served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_tenant(ws)
    pack = a_pack(tmp_path, monkeypatch)
    try:
        with served(["ftp"]) as s:
            port = s.ports["ftp"]
            pack.install()
            monkeypatch.syspath_prepend(str(pack.source))  # as a command started now finds it
            assert ws.cli("tenant", "set", "acme", "--dialect", "latercrm").exit_code == 0
            ftp(port).quit()  # serve reads the file again, has no such dialect, goes on

            shown = ws.cli("status")
            assert shown.exit_code == 1
            first = shown.stderr.splitlines()[0]
            assert re.fullmatch(
                r"serve runs the config of \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: .*\[tenants\.acme\] "
                r"dialect: unknown dialect 'latercrm' \(known: default\)",
                first,
            ), first
            assert shown.stdout.startswith("acme: never run")
            entries = json.loads(ws.cli("status", "--json").stdout)
            assert entries[0]["tenant"] == "acme"
            assert "unknown dialect 'latercrm'" in entries[0]["serve_config"]["reason"]
            assert entries[0]["serve_config"]["config_of"] in first

            assert ws.cli("tenant", "set", "acme", "--dialect", "default").exit_code == 0
            ftp(port).quit()
            after = ws.cli("status", "--json")
            assert after.exit_code == 0, after.output
            assert json.loads(after.stdout)[0]["serve_config"] is None
    finally:
        sys.modules.pop(pack.module, None)


def test_status_heeds_the_record_of_a_running_serve_only(ws: Sandbox) -> None:
    ws.add_tenant("acme", expect_file_within="")
    record = problem_path(ws.app().config.state_dir)
    record.parent.mkdir(parents=True, exist_ok=True)
    left = {
        "config_of": "2026-12-04T10:00:00Z",
        "reason": "a reason",
        "failed_at": "2026-12-04T10:01:00Z",
        "pid": os.getpid(),
    }
    record.write_text(json.dumps(left))
    running = ws.cli("status")
    assert running.exit_code == 1
    assert running.stderr == "serve runs the config of 2026-12-04T10:00:00Z: a reason\n"

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    record.write_text(json.dumps(left | {"pid": int(gone.stdout)}))  # a serve killed since
    result = ws.cli("status")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_status_ignores_the_record_of_a_killed_serve_and_of_a_process_with_its_number(
    ws: Sandbox, tmp_path: Path
) -> None:
    base = [*listferry_command(), "--config", str(ws.config_path)]
    subprocess.run([*base, "init"], check=True, capture_output=True, timeout=60)
    add_tenant(ws, allow_ips=["127.0.0.1"])
    record = problem_path(ws.root / "state")
    good = ws.config_path.read_text()
    proc = subprocess.Popen(
        [*base, "serve", "--protocols", "sftp", "--sftp-port", "0", "--no-schedule"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    other: subprocess.Popen | None = None
    try:
        assert proc.stdout.readline().startswith("listening sftp ")
        write_atomically(ws.config_path, good + "\n[tenants.acme\n")
        wait_for(record.exists, "serve to record that it cannot use the config", timeout=20)
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
        write_atomically(ws.config_path, good)  # fixed, with no serve left to clear the record

        assert record.exists()
        killed = ws.cli("status")
        assert (killed.exit_code, killed.stderr) == (0, ""), killed.output

        other = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        left = json.loads(record.read_text())
        record.write_text(json.dumps(left | {"pid": other.pid}))  # the number, used again
        reused = ws.cli("status")
        assert (reused.exit_code, reused.stderr) == (0, ""), reused.output
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        if other is not None:
            other.communicate(timeout=30)


# -- the real command ---------------------------------------------------------------------


def sftp_login(port: int, password: str = PASSWORD) -> None:
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.connect(username="acme", password=password)
        with paramiko.SFTPClient.from_transport(transport) as sftp:
            sftp.listdir(".")
    finally:
        transport.close()


def sftp_refused(port: int) -> bool:
    try:
        sftp_login(port)
    except paramiko.AuthenticationException:
        return True
    return False


def test_listferry_serve_takes_changes_after_a_pack_install_and_reports_a_config_it_cannot_use(
    ws: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = [*listferry_command(), "--config", str(ws.config_path)]
    subprocess.run([*base, "init"], check=True, capture_output=True, timeout=60)
    add_tenant(ws, allow_ips=["127.0.0.1"])
    pack = a_pack(tmp_path, monkeypatch)
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [*base, "serve", "--protocols", "sftp", "--sftp-port", "0", "--no-schedule"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONPATH": str(pack.site)},
        )
    lines: Queue[str] = Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout])
    reader.start()
    try:
        try:
            found = re.fullmatch(r"listening sftp 127\.0\.0\.1:(\d+)\n", lines.get(timeout=30))
        except Empty:
            raise AssertionError(f"serve did not start: {log.read_text()}") from None
        assert found, log.read_text()
        port = int(found[1])
        sftp_login(port)
        pack.install()  # pip install -e: the running serve cannot import it
        monkeypatch.syspath_prepend(str(pack.source))  # commands started from now on can

        def tenant_set(*args: str) -> None:
            result = ws.cli("tenant", "set", "acme", *args)
            assert result.exit_code == 0, result.output

        tenant_set("--allow-ip", "192.0.2.0/24")
        wait_for(lambda: sftp_refused(port), "serve to take the new allow list", timeout=20)
        tenant_set("--allow-ip", "127.0.0.1")
        sftp_login(port)

        def errors() -> list[str]:
            return [line for line in log.read_text().splitlines() if "cannot be used" in line]

        def problem() -> dict | None:
            return json.loads(ws.cli("status", "--json").stdout)[0]["serve_config"]

        tenant_set("--dialect", "latercrm")  # the pack's: serve would need a restart for it
        first = wait_for(problem, "status to show serve's problem", timeout=20)  # no login needed
        assert "unknown dialect 'latercrm'" in first["reason"]
        assert len(wait_for(errors, "the error in the log", timeout=20)) == 1
        tenant_set("--strategy", "incremental")
        wait_for(
            lambda: len(errors()) == 2, "the error logged again after the next change", timeout=20
        )
        sftp_login(port)  # the last good config still serves

        tenant_set("--dialect", "default")
        wait_for(lambda: problem() is None, "the record cleared by a good config", timeout=20)
        assert ws.cli("tenant", "remove", "acme").exit_code == 0
        wait_for(lambda: sftp_refused(port), "serve to refuse the removed tenant", timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        reader.join(5)
        proc.stdout.close()
        sys.modules.pop(pack.module, None)
    stderr_text = log.read_text()
    assert code == 0, stderr_text
    assert "Traceback" not in stderr_text
    assert not problem_path(ws.root / "state").exists()
