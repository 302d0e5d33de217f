"""The built-in FTP and FTPS servers: every tenant with a local home, from one process.

(The ``ftp-server`` plugin, :mod:`ftp_server`, builds them when ``serve`` starts one.)

``ftp`` speaks plain FTP and allows explicit TLS (``AUTH TLS``); ``ftps`` requires
explicit TLS on the control connection before the login and on every data connection,
and, when ``implicit_ftps_port`` is set, also listens there for implicit FTPS (TLS from
the first byte). Where TLS is required, ``PROT C`` is refused and a data connection
without TLS is closed before any data moves; a TLS data connection must resume its
control connection's TLS session (unless the tenant's ``tls_session_reuse`` is off), so
no other client can take over a passive port. Passive ports come only from
``passive_ports`` when it is set, and the login deadline runs from the connection's start.
Behind a load balancer (``proxy_protocol_from``), control and passive data connections
from it start with a PROXY header (:mod:`listferry.serve.proxy`) naming the client, whose
address the guard, the allow lists and the data connections' check then use;
``masquerade_address`` is the address passive replies name.
Both run on pyftpdlib with one thread per connection, so a slow login or transfer
stalls no one else, and both use the process's :class:`~listferry.serve.runtime.ServerRuntime`:
connections are admitted by its guard, logins checked by its gatekeeper. Their TLS
certificate comes from :mod:`tls_files`, which reads it again when it changes on disk.

A tenant sees its home as ``/``: every path goes through :func:`~listferry.serve.jail.jail`,
symbolic links are not served, and uploads still in progress are neither listed nor
reachable. An upload lands under a hidden temporary name and is renamed only when the
transfer ended cleanly. Appending, resuming an upload, ``STOU``, ``SITE CHMOD`` and
data connections to any address but the client's own (FTP bounce) are refused. In
cluster mode the folder here is a spool (:mod:`listferry.serve.spool`): a completed
upload is put into storage before the reply, and a put that fails answers ``451``;
what the spool does not hold is listed, read (a part at a time), removed and renamed in
storage, and a command storage does not answer gets ``451`` and one ``event=storage``
log line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import posixpath
import select
import socket
import stat
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
    from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.log import logger as pyftpdlib_log
    from pyftpdlib.servers import ThreadedFTPServer

from listferry import ListferryError
from listferry.config import Tenant
from listferry.serve.blocks import address_of
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
from listferry.serve.proxy import (
    HEADER_SECONDS,
    NOT_A_BALANCER,
    FirstBytes,
    Header,
    ProxyRefused,
    from_balancer,
    read_header,
)
from listferry.serve.runtime import Homes, ServerRuntime
from listferry.serve.spool import NotKept
from listferry.serve.stored import UNAVAILABLE, Refused, StorageFault
from listferry_plugins.ftp.tls_files import TLSFiles, resumed, watched

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
TRANSFERS = frozenset({"LIST", "NLST", "MLSD", "RETR", "STOR"})
DATA_COMMANDS = PASSIVE_OR_ACTIVE | TRANSFERS
#: accept() errors that mean the process (or system) is out of file descriptors or memory:
#: the listener backs off and tries again rather than closing.
SHORT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF = (0.05, 1.0)  # seconds: the first pause, the longest
TCP_CLOSE = 7  # Linux's TCP state after a reset (an orderly close leaves CLOSE_WAIT)


class NotServed(PermissionError):
    """A path the tenant may not reach; ``code`` and the message are the reply it gets."""

    code = "550"


class NameNotAllowed(NotServed):
    """A name with a control character in it: 553, "file name not allowed" (RFC 959)."""

    code = "553"


class TenantFS(AbstractedFS):
    """The tenant's home as ``/``; symlinks and uploads in progress are not served. In
    cluster mode, what the spool does not hold is looked for in storage."""

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
        if not self.isdir(path):
            raise NotADirectoryError(20, "Not a directory")
        self.cwd = self.fs2ftp(path)

    # What the spool does not hold is looked for in storage (cluster mode; a local home
    # has nothing there). A listing keeps what it found there for the lines it makes.
    _listed: tuple[str, dict[str, os.stat_result]] | None = None

    def _homes(self) -> Homes:
        return self.cmd_channel.runtime.homes

    def forget(self) -> None:
        """Drop what the last listing found (each command looks again)."""
        self._listed = None

    def listdir(self, path: str) -> list[str]:
        try:
            names = [
                name
                for name in os.listdir(path)
                if not is_upload_in_progress(name) and not os.path.islink(os.path.join(path, name))
            ]
            here = True
        except FileNotFoundError:
            names, here = [], False
        stored = self._homes().listing(self.cmd_channel.tenant, Path(path))
        if not here and not stored:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        more = {name: entry.stat() for name, entry in stored.items() if name not in names}
        self._listed = (path, more)
        return names + list(more)

    listdirinfo = listdir

    def format_list(self, basedir: str, listing: list[str], ignore_err: bool = True) -> Any:
        return AbstractedFS.format_list(self._as_listed(basedir), basedir, listing, ignore_err)

    def format_mlsx(
        self, basedir: str, listing: list[str], perms: str, facts: str, ignore_err: bool = True
    ) -> Any:
        return AbstractedFS.format_mlsx(
            self._as_listed(basedir), basedir, listing, perms, facts, ignore_err
        )

    def _as_listed(self, basedir: str) -> Listed:
        known = self._listed[1] if self._listed and self._listed[0] == basedir else {}
        return Listed(self, basedir, known)

    def lstat(self, path: str) -> os.stat_result:
        return self._stat(path, os.lstat)

    def stat(self, path: str) -> os.stat_result:
        return self._stat(path, os.stat)

    def _stat(self, path: str, local: Any) -> os.stat_result:
        try:
            return local(path)
        except FileNotFoundError:
            found = self._homes().lookup(self.cmd_channel.tenant, Path(path))
            if found is None:
                raise
            return found.stat()

    def _is(self, path: str, kind: Any) -> bool:
        try:
            return kind(self.stat(path).st_mode)
        except OSError:
            return False

    def isfile(self, path: str) -> bool:
        return self._is(path, stat.S_ISREG)

    def isdir(self, path: str) -> bool:
        return self._is(path, stat.S_ISDIR)

    def lexists(self, path: str) -> bool:
        try:
            self.lstat(path)
        except OSError:
            return False
        return True

    def getsize(self, path: str) -> int:
        return self.stat(path).st_size

    def getmtime(self, path: str) -> float:
        return self.stat(path).st_mtime

    def open(self, filename: str, mode: str) -> Any:
        session = self.cmd_channel
        if mode == "wb":
            umask = session.runtime.settings.umask
            return CappedUpload(filename, session.limits(), session.tenant, file_mode(umask))
        if mode != "rb":
            raise PermissionError(13, "Permission denied")
        try:
            return open(
                filename, mode, opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW)
            )
        except FileNotFoundError:
            return self._homes().read(session.tenant, Path(filename))

    def mkdir(self, path: str) -> None:
        tenant = self.cmd_channel.tenant
        if self._homes().lookup(tenant, Path(path)):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
        self._homes().provide_folder(tenant, Path(path).parent)
        os.mkdir(path, 0o700)
        os.chmod(path, folder_mode(self.cmd_channel.runtime.settings.umask))

    def rmdir(self, path: str) -> None:
        self._homes().remove_folder(self.cmd_channel.tenant, Path(path))

    def remove(self, path: str) -> None:
        session = self.cmd_channel
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            size = self._homes().remove(session.tenant, Path(path)).size
        else:
            os.remove(path)
        session.limits().shrink(size)
        event(
            "remove",
            protocol=session.protocol,
            tenant=session.tenant.name,
            ip=session.remote_ip,
            file=session._name(path),
        )

    def utime(self, path: str, timeval: float) -> None:
        try:
            os.utime(path, (timeval, timeval))
        except FileNotFoundError:  # a file in storage keeps the time it was stored
            if self._homes().lookup(self.cmd_channel.tenant, Path(path)) is None:
                raise

    def chmod(self, path: str, mode: int) -> None:
        raise PermissionError(13, "Permission denied")

    def rename(self, src: str, dst: str) -> None:
        session = self.cmd_channel
        stored = session.runtime.homes.rename(session.tenant, Path(src), Path(dst))
        if stored:  # cluster mode: renamed into place in storage, or put there
            session.runtime.uploads.received(session.tenant, session._name(dst))


class Listed:
    """The file system as the listing just made saw it: what it found in storage is not
    asked for again, name by name, while its lines are made."""

    def __init__(self, fs: TenantFS, basedir: str, known: dict[str, os.stat_result]) -> None:
        self.fs, self.basedir, self.known = fs, basedir, known

    def lstat(self, path: str) -> os.stat_result:
        found = self._known(path)
        return found if found is not None else self.fs.lstat(path)

    def stat(self, path: str) -> os.stat_result:
        found = self._known(path)
        return found if found is not None else self.fs.stat(path)

    def _known(self, path: str) -> os.stat_result | None:
        folder, name = os.path.split(path)
        return self.known.get(name) if folder == self.basedir else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)


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

    session_checked = False  # see send

    def send(self, data: bytes) -> int:
        # With TLS 1.3, OpenSSL would send data right after its own Finished, before the
        # client's, that is before handle_ssl_established could check the session.
        if self._ssl_requested and not self.session_checked:
            return 0  # kept, and sent once the check passed
        return super().send(data)

    def handle_ssl_established(self) -> None:
        # Before any data moves: a data connection whose TLS session is not its control
        # connection's may be another client that took the passive port.
        session = self.cmd_channel
        if session.tls_session_reuse_required() and not resumed(self.socket):
            reason = (
                "the data connection did not resume the control connection's TLS session "
                "(a client that cannot needs the tenant's tls_session_reuse = false)"
            )
            reply = (
                "522 Data connection refused: your FTPS client must reuse this connection's "
                "TLS session for data (TLS session resumption); if it cannot, ask your "
                "provider to turn the check off for you."
            )
            session.refuse_data(reason, reply)
            self._error = True  # no TLS goodbye: close now
            self.close()
            return
        self.session_checked = True

    def push(self, data: bytes) -> None:
        # Pushing nothing (an empty NLST) would reach TLS as a zero-byte write, which
        # pyOpenSSL reports as the client's EOF: the listing would end before it began.
        if data:
            super().push(data)
        else:
            self.push_with_producer(Nothing())

    def initiate_send(self) -> None:
        # A download (or listing) from storage that stopped answering: 451, and the
        # session logs the download failed with the reason when it hears of the close.
        try:
            super().initiate_send()
        except StorageFault as exc:
            self.cmd_channel.fault = str(exc)
            self._resp = (f"451 Transfer cut short: {UNAVAILABLE}.", pyftpdlib_log.info)
            self.close()

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
            code = "426"
            if was_reset(self.socket):
                problem = "the data connection was reset"
            else:
                problem = self.cmd_channel.finish_upload(self.file_obj.name)
                if isinstance(problem, NotKept):
                    code = "451"
            if problem:
                self.transfer_finished = False
                self._resp = (f"{code} Upload not kept: {problem}.", pyftpdlib_log.info)
        super().close()


class PassivePortsExhausted(OSError):
    """Every port of ``passive_ports`` is in use."""


class PassiveListener(PassiveDTP):
    """A passive data port: from ``passive_ports`` only, and taking a connection only when
    the data protection (``PROT``) is still what it was at ``PASV``/``EPSV`` and TLS is
    there where it is required."""

    def listen(self, num: int) -> None:
        ports = self.cmd_channel.passive_ports
        if ports and self.socket.getsockname()[1] not in ports:
            # pyftpdlib falls back to a random port when the range is in use
            self.close()
            raise PassivePortsExhausted(errno.EADDRINUSE, "no free port in passive_ports")
        super().listen(num)

    def handle_accept(self) -> None:
        try:
            super().handle_accept()
        except OSError as exc:
            if exc.errno not in SHORT_OF_RESOURCES:
                raise
            self.close()
            self.cmd_channel.refuse_data(
                f"cannot open a data connection: {exc.strerror}",
                "425 Cannot open a data connection now; try again shortly.",
            )

    def handle_accepted(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        if from_balancer(addr[0], self.cmd_channel.runtime.settings.proxy_protocol_from):
            try:  # the balancer sends it at once: this connection's thread waits for it
                addr = read_header(sock) or addr
            except ProxyRefused as exc:
                sock.close()
                self.close()
                self.cmd_channel.refuse_data(
                    f"data connection from the balancer {addr[0]}: {exc}",
                    "425 Cannot open a data connection; try again.",
                )
                return
        session = self.cmd_channel
        if address_of(addr[0]) != address_of(session.remote_ip):
            # Someone else at a session's passive port (a port scan): turned away without
            # a word to the session, which goes on waiting for its own client.
            sock.close()
            session.runtime.refused(
                session.protocol, addr[0], "a data connection to another's port"
            )
            return
        problem = session.data_protection_problem()
        if problem is None:
            super().handle_accepted(sock, addr)
            return
        sock.close()
        self.close()
        self.cmd_channel.refuse_data(problem, f"522 Data connection refused: {problem}.")


class TenantSession(TLS_FTPHandler):
    """One client's control connection. A subclass per server sets the class settings."""

    runtime: ServerRuntime
    protocol: str
    tls_always: bool
    tls: TLSFiles
    implicit: bool
    idle_timeout: float
    login_timeout: float
    upload_settle = 0.2  # seconds: see _client_gone
    _data_refused: str | None = None  # why the last data connection was refused

    authorizer = Permissions()
    abstracted_fs = TenantFS
    dtp_handler = DataConnection
    passive_dtp = PassiveListener
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
        self._first = FirstBytes()  # the client's first bytes: a PROXY header?
        self._uploads: dict[str, str] = {}  # temporary name -> real name
        self.fault: str | None = None  # why storage cut the transfer under way short
        self._counted: Tenant | None = None  # the tenant whose session this one counts as
        self._login_deadline: Any = None
        self._data_prot = False  # PROT when the pending data connection was set up
        self._greeted = False  # implicit FTPS: the 220 waits for the TLS handshake
        super().__init__(conn, server, ioloop)
        if server.admitting_port is not None:  # through a balancer: its PROXY header's
            self.remote_ip, self.remote_port = server.admitting, server.admitting_port
        self.tls_data_required = self.tls_always or self.runtime.settings.require_tls

    # -- connection lifetime

    @classmethod
    def get_ssl_context(cls) -> SSL.Context:
        # pyftpdlib asks once per connection, which keeps it for its data connections:
        # a renewed certificate is served from the next connection on. Each connection
        # gets a context of its own, so only its data connections can resume its session.
        return cls.tls.context()

    def handle(self) -> None:
        self.server.track(self)
        if self.implicit:
            self.secure_connection(self.ssl_context)  # TLS from the first byte; 220 after it
        else:
            super().handle()

    def handle_ssl_established(self) -> None:
        if self.implicit and not self._greeted:
            self._greeted = True
            super().handle()

    def add_channel(self, map: Any = None, events: Any = None) -> None:
        super().add_channel(map, events)
        # pyftpdlib starts the idle timer in the accepting thread's loop; start it in the
        # connection's own loop instead, with the login deadline: it runs from now, however
        # busy the client keeps the connection (NOOP does not move it).
        if self._idler is None and self.ioloop is not self.server.ioloop and not self._closed:
            self._restart_idle_timer(self.idle_timeout)
            if self.login_timeout:
                self._login_deadline = self.ioloop.call_later(
                    self.login_timeout, self._login_time_over, _errback=self.handle_error
                )

    def _login_time_over(self) -> None:
        self._login_deadline = None
        if not self.authenticated:
            event(
                "refused",
                protocol=self.protocol,
                ip=self.remote_ip,
                reason=f"no login within {self.login_timeout:g} s",
            )
            self.handle_timeout()

    def _cancel_login_deadline(self) -> None:
        if self._login_deadline is not None and not self._login_deadline.cancelled:
            self._login_deadline.cancel()
        self._login_deadline = None

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
            self.runtime.limits.log_out(self._counted, self.protocol)
            self._counted = None
        self._cancel_login_deadline()
        if self._admitted is not None:
            self.runtime.guard.release(self._admitted, self.protocol, self.authenticated)
            self._admitted = None
            self.server.untrack(self)
        super().close()
        for temp in list(self._uploads):  # a STOR whose data connection never came
            self.on_incomplete_file_received(temp)

    def recv(self, buffer_size: int) -> bytes:
        data: bytes = super().recv(buffer_size)
        # only a balancer may say who a client is (its header, if any, is read already)
        if self._first.verdict is None and self._first.look(data):
            self.runtime.refused(self.protocol, self.remote_ip, NOT_A_BALANCER)
            self.respond(
                "421 Connection refused: a PROXY header is taken from the load balancer only."
            )
            self.close_when_done()
            return b""
        return data

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
        elif cmd in TRANSFERS and not self._data_connection_set_up():
            self.respond("425 Open a data connection first: send PASV, EPSV, PORT or EPRT.")
        else:
            if self.fs is not None:
                self.fs.forget()
            try:
                super().process_command(cmd, *args, **kwargs)
            except Refused as exc:
                self._refuse(cmd, str(exc), f"550 Refused: {exc}.", path=self._shown(args))
            except StorageFault as exc:
                self.storage_failed(cmd, exc, path=self._shown(args))
                self.respond(f"451 {UNAVAILABLE}.")

    def _shown(self, args: tuple[Any, ...]) -> str | None:
        """The client's view of a command's path argument, for the log."""
        if self.fs is None or not args or not isinstance(args[0], str):
            return None
        return self.fs.fs2ftp(args[0])

    def storage_failed(self, command: str, exc: StorageFault, **fields: Any) -> None:
        """Log a command storage did not answer: one line, with the reason."""
        self.runtime.storage_failed(
            self.protocol,
            self.tenant and self.tenant.name,
            self.remote_ip,
            str(exc),
            command=command,
            **fields,
        )

    def _data_connection_set_up(self) -> bool:
        return any(
            getattr(self, name, None) is not None
            for name in ("data_channel", "_dtp_acceptor", "_dtp_connector")
        )

    # -- data connections

    def ftp_PROT(self, line: str) -> None:
        if line.upper() == "C" and self.tls_data_required and self._ssl_established:
            reply = "536 Data connections must be protected by TLS here: PROT C is not allowed."
            self._refuse("PROT", "PROT C where TLS is required", reply)
            return
        was = self._prot
        super().ftp_PROT(line)
        if self._prot != was and self._data_connection_set_up():
            # a data connection set up under the other protection level is not used
            self._shutdown_connecting_dtp()
            if self.data_channel is not None:
                self.data_channel.close()

    def _make_epasv(self, extmode: bool = False) -> None:
        self._data_prot = self._prot
        try:
            super()._make_epasv(extmode)
        except PassivePortsExhausted:
            self._dtp_acceptor = None
            self._refuse(
                "PASV/EPSV",
                "every passive port is in use",
                "425 No data port is free now; try again shortly.",
            )

    def data_protection_problem(self) -> str | None:
        """Why a data connection arriving now may not carry data, or None."""
        if self.tls_data_required and not self._prot:
            return "data connections must be protected by TLS"
        if self._prot != self._data_prot:
            return "the data protection (PROT) changed after PASV/EPSV"
        return None

    def tls_session_reuse_required(self) -> bool:
        return self.tenant is None or self.tenant.tls_session_reuse

    def refuse_data(self, reason: str, reply: str) -> None:
        """Refuse a data connection: log it, reply, drop the transfer that waited for it."""
        self._data_refused = reason  # an upload this cuts was refused, not cut off
        waiting, self._in_dtp_queue = self._in_dtp_queue, None
        if waiting is not None:
            waiting[0].close()
            self.on_incomplete_file_received(waiting[0].name)
        sending, self._out_dtp_queue = self._out_dtp_queue, None
        if sending is not None and sending[2] is not None:
            sending[2].close()
        self._refuse("data connection", reason, reply)

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
        refusal = self.runtime.limits.log_in(tenant, self.protocol)
        if refusal:
            self._refuse("PASS", refusal, f"421 Refused: {refusal}; try again later.")
            self.close_when_done()
            return
        self._counted = tenant
        self.runtime.guard.logged_in(self.remote_ip, self.protocol)
        self.tenant, self.home = tenant, self.runtime.home(tenant)
        self.home.mkdir(parents=True, exist_ok=True)
        self._cancel_login_deadline()
        self.handle_auth_success(str(self.home), "", "Logged in: your home is /.")
        self._restart_idle_timer(self.idle_timeout)

    def _make_eport(self, ip: str, port: int) -> None:
        client = self.remote_ip.removeprefix("::ffff:")
        if ip != client:
            reply = f"501 Data connections go only to your own address ({client}), not {ip}."
            self._refuse("PORT/EPRT", f"data connection to a foreign address {ip}", reply)
            return
        self._data_prot = self._prot
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
        if self.tenant is not None:  # into a folder that only storage holds so far
            self.runtime.homes.provide_folder(self.tenant, Path(file).parent)
        with self._adding():
            if self._refused_by_limits("STOR", file, folder=False):
                return None
            folder, name = os.path.split(file)
            temp = os.path.join(folder, upload_temp_name(name))
            self._uploads[temp] = file
            started = super().ftp_STOR(temp, mode)  # makes the temp file
        if started is None:
            self._uploads.pop(temp, None)
        return started

    def ftp_MKD(self, path: str) -> str | None:
        with self._adding():
            if self._refused_by_limits("MKD", path, folder=True):
                return None
            return super().ftp_MKD(path)

    def _adding(self) -> contextlib.AbstractContextManager[object]:
        """The home's lock from the check of a new file or folder until it is made."""
        return self.limits().adding if self.tenant is not None else contextlib.nullcontext()

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
        if self.tenant is not None:  # first: a count of the home in between errs on the safe side
            self.limits().shrink(size)
        Path(temp).unlink(missing_ok=True)

    def finish_upload(self, temp: str) -> str | NotKept | None:
        """Give a completed upload its real name (in cluster mode: put it into storage);
        return why it was not kept (a :class:`NotKept` when storage did not take it), or
        None."""
        final = self._uploads.pop(temp, None)
        if final is None:
            return None
        name = self._name(final)
        problem: str | NotKept | None = None
        if self._client_gone():
            problem = "the client disconnected before the upload ended"
        else:
            try:
                replaced = os.lstat(final).st_size if os.path.lexists(final) else 0
                size = os.path.getsize(temp)
                assert self.tenant is not None
                homes = self.runtime.homes
                with homes.keeping(self.limits().adding):  # a count never sees neither name
                    homes.keep(self.tenant, Path(temp), Path(final))
            except NotKept as exc:
                problem = exc
                self.limits().shrink(size)  # its temp file is gone already
            except OSError as exc:
                problem = f"cannot store the file: {exc.strerror}"
        if problem:
            self._forget(temp)
            stored = isinstance(problem, NotKept)
            detail = problem.detail if isinstance(problem, NotKept) else problem
            self._upload_event(name, "failed" if stored else "incomplete", detail)
            return problem
        if self.tenant is not None:
            self.limits().shrink(replaced)
        self._upload_event(name, "ok", None, size)
        if self.tenant is not None:
            self.runtime.uploads.received(self.tenant, name)
        return None

    def on_file_received(self, file: str) -> None:
        self.finish_upload(file)  # a no-op unless pyftpdlib closed without DataConnection.close

    def on_incomplete_file_received(self, file: str) -> None:
        final = self._uploads.pop(file, None)
        refused, self._data_refused = self._data_refused, None
        if final is not None:
            self._forget(file)
            if refused:
                self._upload_event(self._name(final), "refused", refused)
            else:
                self._upload_event(self._name(final), "incomplete", "the transfer was cut off")

    def _name(self, real: str) -> str:
        """``real``'s name relative to the tenant's home, as file_received takes it."""
        return virtual(self.home, Path(real)).lstrip("/")

    def on_file_sent(self, file: str) -> None:
        self._download_event(file, "ok")

    def on_incomplete_file_sent(self, file: str) -> None:
        fault, self.fault = self.fault, None
        if fault is None:
            self._download_event(file, "incomplete")
        else:
            self._download_event(file, "failed", fault)

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
        self.runtime.refused_in_session(
            self.protocol,
            self.tenant and self.tenant.name,
            self.remote_ip,
            command=command,
            reason=reason,
            **fields,
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

    def _download_event(self, file: str, result: str, reason: str | None = None) -> None:
        event(
            "download",
            protocol=self.protocol,
            tenant=self.tenant and self.tenant.name,
            ip=self.remote_ip,
            file=self._name(file),
            result=result,
            reason=reason,
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
        self.admitting_port: int | None = None  # its port, when a PROXY header named it
        self._headers_awaited = 0  # connections from the balancer not yet past their header
        self._exit = threading.Event()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.sessions: set[TenantSession] = set()
        self.changed = threading.Condition()
        self._backoff = 0.0  # seconds to pause after accept() found no file descriptor
        super().__init__(address, handler, ioloop=IOLoop())

    def handle_accept(self) -> None:
        try:
            super().handle_accept()
        except OSError as exc:
            if exc.errno not in SHORT_OF_RESOURCES:
                raise
            # Out of file descriptors: the connection waits in the backlog. Pause this
            # accepting thread (longer each time), then try again; never close the port.
            first, longest = ACCEPT_BACKOFF
            if not self._backoff:
                event(
                    "refused",
                    level=logging.WARNING,
                    protocol=self.handler.protocol,
                    reason=f"cannot accept connections: {exc.strerror}; retrying",
                )
            self._backoff = min(longest, self._backoff * 2) if self._backoff else first
            self.stopping.wait(self._backoff)
        else:
            self._backoff = 0.0

    def _loop(self, handler: TenantSession) -> None:
        if handler._closed:
            # The client hung up before this thread began (a balancer's health check
            # does): its file descriptor is closed, and its number may already be
            # another's. pyftpdlib would register it in this thread's poller anyway.
            return
        try:
            super()._loop(handler)
        except OSError as exc:
            if exc.errno not in SHORT_OF_RESOURCES:
                raise
            # no file descriptor for the connection's own poller: drop the connection
            event(
                "refused", protocol=self.handler.protocol, ip=handler.remote_ip, reason=exc.strerror
            )
            handler.close()

    def handle_accepted(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        settings = self.handler.runtime.settings
        if not from_balancer(addr[0], settings.proxy_protocol_from):
            self.admit(sock, addr)
        elif self._headers_awaited >= settings.max_prelogin_connections:
            self.handler.runtime.refused(
                self.handler.protocol, addr[0], "too many connections waiting for their header"
            )
            sock.close()
        else:
            self._headers_awaited += 1
            HeaderWait(self, sock, addr)

    def header_read(self, wait: HeaderWait, source: tuple[str, int] | None) -> None:
        """The balancer's connection ``wait`` sent its header: the client's address, or
        None for the balancer's own connection."""
        self._headers_awaited -= 1
        if source is None:
            self.admit(wait.sock, wait.addr)
        else:
            self.admit(wait.sock, source, through=True)

    def header_refused(self, wait: HeaderWait, reason: str | None) -> None:
        """The balancer's connection ``wait`` is refused (logged, with the ``reason``) or,
        with None, dropped as the server stops."""
        self._headers_awaited -= 1
        if reason is not None:
            self.handler.runtime.refused(self.handler.protocol, wait.addr[0], reason)
        wait.sock.close()

    def admit(self, sock: socket.socket, addr: tuple[str, int], through: bool = False) -> None:
        """Admit (or refuse) the client at ``addr``; ``through``: through a balancer."""
        ip = addr[0]
        refusal = self.handler.runtime.guard.admit(ip, self.handler.protocol)
        if refusal is None:
            self.admitting = ip
            self.admitting_port = addr[1] if through else None
            super().handle_accepted(sock, addr)
            return
        self.handler.runtime.refused(self.handler.protocol, ip, refusal)
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


class HeaderWait:
    """A connection from the balancer, in the accepting thread's loop until its PROXY
    header has come (at most :data:`~listferry.serve.proxy.HEADER_SECONDS`): the
    listener then admits the client the header names. Nothing of the client's is read."""

    def __init__(self, listener: Listener, sock: socket.socket, addr: tuple[str, int]) -> None:
        self.listener, self.sock, self.addr = listener, sock, addr
        self.header = Header()
        self._fd = sock.fileno()
        sock.setblocking(False)
        listener.ioloop.register(self._fd, self, listener.ioloop.READ)
        self._timer = listener.ioloop.call_later(
            HEADER_SECONDS, self._refuse, f"no PROXY header within {HEADER_SECONDS:g} s"
        )

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read_event(self) -> None:
        try:
            data = self.sock.recv(self.header.wants())
        except BlockingIOError:
            return
        except OSError as exc:
            self._refuse(f"the connection failed: {exc.strerror or exc}")
            return
        if not data:
            self._refuse("the connection closed before its PROXY header ended")
            return
        try:
            self.header.feed(data)
        except ProxyRefused as exc:
            self._refuse(str(exc))
            return
        if not self.header.wants():
            self._end()
            self.listener.header_read(self, self.header.source)

    def handle_close(self) -> None:
        self._refuse("the connection closed before its PROXY header ended")

    def handle_error(self) -> None:
        self._refuse(f"the PROXY header could not be read: {sys.exc_info()[1]}")

    def _refuse(self, reason: str) -> None:
        if self._end():
            self.listener.header_refused(self, f"from the balancer: {reason}")

    @property
    def _fileno(self) -> int:  # what the loop sorts by when it closes
        return self._fd

    def close(self) -> None:
        """The server stops: drop the connection, saying nothing."""
        if self._end():
            self.listener.header_refused(self, None)

    def _end(self) -> bool:
        """Leave the loop; False when already gone."""
        if self._fd < 0:
            return False
        self.listener.ioloop.unregister(self._fd)
        self._fd = -1
        if not self._timer.cancelled:
            self._timer.cancel()
        return True


def session_class(
    runtime: ServerRuntime, protocol: str, implicit: bool = False
) -> type[TenantSession]:
    """A :class:`TenantSession` subclass holding one server's settings and TLS files."""
    settings = runtime.settings
    tls = watched(settings.tls_cert, settings.tls_key)
    tls.context()  # a pair that was never usable stops the server here
    ports = settings.passive_ports
    attributes = {
        "runtime": runtime,
        "protocol": protocol,
        "tls_always": protocol == "ftps",
        "tls": tls,
        "implicit": implicit,
        "passive_ports": range(ports[0], ports[1] + 1) if ports else None,
        "masquerade_address": settings.masquerade_address or None,
        "idle_timeout": settings.idle_timeout,
        "login_timeout": settings.handshake_timeout or settings.idle_timeout,
    }
    name = f"{protocol.upper()}{'Implicit' if implicit else ''}Session"
    return type(name, (TenantSession,), attributes)


class FTPServer:
    """One protocol (``ftp`` or ``ftps``): a listener (for ``ftps``, a second one for
    implicit FTPS when ``implicit_ftps_port`` is set), a thread accepting connections on
    each, and a thread per connection."""

    ACCEPT_POLL = 0.1  # how soon the accepting thread sees the stop signal

    def __init__(self, runtime: ServerRuntime, protocol: str) -> None:
        self.runtime = runtime
        self.protocol = protocol
        self._listeners: list[tuple[Listener, threading.Thread]] = []

    def start(self) -> list[tuple[str, str, int]]:
        settings = self.runtime.settings
        if pyftpdlib_log.level == 0:
            pyftpdlib_log.setLevel("ERROR")  # listferry logs its own events
        ports = [
            (self.protocol, settings.ftps_port if self.protocol == "ftps" else settings.ftp_port)
        ]
        if self.protocol == "ftps" and settings.implicit_ftps_port is not None:
            ports.append(("ftps-implicit", settings.implicit_ftps_port))
        started = []
        for name, port in ports:
            session = session_class(self.runtime, self.protocol, implicit=name == "ftps-implicit")
            try:
                listener = Listener((settings.host, port), session)
            except OSError as exc:
                self.stop(0)
                where = f"{settings.host}:{port}"
                raise ListferryError(f"{name}: cannot listen on {where}: {exc}") from None
            acceptor = threading.Thread(
                target=self._accept, args=(listener,), name=f"{name}-accept"
            )
            acceptor.start()
            self._listeners.append((listener, acceptor))
            host, bound = listener.address
            started.append((name, host, bound))
        return started

    def _accept(self, listener: Listener) -> None:
        loop = listener.ioloop
        while not listener.stopping.is_set():
            loop.poll(self.ACCEPT_POLL)
            loop.sched.poll()
        listener.close()

    def stop(self, timeout: float) -> None:
        """Stop accepting, let open transfers finish for up to ``timeout`` seconds, then
        close every connection (cutting unfinished uploads) and join the threads."""
        listeners, self._listeners = self._listeners, []
        deadline = time.monotonic() + timeout
        for listener, acceptor in listeners:
            listener.stopping.set()
            acceptor.join()
        for listener, _acceptor in listeners:
            listener.wait_for_transfers(max(0.0, deadline - time.monotonic()))
        for listener, _acceptor in listeners:
            listener._exit.set()
            for thread in listener.threads():
                thread.join(max(deadline - time.monotonic(), 2 * listener.poll_timeout))
            listener.ioloop.close()
