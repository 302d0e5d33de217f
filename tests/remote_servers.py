"""Customers' servers for the client-transport tests, all on 127.0.0.1 in this process.

:class:`FtpServer` (pyftpdlib, plain or with TLS) and :class:`SftpServer` (paramiko)
serve one user from one folder and record what lands in it, in order.
:class:`FaultProxy` relays TCP to one of them and cuts or stalls a connection after a
number of bytes; for FTP it rewrites passive-mode replies so that data connections,
where the transfers are, pass through it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from listferry.serve.keys import make_ssh_host_key, make_tls_certificate

HOST = "127.0.0.1"
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
logging.getLogger("tests.remote.sftp").setLevel(logging.CRITICAL + 1)


def tls_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    cert, key = folder / "server-cert.pem", folder / "server-key.pem"
    if not cert.exists():
        make_tls_certificate(cert, key)
    return cert, key


class FtpServer:
    """An FTP server for one user; ``tls`` is (certificate, key) to require explicit TLS."""

    def __init__(
        self,
        root: Path,
        user: str,
        password: str,
        tls: tuple[Path, Path] | None = None,
        mlsd: bool = True,
        on_list: Callable[[], None] | None = None,
    ) -> None:
        self.events: list[tuple[str, str]] = []
        events, listing = self.events, on_list
        authorizer = DummyAuthorizer()
        authorizer.add_user(user, password, str(root), perm="elradfmwMT")
        base: Any = TLS_FTPHandler if tls else FTPHandler
        commands = {k: v for k, v in base.proto_cmds.items() if mlsd or k not in ("MLSD", "MLST")}

        class Handler(base):
            proto_cmds = commands

            def on_file_received(self, file: str) -> None:
                events.append(("stored", os.path.basename(file)))

            def on_login_failed(self, username: str, password: str) -> None:
                events.append(("login refused", username))

            def ftp_RNTO(self, path: str) -> Any:
                done = super().ftp_RNTO(path)
                if done:
                    events.append(("renamed", os.path.basename(path)))
                return done

            def ftp_MLSD(self, path: str) -> Any:
                if listing:
                    listing()
                return super().ftp_MLSD(path)

        Handler.authorizer = authorizer
        Handler.auth_failed_timeout = 0
        if tls:
            Handler.certfile, Handler.keyfile = str(tls[0]), str(tls[1])
            Handler.tls_control_required = Handler.tls_data_required = True
            Handler.ssl_context = None
        self.server = FTPServer((HOST, 0), Handler, ioloop=IOLoop())  # not the shared one
        self.port = self.server.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.server.ioloop.loop(0.02, blocking=False)
        self.server.close_all()

    def __enter__(self) -> FtpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- SFTP ---------------------------------------------------------------------------------


class _Handle(paramiko.SFTPHandle):
    def __init__(self, flags: int, f: Any, path: str, folder: _Folder) -> None:
        super().__init__(flags)
        self.readfile = self.writefile = f
        self.path, self.folder, self.writing = path, folder, bool(flags & (os.O_WRONLY | os.O_RDWR))

    def stat(self) -> Any:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))

    def read(self, offset: int, length: int) -> Any:
        return super().read(offset, min(length, self.folder.read_limit or length))

    def close(self) -> None:
        super().close()
        if self.writing:
            self.folder.events.append(("stored", os.path.basename(self.path)))


class _Folder(paramiko.SFTPServerInterface):
    """One folder served as ``/``; records what lands in it."""

    def __init__(
        self,
        server: Any,
        root: Path,
        events: list,
        on_list: Any,
        posix: bool,
        read_limit: int | None,
    ) -> None:
        super().__init__(server)
        self.root, self.events, self.on_list, self.posix = root, events, on_list, posix
        self.read_limit = read_limit

    def _real(self, path: str) -> str:
        return str(self.root / posixpath.normpath("/" + path).lstrip("/"))

    def _attrs(self, path: str, follow: bool = True) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(
                os.stat(self._real(path)) if follow else os.lstat(self._real(path))
            )
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def list_folder(self, path: str) -> Any:
        if self.on_list:
            self.on_list()
        real = self._real(path)
        try:
            return [
                paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(real, n)), filename=n)
                for n in os.listdir(real)
            ]
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def stat(self, path: str) -> Any:
        return self._attrs(path)

    def lstat(self, path: str) -> Any:
        return self._attrs(path, follow=False)

    def open(self, path: str, flags: int, attr: Any) -> Any:
        real = self._real(path)
        try:
            fd = os.open(real, flags | getattr(os, "O_BINARY", 0), 0o644)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        if flags & os.O_WRONLY:
            mode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            mode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            mode = "rb"
        return _Handle(flags, os.fdopen(fd, mode), path, self)

    def _do(self, action: Callable[[], None], event: tuple[str, str] | None = None) -> int:
        try:
            action()
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        if event:
            self.events.append(event)
        return paramiko.SFTP_OK

    def remove(self, path: str) -> int:
        return self._do(lambda: os.remove(self._real(path)))

    def rename(self, old: str, new: str) -> int:
        if os.path.exists(self._real(new)):
            return paramiko.SFTP_FAILURE  # SFTP v3: a plain rename never replaces a file
        return self._do(
            lambda: os.rename(self._real(old), self._real(new)),
            ("renamed", posixpath.basename(new)),
        )

    def posix_rename(self, old: str, new: str) -> int:
        if not self.posix:
            return paramiko.SFTP_OP_UNSUPPORTED
        return self._do(
            lambda: os.replace(self._real(old), self._real(new)),
            ("renamed", posixpath.basename(new)),
        )

    def mkdir(self, path: str, attr: Any) -> int:
        return self._do(lambda: os.mkdir(self._real(path)))


class _Login(paramiko.ServerInterface):
    def __init__(self, user: str, password: str, key: paramiko.PKey | None) -> None:
        self.user, self.password, self.key = user, password, key

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        ok = (username, password) == (self.user, self.password)
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == self.user and self.key is not None and key == self.key
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class SftpServer:
    """An SFTP server for one user (password, or ``client_key``), serving ``root`` as ``/``.

    ``read_limit``: answer every read with at most that many bytes, as some servers do.
    """

    def __init__(
        self,
        root: Path,
        user: str,
        password: str,
        host_key_file: Path,
        client_key: paramiko.PKey | None = None,
        on_list: Callable[[], None] | None = None,
        posix_rename: bool = True,
        read_limit: int | None = None,
    ) -> None:
        if not host_key_file.exists():
            make_ssh_host_key(host_key_file)
        self.host_key = paramiko.Ed25519Key.from_private_key_file(str(host_key_file))
        self.root, self.user, self.password, self.client_key = root, user, password, client_key
        self.on_list, self.posix_rename, self.read_limit = on_list, posix_rename, read_limit
        self.events: list[tuple[str, str]] = []
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._sessions: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def known_hosts_line(self) -> str:
        return f"[{HOST}]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        session = paramiko.Transport(conn)
        # A client that hangs up on purpose (push finding no credentials) can reset the
        # connection; this server's paramiko would log that where the command's output
        # is read.
        session.set_log_channel("tests.remote.sftp")
        self._sessions.append(session)
        session.add_server_key(self.host_key)
        session.set_subsystem_handler(
            "sftp",
            paramiko.SFTPServer,
            _Folder,
            root=self.root,
            events=self.events,
            on_list=self.on_list,
            posix=self.posix_rename,
            read_limit=self.read_limit,
        )
        try:
            session.start_server(server=_Login(self.user, self.password, self.client_key))
        except (paramiko.SSHException, EOFError, OSError):
            session.close()

    def __enter__(self) -> SftpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for session in self._sessions:
            session.close()


# -- faults -------------------------------------------------------------------------------

PASV = re.compile(rb"^227 .*?\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", re.M)


class FaultProxy:
    """A TCP relay to ``port`` that cuts or stalls connections mid-transfer.

    ``fault(kind, after, direction, times)``: the next ``times`` transfers (``None``: all)
    that carry more than ``after`` bytes server-to-client (``"down"``) or client-to-
    server (``"up"``) are cut (``"cut"``: both sides closed) or stalled (``"stall"``:
    nothing more is relayed) right there. A transfer is a whole connection, or with
    ``ftp=True`` one data connection. ``transfers`` counts those carried.
    """

    def __init__(self, port: int, ftp: bool = False) -> None:
        self.target, self.ftp = port, ftp
        self.kind: str | None = None
        self.after = 0
        self.direction = "down"
        self.times: int | None = None
        self.transfers = 0
        self.faults = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        listener = self._listen()
        self.port = listener.getsockname()[1]
        self._spawn(self._accept, listener, self.target, not ftp)

    def fault(self, kind: str, after: int, direction: str = "down", times: int | None = None):
        self.kind, self.after, self.direction, self.times = kind, after, direction, times
        return self

    def _listen(self) -> socket.socket:
        listener = socket.create_server((HOST, 0))
        listener.settimeout(0.05)
        self._sockets.append(listener)
        return listener

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    def _accept(self, listener: socket.socket, port: int, faulty: bool, once: bool = False):
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection((HOST, port))
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            if faulty:
                with self._lock:
                    self.transfers += 1
            control = self.ftp and not faulty
            self._spawn(self._pump, client, server, faulty and self.direction == "up", False)
            self._spawn(self._pump, server, client, faulty and self.direction == "down", control)
            if once:
                return

    def _should_fault(self) -> bool:
        with self._lock:
            if self.kind is None or (self.times is not None and self.faults >= self.times):
                return False
            self.faults += 1
            return True

    def _pump(self, source: socket.socket, sink: socket.socket, watched: bool, control: bool):
        carried, pending = 0, b""
        try:
            while data := source.recv(65536):
                if control:
                    pending += data
                    if b"\n" not in pending:
                        continue
                    data, _, pending = pending.rpartition(b"\n")
                    data = PASV.sub(self._passive, data + b"\n")
                if watched and self.kind and carried + len(data) > self.after:
                    if self._should_fault():
                        sink.sendall(data[: max(0, self.after - carried)])
                        if self.kind == "stall":
                            self._stop.wait()
                        break
                    watched = False
                carried += len(data)
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def _passive(self, match: re.Match[bytes]) -> bytes:
        port = int(match[5]) * 256 + int(match[6])
        listener = self._listen()
        self._spawn(self._accept, listener, port, True, True)
        mine = listener.getsockname()[1]
        return b"227 Entering Passive Mode (127,0,0,1,%d,%d)" % (mine // 256, mine % 256)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


# -- one customer server, ready for a tenant or a push --------------------------------------


class Remote:
    """A customer's server for ``protocol`` with a folder ``/in``, maybe behind a proxy."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        base: Path,
        protocol: str,
        password: str,
        proxy: bool = False,
        **options: Any,
    ) -> None:
        self.protocol = protocol
        self.stack = stack  # what a test puts in front of the server closes with it
        self.root = base / "server"
        self.folder = self.root / "in"
        self.folder.mkdir(parents=True)
        self.known_hosts = self.ca_file = None
        if protocol == "sftp":
            server: Any = SftpServer(self.root, "acme", password, base / "ssh_host_key", **options)
        else:
            tls = tls_certificate(base) if protocol == "ftps" else None
            self.ca_file = tls[0] if tls else None
            server = FtpServer(self.root, "acme", password, tls=tls, **options)
        self.server = stack.enter_context(server)
        self.proxy: FaultProxy | None = None
        self.port = server.port
        if proxy:
            assert protocol != "ftps", "TLS hides the passive replies the proxy rewrites"
            self.proxy = stack.enter_context(FaultProxy(server.port, ftp=protocol == "ftp"))
            self.port = self.proxy.port
        if protocol == "sftp":
            self.known_hosts = base / "known_hosts"
            line = server.known_hosts_line().replace(f":{server.port} ", f":{self.port} ")
            self.known_hosts.write_text(line)

    @property
    def url(self) -> str:
        return f"{self.protocol}://acme@{HOST}:{self.port}/in"

    def tenant_settings(self, **settings: Any) -> dict[str, Any]:
        """The tenant keys for a home on this server (the password from ``ACME_PASSWORD``)."""
        own = {
            "home": self.url,
            "remote_password_env": "ACME_PASSWORD",
            "stable_seconds": 0.2,
            "remote_retries": 2,
            "remote_timeout": 2,
        }
        if self.known_hosts:
            own["known_hosts"] = str(self.known_hosts)
        if self.ca_file:
            own["ca_file"] = str(self.ca_file)
        return {**own, **settings}

    def files(self) -> list[str]:
        """Every name in the folder, hidden ones (uploads under way) included."""
        return sorted(p.name for p in self.folder.iterdir())


def starter(stack: contextlib.ExitStack, folder: Path, password: str) -> Callable[..., Remote]:
    """``start(protocol, proxy=False, **server_options)``: a new :class:`Remote` in
    ``folder`` each call, closed with ``stack`` (what the tests' ``remote`` fixtures give).
    """
    count = iter(range(100))

    def start(protocol: str, proxy: bool = False, **options: Any) -> Remote:
        return Remote(stack, folder / f"remote-{next(count)}", protocol, password, proxy, **options)

    return start
