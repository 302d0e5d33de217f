"""Load: many tenants upload over SFTP and FTPS at once while ``sync --all`` runs.

    python3 bench/load.py [--tenants 20] [--uploaders 5] [--size-mb 20] [--rounds 1]
    bench/run --only load          # 5 tenants x 5 uploaders x 5 MB; --full: 20 x 5 x 20 MB

``listferry serve`` (FTPS and SFTP) runs as its own process on 127.0.0.1. Every tenant
gets ``--uploaders`` clients at once, SFTP (paramiko) and FTPS (ftplib) in turn, each
sending ``--rounds`` list files of ``--size-mb`` MB, while ``listferry sync --all`` runs
in a loop. Every file is a valid list whose addresses carry its tenant's name and whose
rows carry its upload's tag, so each byte on disk can be traced to one upload.

Afterwards every upload's SHA-256 on disk (archived, or still in the home) must equal
the client's, every run of a tenant must have read one whole upload of that tenant
(its SHA-256 and record count), and no tenant may hold another's address. It prints
the uploads done, the bytes, the failures (goal: 0) and the server's peak memory, and
exits non-zero when anything failed. The same checks run small in ``tests/test_load.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import paramiko
from common import Figure, table

from listferry_plugins.ftp.transport import TlsFtp

HEADER = b"email,first_name,last_name,segment_code,notes\r\n"
NOTES = "x" * 300  # a CRM export's wide rows: about 370 bytes a row
CHUNK = 1 << 16


def listferry_command() -> list[str]:
    exe = Path(sys.executable).parent / "listferry"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "listferry"]


def password_of(tenant: str) -> str:
    return f"load-test-password-of-{tenant}"


def address_of(tenant: str) -> str:
    """The tenant's own source address, as customers each have theirs: one of 127/8, which
    Linux routes to loopback. The server's limits per address apply to each alone."""
    code = zlib.crc32(tenant.encode())
    return f"127.{1 + code % 250}.{1 + (code >> 8) % 250}.{1 + (code >> 16) % 250}"


def connect_from(tenant: str, port: int, timeout: float = 30) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout, (address_of(tenant), 0))


class ListStream:
    """A list file made row by row as it is read: ``read(n)`` like a file, nothing stored.

    The addresses ``p<i>@<tenant>.example`` are the same in every upload of one tenant
    (a full list sent again); the first names carry ``tag``, so each upload differs.
    It counts what was read and hashes it: after the last read, :attr:`sha256` is the
    SHA-256 of the whole file as the client sent it.
    """

    def __init__(self, tenant: str, tag: str, size: int) -> None:
        self.tenant, self.tag, self.size = tenant, tag, size
        self.rows = 0
        self.sent = 0
        self._buffer = HEADER
        self._made = len(HEADER)
        self._hash = hashlib.sha256()

    def _more(self, wanted: int) -> None:
        lines = []
        made = 0
        while made < wanted and self._made + made < self.size:
            i = self.rows
            line = f"p{i}@{self.tenant}.example,{self.tag}-{i},Last{i},GOLD,{NOTES}\r\n"
            lines.append(line)
            made += len(line)
            self.rows += 1
        self._buffer += "".join(lines).encode()
        self._made += made

    def read(self, n: int = CHUNK) -> bytes:
        if len(self._buffer) < n:
            self._more(max(n, CHUNK))
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        self._hash.update(data)
        self.sent += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def whole_sha256(self) -> str:
        """The SHA-256 of the whole file, however much of it was read."""
        again = ListStream(self.tenant, self.tag, self.size)
        while again.read(1 << 20):
            pass
        return again.sha256


# -- the clients ---------------------------------------------------------------------------


