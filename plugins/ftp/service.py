"""The built-in FTP and FTPS servers: every tenant with a local home, from one process.

(The ``ftp-server`` plugin, :mod:`ftp_server`, builds them when ``serve`` starts one.)

``ftp`` speaks plain FTP and allows explicit TLS (``AUTH TLS``); ``ftps`` requires
explicit TLS on the control connection before the login and on every data connection.
Both run on pyftpdlib with one thread per connection, so a slow login or transfer
stalls no one else, and both use the process's :class:`~listferry.serve.runtime.ServerRuntime`:
connections are admitted by its guard, logins checked by its gatekeeper. Their TLS
certificate comes from :mod:`tls_files`, which reads it again when it changes on disk.

A tenant sees its home as ``/``: every path goes through :func:`~listferry.serve.jail.jail`,
symbolic links are not served, and uploads still in progress are neither listed nor
reachable. An upload lands under a hidden temporary name and is renamed only when the
transfer ended cleanly. Appending, resuming an upload, ``STOU``, ``SITE CHMOD`` and
data connections to any address but the client's own (FTP bounce) are refused.
"""

from __future__ import annotations

import io
import os
import posixpath
import select
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

from OpenSSL import SSL

with warnings.catch_warnings():
    # pyftpdlib 2 still imports asyncore/asynchat (deprecated in Python 3.11): its
    # concern, not the operator's, and not a pack author's test output.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.log import logger as pyftpdlib_log
    from pyftpdlib.servers import ThreadedFTPServer

from listferry import ListferryError
from listferry.config import Tenant
from listferry.serve.jail import (
    BadName,
    OutsideHome,
    is_upload_in_progress,
    jail,
    upload_temp_name,
    virtual,
)
from listferry.serve.limits import Home, LimitReached, file_mode, folder_mode
from listferry.serve.log import event
from listferry.serve.runtime import ServerRuntime
from listferry_plugins.ftp.tls_files import TLSFiles, watched

#: What a logged-in tenant may do, in pyftpdlib's letters: change folder, list, read,
#: delete, rename, make folders, store, set a file's time.
PERMISSIONS = "elrdfmwT"
#: Commands refused outright: they bypass atomic uploads or the files' permissions.
UNSUPPORTED = {
    "APPE": "appending is not supported: upload the whole file again with STOR",
    "STOU": "STOU is not supported: upload with STOR and a name",
    "SITE CHMOD": "changing permissions is not allowed",
    "REIN": "REIN is not supported: reconnect to log in again",
}
#: Commands that open a data connection; refused once the server is stopping.
PASSIVE_OR_ACTIVE = frozenset({"PASV", "EPSV", "PORT", "EPRT"})
DATA_COMMANDS = PASSIVE_OR_ACTIVE | {"LIST", "NLST", "MLSD", "RETR", "STOR"}
TCP_CLOSE = 7  # Linux's TCP state after a reset (an orderly close leaves CLOSE_WAIT)


class NotServed(PermissionError):
    """A path the tenant may not reach; ``code`` and the message are the reply it gets."""

    code = "550"


class NameNotAllowed(NotServed):
    """A name with a control character in it: 553, "file name not allowed" (RFC 959)."""

    code = "553"