def upload_sftp(port: int, tenant: str, name: str, stream: ListStream | IO[bytes]) -> None:
    """Upload ``stream`` as ``name`` with paramiko; returns once the server confirmed it."""
    transport = paramiko.Transport(connect_from(tenant, port))
    try:
        transport.banner_timeout = transport.auth_timeout = 30
        transport.connect(username=tenant, password=password_of(tenant))
        sftp = paramiko.SFTPClient.from_transport(transport)
        sftp.get_channel().settimeout(60)
        target = sftp.open(name, "wb")
        target.set_pipelined(True)
        sent = 0
        for data in iter(lambda: stream.read(32768), b""):
            target.write(data)
            sent += len(data)
        target.close()  # the server renames the file into place before it answers
        # paramiko's close() swallows a lost connection and a refused close alike, so
        # only a live server that shows the file under its name confirms the upload.
        if sftp.stat(name).st_size != sent:
            raise OSError(f"{name}: the server holds another size than was sent")
    finally:
        transport.close()


def upload_ftps(port: int, cert: Path, tenant: str, name: str, stream: ListStream) -> None:
    """Upload ``stream`` as ``name`` with ftplib over explicit TLS; returns after ``226``."""
    # resumes its TLS session for data, as curl does and the server requires
    client = TlsFtp(context=ssl.create_default_context(cafile=str(cert)), timeout=60)
    try:
        client.connect("127.0.0.1", port, source_address=(address_of(tenant), 0))
        client.login(tenant, password_of(tenant))
        client.prot_p()
        client.storbinary(f"STOR {name}", stream, blocksize=CHUNK)
        client.quit()
    finally:
        client.close()


@dataclass
class Upload:
    """One upload: where it goes, what it sends, and how it ended for the client."""

    tenant: str
    protocol: str
    name: str
    stream: ListStream
    error: str | None = None
    done: bool = False
    #: When the client saw the upload confirmed (``time.perf_counter()``).
    ended: float | None = None

    def run(self, site: Site) -> None:
        try:
            if self.protocol == "sftp":
                upload_sftp(site.ports["sftp"], self.tenant, self.name, self.stream)
            else:
                upload_ftps(site.ports["ftps"], site.cert, self.tenant, self.name, self.stream)
            self.done = True
            self.ended = time.perf_counter()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"


# -- the site: a config, its tenants, a serve process ------------------------------------