class TenantFS(AbstractedFS):
    """The tenant's home as ``/``; symlinks and uploads in progress are not served."""

    def ftp2fs(self, ftppath: str) -> str:
        home = Path(self.root)
        try:
            real = jail(home, ftppath, self.cwd)
        except BadName as exc:
            raise NameNotAllowed(str(exc)) from None
        except OutsideHome as exc:
            raise NotServed(str(exc)) from None
        wanted = "/" + posixpath.normpath(posixpath.join("/", self.cwd, ftppath)).lstrip("/")
        if virtual(home, real) != wanted:
            raise NotServed(f"{ftppath!r} goes through a symbolic link, which is not served")
        if any(is_upload_in_progress(part) for part in wanted.split("/")):
            raise NotServed(f"{ftppath!r}: no such file")
        return str(real)

    def fs2ftp(self, fspath: str) -> str:
        return virtual(Path(self.root), Path(fspath)) if self.validpath(fspath) else "/"

    def chdir(self, path: str) -> None:
        # Never os.chdir(): the process's folder is shared by every connection's thread.
        if not os.path.isdir(path):
            raise NotADirectoryError(20, "Not a directory")
        self.cwd = self.fs2ftp(path)

    def listdir(self, path: str) -> list[str]:
        return [
            name
            for name in os.listdir(path)
            if not is_upload_in_progress(name) and not os.path.islink(os.path.join(path, name))
        ]

    listdirinfo = listdir

    def open(self, filename: str, mode: str) -> Any:
        if mode == "wb":
            session = self.cmd_channel
            umask = session.runtime.settings.umask
            return CappedUpload(filename, session.limits(), session.tenant, file_mode(umask))
        if mode != "rb":
            raise PermissionError(13, "Permission denied")
        return open(filename, mode, opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW))

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o700)
        os.chmod(path, folder_mode(self.cmd_channel.runtime.settings.umask))

    def chmod(self, path: str, mode: int) -> None:
        raise PermissionError(13, "Permission denied")


class CappedUpload(io.FileIO):
    """An upload's temporary file, made new with ``mode``, that refuses to grow past the
    tenant's limits: the write raises :class:`LimitReached` and ``refused`` says why."""

    def __init__(self, name: str, home: Home, tenant: Tenant, mode: int) -> None:
        flags = os.O_NOFOLLOW | os.O_EXCL
        super().__init__(name, "wb", opener=lambda path, f: os.open(path, f | flags, 0o600))
        os.fchmod(self.fileno(), mode)
        self.home, self.tenant = home, tenant
        self.size = 0
        self.refused: str | None = None

    def write(self, data: Any) -> int:
        try:
            self.home.grow(self.tenant, len(data), self.size + len(data))
        except LimitReached as exc:
            self.refused = str(exc)
            raise
        self.size += len(data)
        view = memoryview(data)
        while view:
            view = view[super().write(view) :]
        return len(data)


class Permissions:
    """pyftpdlib's authorizer: fixed permissions. Logins go to the gatekeeper instead."""

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return perm in PERMISSIONS

    def get_perms(self, username: str) -> str:
        return PERMISSIONS

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass


def was_reset(connection: Any) -> bool:
    """Whether the client reset ``connection`` (a data connection that is closing).

    pyftpdlib takes a reset for an orderly end. The reset is the exception being handled
    as the connection closes; TLS may report it as an "unexpected EOF", which is also
    what a close without the TLS goodbye looks like, so there the TCP state decides.
    """
    error = sys.exc_info()[1]
    if isinstance(error, SSL.SysCallError) and error.args[0] == -1:
        try:
            state = connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except (AttributeError, OSError):
            return False
        return state == TCP_CLOSE
    return isinstance(error, OSError | SSL.SysCallError)


class Nothing:
    """A producer with nothing to produce."""

    def more(self) -> bytes:
        return b""


class DataConnection(TLS_DTPHandler):
    """A data connection that keeps an upload only once it really ended."""

    def __init__(self, sock: Any, cmd_channel: TenantSession) -> None:
        self.timeout = cmd_channel.idle_timeout
        super().__init__(sock, cmd_channel)

    def push(self, data: bytes) -> None:
        # Pushing nothing (an empty NLST) would reach TLS as a zero-byte write, which
        # pyOpenSSL reports as the client's EOF: the listing would end before it began.
        if data:
            super().push(data)
        else:
            self.push_with_producer(Nothing())

    def handle_error(self) -> None:
        # A write past the tenant's limits is a refusal, not an error: close() answers it
        # (pyftpdlib's TLS handler would close without calling close() here).
        if self.receive and getattr(self.file_obj, "refused", None):
            self.close()
        else:
            super().handle_error()

    def close(self) -> None:
        # Decide an upload's fate before the "226 Transfer complete" reply goes out, so a
        # client that got the reply finds its file.
        upload = self.receive and self.file_obj is not None and not self.file_obj.closed
        refused = getattr(self.file_obj, "refused", None) if upload else None
        if refused:
            self.file_obj.close()
            self.cmd_channel.refuse_upload(self.file_obj.name, refused)
            self._resp = (f"552 Upload refused: {refused}.", pyftpdlib_log.info)
        elif upload and self.transfer_finished:
            self.file_obj.close()
            if was_reset(self.socket):
                problem = "the data connection was reset"
            else:
                problem = self.cmd_channel.finish_upload(self.file_obj.name)
            if problem:
                self.transfer_finished = False
                self._resp = (f"426 Upload not kept: {problem}.", pyftpdlib_log.info)
        super().close()


class TenantSession(TLS_FTPHandler):
    """One client's control connection. A subclass per server sets the class settings."""

    runtime: ServerRuntime
    protocol: str
    tls_always: bool
    tls: TLSFiles
    tls_session_id: bytes
    idle_timeout: float
    login_timeout: float
    upload_settle = 0.2  # seconds: see _client_gone

    authorizer = Permissions()
    abstracted_fs = TenantFS
    dtp_handler = DataConnection
    banner = "listferry ready."
    timeout = 0  # the idle timer starts in the connection's own thread: see add_channel
    auth_failed_timeout = 0  # the gatekeeper delays failed logins
    permit_foreign_addresses = False
    permit_privileged_ports = False
    proto_cmds: ClassVar[dict[str, dict[str, Any]]] = {
        **TLS_FTPHandler.proto_cmds,
        **{name: {**TLS_FTPHandler.proto_cmds[name], "perm": None} for name in UNSUPPORTED},
    }

    def __init__(self, conn: Any, server: Listener, ioloop: Any = None) -> None:
        self.tenant: Tenant | None = None
        self.home = Path("/nonexistent")  # set at login
        self._admitted: str | None = server.admitting  # the address the guard counted
        self._uploads: dict[str, str] = {}  # temporary name -> real name
        self._counted: Tenant | None = None  # the tenant whose session this one counts as
        super().__init__(conn, server, ioloop)

    # -- connection lifetime

    @classmethod
    def get_ssl_context(cls) -> SSL.Context:
        # pyftpdlib asks once per connection, which keeps it for its data connections:
        # a renewed certificate is served from the next connection on.
        return cls.tls.context(cls.tls_session_id)

    def handle(self) -> None:
        self.server.track(self)
        super().handle()

    def add_channel(self, map: Any = None, events: Any = None) -> None:
        super().add_channel(map, events)
        # pyftpdlib starts the idle timer in the accepting thread's loop; start it in the
        # connection's own loop instead, with the shorter time allowed to log in.
        if self._idler is None and self.ioloop is not self.server.ioloop and not self._closed:
            self._restart_idle_timer(self.login_timeout)

    def _restart_idle_timer(self, seconds: float) -> None:
        if self._idler is not None and not self._idler.cancelled:
            self._idler.cancel()
        self.timeout = seconds
        if seconds:
            self._idler = self.ioloop.call_later(
                seconds, self.handle_timeout, _errback=self.handle_error
            )

    def close(self) -> None:
        if self._counted is not None:
            self.runtime.limits.log_out(self._counted)
            self._counted = None
        if self._admitted is not None:
            self.runtime.guard.release(self._admitted, self.protocol, self.authenticated)
            self._admitted = None
            self.server.untrack(self)
        super().close()
        for temp in list(self._uploads):  # a STOR whose data connection never came
            self.on_incomplete_file_received(temp)

    def _on_dtp_close(self) -> None:
        super()._on_dtp_close()
        self.server.transfer_ended()

    def transferring(self) -> bool:
        return any(
            getattr(self, name, None) is not None
            for name in ("data_channel", "_in_dtp_queue", "_out_dtp_queue")
        )

    # -- commands

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        try:
            super().pre_process_command(line, cmd, arg)
        except NotServed as exc:
            self._refuse(cmd, str(exc), f"{exc.code} {exc}.", path=arg)

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        if cmd in UNSUPPORTED:
            self._refuse(cmd, UNSUPPORTED[cmd], f"502 {UNSUPPORTED[cmd].capitalize()}.")
        elif cmd in PASSIVE_OR_ACTIVE and self.tls_data_required and not self._prot:
            reason = "data connections must be protected by TLS"
            self._refuse(cmd, reason, f"521 {reason.capitalize()}: send PBSZ 0 and PROT P.")
        elif cmd in DATA_COMMANDS and self.server.stopping.is_set():
            self.respond("421 The server is shutting down; try again shortly.")
            self.close_when_done()
        else:
            super().process_command(cmd, *args, **kwargs)

    def ftp_USER(self, line: str) -> None:
        if self.authenticated:
            self.respond("503 Already logged in: reconnect to log in as someone else.")
            return
        tenant = self.runtime.gatekeeper.tenants.get(line)
        required = (
            self.tls_always
            or self.runtime.settings.require_tls
            or (tenant is not None and tenant.require_tls)
        )
        if required and not self._ssl_established:
            reply = "534 TLS is required: send AUTH TLS before USER, then log in."
            self._refuse("USER", "TLS required before login", reply, user=line)
            return
        self.tls_data_required = required
        super().ftp_USER(line)

    def ftp_PASS(self, line: str) -> None:
        if self.authenticated:
            self.respond("503 Already logged in.")
            return
        if not self.username:
            self.respond("503 Send USER first.")
            return
        full = self.runtime.limits.full(self.username, self.runtime.gatekeeper.tenants)
        if full:
            self._refuse("PASS", full, f"421 Refused: {full}; try again later.")
            self.close_when_done()
            return
        tenant = self.runtime.gatekeeper.password(
            self.username, line, self.remote_ip, self.protocol
        )
        if tenant is None:
            self.handle_auth_failed("Login incorrect.", "")
            return
        refusal = self.runtime.limits.log_in(tenant)
        if refusal:
            self._refuse("PASS", refusal, f"421 Refused: {refusal}; try again later.")
            self.close_when_done()
            return
        self._counted = tenant
        self.runtime.guard.logged_in(self.remote_ip, self.protocol)
        self.tenant, self.home = tenant, self.runtime.home(tenant)
        self.home.mkdir(parents=True, exist_ok=True)
        self.handle_auth_success(str(self.home), "", "Logged in: your home is /.")
        self._restart_idle_timer(self.idle_timeout)

    def _make_eport(self, ip: str, port: int) -> None:
        client = self.remote_ip.removeprefix("::ffff:")
        if ip != client:
            reply = f"501 Data connections go only to your own address ({client}), not {ip}."
            self._refuse("PORT/EPRT", f"data connection to a foreign address {ip}", reply)
            return
        super()._make_eport(ip, port)

    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
        if self._restart_position:
            self._restart_position = 0
            reason = "resuming an upload is not supported"
            reply = f"554 {reason.capitalize()}: send the whole file again, without REST."
            self._refuse("STOR", reason, reply, path=self.fs.fs2ftp(file))
            return None
        if os.path.isdir(file):
            self.respond("550 That name is a folder.")
            return None
        if self._refused_by_limits("STOR", file, folder=False):
            return None
        folder, name = os.path.split(file)
        temp = os.path.join(folder, upload_temp_name(name))
        self._uploads[temp] = file
        started = super().ftp_STOR(temp, mode)
        if started is None:
            self._uploads.pop(temp, None)
        return started

    def ftp_MKD(self, path: str) -> str | None:
        if self._refused_by_limits("MKD", path, folder=True):
            return None
        return super().ftp_MKD(path)

    def ftp_RNTO(self, path: str) -> tuple[str, str] | None:
        source = self._rnfr
        if self.tenant is not None and source and os.path.isdir(source):
            try:
                self.limits().may_move(self.tenant, Path(source), Path(path))
            except LimitReached as exc:
                self._rnfr = None
                self._refuse("RNTO", str(exc), f"552 Refused: {exc}.", path=self.fs.fs2ftp(path))
                return None
        return super().ftp_RNTO(path)

    def limits(self) -> Home:
        assert self.tenant is not None
        return self.runtime.limits.home(self.tenant)

    def _refused_by_limits(self, command: str, path: str, folder: bool) -> bool:
        """Whether the tenant's limits refuse a new file (or folder) ``path``: then 552."""
        if self.tenant is None:
            return False
        try:
            if folder:
                self.limits().may_add(self.tenant, Path(path), folder=True)
            else:
                self.limits().may_upload(self.tenant, Path(path))
        except LimitReached as exc:
            self._refuse(command, str(exc), f"552 Refused: {exc}.", path=self.fs.fs2ftp(path))
            return True
        return False

    # -- transfers

    def refuse_upload(self, temp: str, reason: str) -> None:
        """An upload passed a limit: the part received is removed, and the refusal logged."""
        final = self._uploads.pop(temp, None)
        self._forget(temp)
        if final is not None:
            self._upload_event(self._name(final), "refused", reason)

    def _forget(self, temp: str) -> None:
        """Remove an upload's temporary file, and its bytes from the home's usage."""
        try:
            size = os.lstat(temp).st_size
        except FileNotFoundError:
            return
        Path(temp).unlink(missing_ok=True)
        if self.tenant is not None:
            self.limits().shrink(size)

    def finish_upload(self, temp: str) -> str | None:
        """Give a completed upload its real name; return why it was not kept, or None."""
        final = self._uploads.pop(temp, None)
        if final is None:
            return None
        name = self._name(final)
        problem = "the client disconnected before the upload ended" if self._client_gone() else None
        if problem is None:
            try:
                replaced = os.lstat(final).st_size if os.path.lexists(final) else 0
                os.replace(temp, final)
            except OSError as exc:
                problem = f"cannot store the file: {exc.strerror}"
        if problem:
            self._forget(temp)
            self._upload_event(name, "incomplete", problem)
            return problem
        if self.tenant is not None:
            self.limits().shrink(replaced)
        self._upload_event(name, "ok", None, os.path.getsize(final))
        if self.tenant is not None:
            self.runtime.uploads.received(self.tenant, name)
        return None

    def on_file_received(self, file: str) -> None:
        self.finish_upload(file)  # a no-op unless pyftpdlib closed without DataConnection.close

    def on_incomplete_file_received(self, file: str) -> None:
        final = self._uploads.pop(file, None)
        if final is not None:
            self._forget(file)
            self._upload_event(self._name(final), "incomplete", "the transfer was cut off")

    def _name(self, real: str) -> str:
        """``real``'s name relative to the tenant's home, as file_received takes it."""
        return virtual(self.home, Path(real)).lstrip("/")

    def on_file_sent(self, file: str) -> None:
        self._download_event(file, "ok")

    def on_incomplete_file_sent(self, file: str) -> None:
        self._download_event(file, "incomplete")

    def _client_gone(self) -> bool:
        """Whether the client dropped the control connection as its upload ended.

        In FTP the end of an upload is the data connection closing, so a client killed
        mid-upload looks like one that finished, except that it drops its control
        connection too, at the same moment; a client that finished keeps it open to read
        the reply. So the control connection is watched for ``upload_settle`` seconds.
        """
        if self._closed or not self.connected:
            return True
        try:
            with socket.socket(fileno=os.dup(self._fileno)) as raw:
                poller = select.poll()
                poller.register(raw, select.POLLIN)
                readable = poller.poll(self.upload_settle * 1000)
                peek = socket.MSG_PEEK | socket.MSG_DONTWAIT
                return bool(readable) and raw.recv(1, peek) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    # -- logs

    def _refuse(self, command: str, reason: str, reply: str, **fields: str) -> None:
        event(
            "refused",
            protocol=self.protocol,
            tenant=self.tenant and self.tenant.name,
            ip=self.remote_ip,
            command=command,
            reason=reason,
            **{k: v[:200] for k, v in fields.items()},
        )
        self.respond(reply)

    def _upload_event(
        self, name: str, result: str, reason: str | None, size: int | None = None
    ) -> None:
        event(
            "upload",
            protocol=self.protocol,
            tenant=self.tenant and self.tenant.name,
            ip=self.remote_ip,
            file=name,
            bytes=size,
            result=result,
            reason=reason,
        )

    def _download_event(self, file: str, result: str) -> None:
        event(
            "download",
            protocol=self.protocol,
            tenant=self.tenant and self.tenant.name,
            ip=self.remote_ip,
            file=self._name(file),
            result=result,
        )