@dataclass
class Site:
    """A listferry folder driven through its CLI, with ``listferry serve`` as a process."""

    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    server: subprocess.Popen | None = None
    #: The syncs are the script's own: the schedule in ``serve`` stays off.
    serve_options: tuple[str, ...] = ("--no-schedule",)

    @property
    def config(self) -> Path:
        return self.root / "listferry.toml"

    @property
    def cert(self) -> Path:
        return self.root / "state" / "server" / "tls-cert.pem"

    def home(self, tenant: str) -> Path:
        return self.root / "homes" / tenant

    def database(self, tenant: str) -> Path:
        return self.root / "state" / tenant / "tenant.db"

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*listferry_command(), "--config", str(self.config), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    @classmethod
    def create(
        cls,
        root: Path,
        tenants: list[str],
        strategy: str = "full",
        server: str = "",
        settings: tuple[str, ...] = (),
    ) -> Site:
        """``listferry init``, room for many connections, and the tenants, each with its own
        address (:func:`address_of`) as its allow list.

        ``server``: more ``[server]`` lines; ``settings``: ``KEY=VALUE`` for every tenant.
        """
        site = cls(root)
        root.mkdir(parents=True, exist_ok=True)
        site.must(site.cli("init"))
        with site.config.open("a") as f:
            f.write("\n[server]\nmax_connections = 1024\n")
            f.write(server)
        for tenant in tenants:
            added = site.cli(
                "tenant",
                "add",
                tenant,
                "--password-stdin",
                "--allow-ip",
                f"{address_of(tenant)}/32",
                "--strategy",
                strategy,
                input=password_of(tenant) + "\n",
            )
            site.must(added)
            if settings:
                site.must(site.cli("tenant", "set", tenant, *settings))
        return site

    @staticmethod
    def must(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        if done.returncode != 0:
            raise RuntimeError(f"{done.args[-1]} exited {done.returncode}: {done.stderr}")
        return done

    def start(self) -> None:
        """Start ``listferry serve`` for FTPS and SFTP on free ports; wait until it listens."""
        self.server = subprocess.Popen(
            [
                *listferry_command(),
                "--config",
                str(self.config),
                "serve",
                "--protocols",
                "ftps,sftp",
                "--ftps-port",
                "0",
                "--sftp-port",
                "0",
                *self.serve_options,
            ],
            stdout=subprocess.PIPE,
            stderr=(self.root / "serve.log").open("ab"),
            text=True,
        )
        self.ports = {}
        while len(self.ports) < 2:
            line = self.server.stdout.readline()
            if not line:
                raise RuntimeError(f"serve exited {self.server.wait()}: see {self.root}/serve.log")
            if line.startswith("listening "):
                _, protocol, address = line.split()
                self.ports[protocol] = int(address.rsplit(":", 1)[1])

    def peak_memory(self) -> int:
        """The server's peak resident memory so far, in bytes (Linux: ``VmHWM``)."""
        status = Path(f"/proc/{self.server.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def kill(self) -> None:
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        self.server.stdout.close()

    def stop(self) -> None:
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(timeout=120)
        self.server.stdout.close()

    def sync(self) -> list[dict]:
        """``listferry sync --all --json``: the runs it printed."""
        done = self.cli("sync", "--all", "--json")
        if done.returncode not in (0, 1):
            raise RuntimeError(f"sync exited {done.returncode}: {done.stderr}")
        return json.loads(done.stdout)

    def runs(self, tenant: str) -> list[dict]:
        """Every run kept in the tenant's database."""
        with sqlite3.connect(f"file:{self.database(tenant)}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute("SELECT * FROM runs ORDER BY id")]

    def addresses(self, tenant: str) -> list[str]:
        """Every address the tenant's store holds, whatever its status."""
        with sqlite3.connect(f"file:{self.database(tenant)}?mode=ro", uri=True) as conn:
            return [email for (email,) in conn.execute("SELECT email FROM subscribers")]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_of(site: Site, tenant: str) -> dict[str, list[Path]]:
    """Each list file name of the tenant, and where it is: archived, or still in its home."""
    found: dict[str, list[Path]] = {}
    archive = site.root / "state" / tenant / "archive"
    for path in archive.glob("*.csv") if archive.exists() else []:
        found.setdefault(path.name.split("-", 2)[2], []).append(path)
    for path in site.home(tenant).iterdir():
        if path.is_file() and path.suffix == ".csv":
            found.setdefault(path.name, []).append(path)
    return found


def check(site: Site, uploads: list[Upload]) -> list[str]:
    """Every way the load run went wrong; empty when it did not."""
    problems = [f"{u.tenant}/{u.name} over {u.protocol}: {u.error}" for u in uploads if u.error]
    for tenant in sorted({u.tenant for u in uploads}):
        mine = {u.name: u for u in uploads if u.tenant == tenant}
        by_sha = {u.stream.sha256: u for u in mine.values() if u.done}
        on_disk = files_of(site, tenant)
        for name, paths in on_disk.items():
            upload = mine.get(name)
            for path in paths:
                if upload is None or sha256_of(path) != upload.stream.sha256:
                    problems.append(f"{path} is not the whole file a client of {tenant} sent")
        for upload in mine.values():
            if upload.done and not on_disk.get(upload.name):
                problems.append(f"{tenant}/{upload.name} was confirmed but is not on disk")
        for run in site.runs(tenant):
            upload = by_sha.get(run["sha256"])
            if run["status"] not in ("applied", "skipped"):
                problems.append(f"{tenant} run {run['id']} {run['status']}: {run['reason']}")
            if upload is None:
                problems.append(f"{tenant} run {run['id']} read a file no client of it sent whole")
            elif run["status"] == "applied" and run["received"] != upload.stream.rows:
                problems.append(
                    f"{tenant} run {run['id']} read {run['received']} records "
                    f"of {upload.stream.rows}"
                )
        strangers = [a for a in site.addresses(tenant) if not a.endswith(f"@{tenant}.example")]
        if strangers:
            problems.append(f"{tenant} holds {len(strangers)} addresses of other tenants")
    return problems


# -- the load run --------------------------------------------------------------------------


def sync_while(busy: Callable[[], bool], site: Site, passes: list[int]) -> None:
    """Run ``sync --all`` again and again while ``busy()``; count the passes."""
    while busy():
        site.sync()
        passes.append(1)


def plan(tenants: list[str], uploaders: int, rounds: int, size: int) -> list[list[Upload]]:
    """Each uploader's uploads, one after the other; SFTP and FTPS in turn."""
    plans = []
    for t, tenant in enumerate(tenants):
        for k in range(uploaders):
            protocol = "sftp" if (t + k) % 2 == 0 else "ftps"
            plans.append(
                [
                    Upload(
                        tenant,
                        protocol,
                        f"list_u{k:03d}_r{r:02d}.csv",
                        ListStream(tenant, f"u{k:03d}r{r:02d}", size),
                    )
                    for r in range(rounds)
                ]
            )
    return plans


def load(root: Path, tenants: int, uploaders: int, size_mb: float, rounds: int = 1) -> dict:
    """Run the load once in ``root``; return its figures and problems."""
    names = [f"tenant{t:02d}" for t in range(tenants)]
    site = Site.create(root, names)
    plans = plan(names, uploaders, rounds, int(size_mb * (1 << 20)))
    uploads = [u for queue in plans for u in queue]
    site.start()
    try:
        uploading = threading.Event()
        uploading.set()
        passes: list[int] = []
        syncer = threading.Thread(target=sync_while, args=(uploading.is_set, site, passes))
        started = time.perf_counter()
        syncer.start()
        try:
            with ThreadPoolExecutor(len(plans)) as pool:
                for queue in plans:
                    pool.submit(lambda q=queue: [u.run(site) for u in q])
            seconds = time.perf_counter() - started
        finally:
            uploading.clear()
            syncer.join()
        site.sync()  # what arrived after the last pass
        passes.append(1)
        peak = site.peak_memory()
    finally:
        site.stop()
    runs = [run for tenant in names for run in site.runs(tenant)]
    return {
        "uploads": len(uploads),
        "done": sum(u.done for u in uploads),
        "by_protocol": {
            p: sum(u.done for u in uploads if u.protocol == p) for p in ("sftp", "ftps")
        },
        "bytes": sum(u.stream.sent for u in uploads if u.done),
        "seconds": seconds,
        "passes": len(passes),
        "runs": {
            s: sum(r["status"] == s for r in runs) for s in sorted({r["status"] for r in runs})
        },
        "peak_memory": peak,
        "problems": check(site, uploads),
    }


# -- under attack --------------------------------------------------------------------------

#: The hostile tenant, and its own source address (Linux routes all of 127/8 to loopback).
ATTACKER, ATTACKER_IP = "mallory", "127.0.0.66"


class Attacker:
    """A paying customer turned hostile: floods SFTP handles and bare connections.

    One thread logs in as :data:`ATTACKER` over SFTP, again and again, and opens its one
    file as many times as the server lets it, keeping every handle; another holds as
    many bare TCP connections to every port as the server takes, opening new ones as it
    closes them. It counts what it got and what was refused.
    """

    def __init__(self, site: Site, sockets: int = 300) -> None:
        self.site = site
        self.sockets = sockets
        self.stopping = threading.Event()
        self.counts = {"handles": 0, "handles_refused": 0, "sockets": 0, "sockets_refused": 0}
        self._threads = [
            threading.Thread(target=self._flood_handles, name="attack-handles", daemon=True),
            threading.Thread(target=self._flood_sockets, name="attack-sockets", daemon=True),
        ]

    def __enter__(self) -> Attacker:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(30)

    def _connect(self, port: int) -> socket.socket:
        sock = socket.socket()
        sock.settimeout(5)
        sock.bind((ATTACKER_IP, 0))
        sock.connect(("127.0.0.1", port))
        return sock

    def _flood_handles(self) -> None:
        sessions: list[paramiko.Transport] = []
        handles: list[paramiko.SFTPFile] = []  # held: a collected file closes its handle
        while not self.stopping.is_set():
            try:
                transport = paramiko.Transport(self._connect(self.site.ports["sftp"]))
                sessions.append(transport)
                transport.connect(username=ATTACKER, password=password_of(ATTACKER))
                sftp = paramiko.SFTPClient.from_transport(transport)
                with sftp.open("bait.csv", "wb") as f:
                    f.write(HEADER)
                while not self.stopping.is_set():
                    handles.append(sftp.open("bait.csv", "rb"))
                    self.counts["handles"] += 1
            except (OSError, EOFError, paramiko.SSHException):
                self.counts["handles_refused"] += 1
                self.stopping.wait(0.05)
        for transport in sessions:
            transport.close()

    def _flood_sockets(self) -> None:
        held: list[socket.socket] = []
        ports = list(self.site.ports.values())
        while not self.stopping.is_set():
            for sock in [s for s in held if _closed(s)]:
                held.remove(sock)
                sock.close()
                self.counts["sockets_refused"] += 1
            if len(held) >= self.sockets:
                self.stopping.wait(0.05)
                continue
            try:
                held.append(self._connect(ports[len(held) % len(ports)]))
                self.counts["sockets"] += 1
            except OSError:
                self.counts["sockets_refused"] += 1
            # 100 new connections a second at most: the attacker runs on the server's own
            # two CPUs here, and a flood of SYNs is the firewall's to stop, not a server's.
            self.stopping.wait(0.01)
        for sock in held:
            sock.close()


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (what it sent before is read and dropped)."""
    try:
        sock.setblocking(False)
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def applied_after(site: Site, uploads: list[Upload], until: float) -> list[float]:
    """Seconds from each upload's confirmation to its run applied (``serve`` syncs on upload)."""
    waiting = {u.stream.sha256: u for u in uploads if u.done}
    seconds: list[float] = []
    while waiting and time.perf_counter() < until:
        for tenant in sorted({u.tenant for u in waiting.values()}):
            try:
                runs = site.runs(tenant)
            except sqlite3.OperationalError:
                continue  # its first sync has not made its database yet
            for run in runs:
                upload = waiting.get(run["sha256"])
                if upload is not None and run["status"] == "applied":
                    seconds.append(time.perf_counter() - upload.ended)
                    del waiting[run["sha256"]]
        time.sleep(0.05)
    if waiting:
        raise RuntimeError(f"{len(waiting)} uploads were not applied in time")
    return seconds


def one_night(root: Path, tenants: int, size_mb: float, attacked: bool) -> dict:
    """Every tenant uploads one list at once to on-upload tenants, with or without attacker."""
    names = [f"tenant{t:02d}" for t in range(tenants)]
    site = Site.create(
        root, [*names, ATTACKER], server="upload_grace = 0.5\n", settings=("process=on-upload",)
    )
    site.must(site.cli("tenant", "set", ATTACKER, "--allow-ip", f"{ATTACKER_IP}/32"))
    size = int(size_mb * (1 << 20))
    uploads = [
        Upload(name, ("sftp", "ftps")[t % 2], "list.csv", ListStream(name, "night", size))
        for t, name in enumerate(names)
    ]
    site.start()
    try:
        with Attacker(site) if attacked else contextlib.nullcontext() as attacker:
            if attacker:
                attacker.stopping.wait(2)  # let it take what it can first
            started = time.perf_counter()
            with ThreadPoolExecutor(len(uploads)) as pool:
                list(pool.map(lambda u: u.run(site), uploads))
            seconds = time.perf_counter() - started
            waits = applied_after(site, uploads, until=time.perf_counter() + 600)
    finally:
        site.stop()
    failed = [f"{u.tenant}: {u.error}" for u in uploads if u.error]
    if failed:
        when = "under attack" if attacked else "with no attacker"
        raise RuntimeError(f"{len(failed)} uploads failed {when}: {failed[:3]}")
    return {
        "rate": sum(u.stream.sent for u in uploads) / (1 << 20) / seconds,
        "wait": statistics.median(waits),
        "longest": max(waits),
        "attacker": attacker.counts if attacked else None,
    }


def under_attack(work: Path, tenants: int, size_mb: float, rounds: int) -> list[Figure]:
    """Quiet nights and attacked nights in turn; the medians of each as ratio figures."""
    quiet: list[dict] = []
    attacked: list[dict] = []
    for r in range(rounds):
        quiet.append(one_night(work / f"quiet{r}", tenants, size_mb, attacked=False))
        attacked.append(one_night(work / f"attacked{r}", tenants, size_mb, attacked=True))
        print(f"round {r + 1}: quiet {quiet[-1]}, attacked {attacked[-1]}", file=sys.stderr)

    def median(nights: list[dict], key: str) -> float:
        return statistics.median(n[key] for n in nights)

    what = f"{tenants} tenants x {size_mb:g} MB"
    return [
        Figure(
            f"upload rate, one tenant attacking ({what})",
            median(attacked, "rate"),
            median(quiet, "rate"),
            "no attacker",
            ">= 0.67x",
            "MB/s",
        ),
        Figure(
            f"upload to applied, median, under attack ({what})",
            median(attacked, "wait"),
            median(quiet, "wait"),
            "no attacker",
            "<= 1.5x",
        ),
        Figure(
            f"upload to applied, longest, under attack ({what})",
            median(attacked, "longest"),
            median(quiet, "longest"),
            "no attacker",
            "<= 1.5x",
        ),
    ]


def report(figures: dict, args: argparse.Namespace) -> str:
    mb = figures["bytes"] / (1 << 20)
    rate = mb / figures["seconds"]
    runs = ", ".join(f"{status} {n}" for status, n in figures["runs"].items())
    return "\n".join(
        [
            f"load: {args.tenants} tenants x {args.uploaders} uploaders x {args.rounds} "
            f"x {args.size_mb:g} MB, SFTP and FTPS, {os.cpu_count()} CPUs",
            f"uploads done: {figures['done']} of {figures['uploads']} "
            f"(sftp {figures['by_protocol']['sftp']}, ftps {figures['by_protocol']['ftps']})",
            f"bytes: {mb:,.0f} MB in {figures['seconds']:.0f} s ({rate:.1f} MB/s)",
            f"sync --all passes: {figures['passes']}; runs: {runs}",
            f"failures: {len(figures['problems'])}",
            *(f"  {p}" for p in figures["problems"][:20]),
            f"server peak memory: {figures['peak_memory'] / (1 << 20):.0f} MB (VmHWM)",
        ]
    )


def main(argv: list[str] | None = None) -> list:
    """Run the load and print its figures; no ratio figures (this is a count)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--uploaders", type=int, default=5, help="concurrent, per tenant")
    parser.add_argument("--size-mb", type=float, default=20, help="each list file's size")
    parser.add_argument("--rounds", type=int, default=1, help="files each uploader sends")
    parser.add_argument("--work", type=Path, help="the folder to work in (kept)")
    parser.add_argument(
        "--attack",
        action="store_true",
        help="instead: one upload per tenant, quiet nights against nights with a hostile "
        "tenant flooding handles and connections, --rounds of each",
    )
    args = parser.parse_args(argv)
    os.environ["LISTFERRY_LOAD_PLUGINS"] = ""
    work = args.work or Path(tempfile.mkdtemp(prefix="listferry-bench-load-"))
    if args.attack:
        figures = under_attack(work, args.tenants, args.size_mb, args.rounds)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        return figures
    figures = load(work / "site", args.tenants, args.uploaders, args.size_mb, args.rounds)
    print(report(figures, args))
    failures = len(figures["problems"])
    if failures:
        print(f"evidence kept in {work}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        raise RuntimeError(f"{failures} failures under load")
    return []


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        if figures := main(sys.argv[1:]):
            print(table(figures))
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