class Listener(ThreadedFTPServer):
    """pyftpdlib's threaded server, knowing its sessions, with a stop signal of its own.

    (pyftpdlib's stop signal and lock are class attributes, shared by every server.)
    """

    poll_timeout = 0.25  # how soon a connection's thread sees the stop signal
    max_cons = 0  # the runtime's guard limits connections
    max_cons_per_ip = 0

    def __init__(self, address: tuple[str, int], handler: type[TenantSession]) -> None:
        self.admitting = ""  # the address of the session being made (one accepting thread)
        self._exit = threading.Event()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.sessions: set[TenantSession] = set()
        self.changed = threading.Condition()
        super().__init__(address, handler, ioloop=IOLoop())

    def handle_accepted(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        ip = addr[0]
        refusal = self.handler.runtime.guard.admit(ip, self.handler.protocol)
        if refusal is None:
            self.admitting = ip
            super().handle_accepted(sock, addr)
            return
        event("refused", protocol=self.handler.protocol, ip=ip, reason=refusal)
        try:
            sock.setblocking(False)
            sock.send(f"421 Connection refused: {refusal}.\r\n".encode())
        except OSError:
            pass
        sock.close()

    def track(self, session: TenantSession) -> None:
        with self.changed:
            self.sessions.add(session)

    def untrack(self, session: TenantSession) -> None:
        with self.changed:
            self.sessions.discard(session)
            self.changed.notify_all()

    def transfer_ended(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait_for_transfers(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: not any(s.transferring() for s in self.sessions), timeout)

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._active_tasks)


def session_class(runtime: ServerRuntime, protocol: str) -> type[TenantSession]:
    """A :class:`TenantSession` subclass holding one server's settings and TLS files."""
    settings = runtime.settings
    tls = watched(settings.tls_cert, settings.tls_key)
    session_id = b"listferry-" + protocol.encode()
    tls.context(session_id)  # a pair that was never usable stops the server here
    ports = settings.passive_ports
    attributes = {
        "runtime": runtime,
        "protocol": protocol,
        "tls_always": protocol == "ftps",
        "tls": tls,
        "tls_session_id": session_id,
        "passive_ports": list(range(ports[0], ports[1] + 1)) if ports else None,
        "idle_timeout": settings.idle_timeout,
        "login_timeout": settings.handshake_timeout or settings.idle_timeout,
    }
    return type(f"{protocol.upper()}Session", (TenantSession,), attributes)


class FTPServer:
    """One protocol (``ftp`` or ``ftps``): a listener, a thread accepting connections on
    it, and a thread per connection."""

    ACCEPT_POLL = 0.1  # how soon the accepting thread sees the stop signal

    def __init__(self, runtime: ServerRuntime, protocol: str) -> None:
        self.runtime = runtime
        self.protocol = protocol
        self._listener: Listener | None = None
        self._acceptor: threading.Thread | None = None

    def start(self) -> list[tuple[str, str, int]]:
        settings = self.runtime.settings
        port = settings.ftps_port if self.protocol == "ftps" else settings.ftp_port
        if pyftpdlib_log.level == 0:
            pyftpdlib_log.setLevel("ERROR")  # listferry logs its own events
        session = session_class(self.runtime, self.protocol)
        try:
            self._listener = Listener((settings.host, port), session)
        except OSError as exc:
            where = f"{settings.host}:{port}"
            raise ListferryError(f"{self.protocol}: cannot listen on {where}: {exc}") from None
        self._acceptor = threading.Thread(
            target=self._accept, args=(self._listener,), name=f"{self.protocol}-accept"
        )
        self._acceptor.start()
        host, bound = self._listener.address
        return [(self.protocol, host, bound)]

    def _accept(self, listener: Listener) -> None:
        loop = listener.ioloop
        while not listener.stopping.is_set():
            loop.poll(self.ACCEPT_POLL)
            loop.sched.poll()
        listener.close()

    def stop(self, timeout: float) -> None:
        """Stop accepting, let open transfers finish for up to ``timeout`` seconds, then
        close every connection (cutting unfinished uploads) and join the threads."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        deadline = time.monotonic() + timeout
        listener.stopping.set()
        if self._acceptor is not None:
            self._acceptor.join()
        listener.wait_for_transfers(max(0.0, deadline - time.monotonic()))
        listener._exit.set()
        for thread in listener.threads():
            thread.join(max(deadline - time.monotonic(), 2 * listener.poll_timeout))
        listener.ioloop.close()
