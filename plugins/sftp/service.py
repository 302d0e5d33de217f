"""The built-in SFTP server: every tenant with a local home, from one process.

(The ``sftp-server`` plugin, :mod:`sftp_server`, builds it when ``serve`` starts it.)

paramiko speaks SSH; this module decides who gets in: only through the runtime's
gatekeeper, from an address on the tenant's allow list, with a password or one of the
tenant's keys. What a logged-in tenant may do with files is :mod:`sftp_files`; the
SFTP protocol loop itself is :mod:`sftp_session`.

Only the ``sftp`` subsystem on ``session`` channels is served: no shell, exec, pty or
forwarding. A connection must log in within ``handshake_timeout`` seconds and is
closed after ``idle_timeout`` seconds without an SFTP request (0 turns either off).
A connection from a load balancer (``proxy_protocol_from``) is read for its PROXY header
(:mod:`listferry.serve.proxy`) in its own thread, and the client it names is admitted;
a client whose first bytes are a PROXY header is refused.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paramiko

from listferry.config import Tenant
from listferry.serve.log import event, log
from listferry.serve.proxy import (
    NOT_A_BALANCER,
    FirstBytes,
    ProxyRefused,
    from_balancer,
    read_header,
)
from listferry.serve.runtime import ServerRuntime
from listferry_plugins.sftp.files import PROTOCOL, TenantFiles
from listferry_plugins.sftp.session import SftpSession

#: How much a client may send before the server's SFTP thread has caught up. The 2 MB
#: paramiko (and OpenSSH) default stalls a fast upload; much more only costs memory.
WINDOW_SIZE = 8 * 2**20
#: The largest SSH packet a client may send us: one 255 KB write request fits in one.
MAX_PACKET_SIZE = 2**18
#: SFTP sessions (each one thread) a connection may have open at once.
MAX_SESSIONS = 4
#: Algorithms paramiko still offers that a hardened server should not.
WEAK_ALGORITHMS = {
    "ciphers": ["aes128-cbc", "aes192-cbc", "aes256-cbc", "3des-cbc"],
    "macs": ["hmac-sha1", "hmac-md5", "hmac-sha1-96", "hmac-md5-96"],
    "kex": [
        "diffie-hellman-group1-sha1",
        "diffie-hellman-group14-sha1",
        "diffie-hellman-group-exchange-sha1",
    ],
}
#: What the server says it is: no library, no version (paramiko would send its own).
SSH_VERSION = "SSH-2.0-listferry"
#: paramiko's own log, silent unless LISTFERRY_DEBUG is set: our events say what happened.
SSH_LOG = "listferry.server.ssh"


# -- the server ----------------------------------------------------------------------------


class SftpServer:
    """One listening socket; a paramiko transport and a thread per connection."""

    def __init__(self, runtime: ServerRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._transfers_done = threading.Condition(self._lock)
        self._transfers = 0
        self._transports: set[paramiko.Transport] = set()
        self._threads: set[threading.Thread] = set()
        self._listener: socket.socket | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._host_key: paramiko.PKey | None = None
        self._headers_awaited = 0  # connections from the balancer not yet past their header

    def start(self) -> list[tuple[str, str, int]]:
        self._host_key = paramiko.PKey.from_path(self.settings.ssh_host_key)
        debug = bool(os.environ.get("LISTFERRY_DEBUG"))
        logging.getLogger(SSH_LOG).setLevel(logging.DEBUG if debug else logging.CRITICAL + 1)
        host = self.settings.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server(
            (host, self.settings.sftp_port), family=family, backlog=128
        )
        bound_host, port = self._listener.getsockname()[:2]
        self._spawn(self._accept, "sftp-accept")
        return [(PROTOCOL, bound_host, port)]

    def stop(self, timeout: float) -> None:
        """Stop accepting, let open transfers finish for up to ``timeout``, close the rest."""
        with self._lock:
            if self.stopping.is_set():
                return
            self.stopping.set()
        self._wake_writer.send(b"x")
        deadline = time.monotonic() + timeout
        with self._transfers_done:
            while self._transfers and time.monotonic() < deadline:
                self._transfers_done.wait(deadline - time.monotonic())
        with self._lock:
            transports, threads = list(self._transports), list(self._threads)
        for transport in transports:
            transport.close()
        for thread in threads:
            if thread.is_alive():
                thread.join(5)
        self._wake_reader.close()
        self._wake_writer.close()

    def transfer_started(self) -> None:
        with self._lock:
            self._transfers += 1

    def transfers_ended(self, count: int) -> None:
        with self._lock:
            self._transfers -= count
            self._transfers_done.notify_all()

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=self._run, args=(target, *args), name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # no more threads to be had
            self.untrack(thread)
            raise

    def _run(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except Exception as exc:
            log.error("sftp: %s: %s", type(exc).__name__, exc)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def track(self, thread: threading.Thread) -> None:
        """Have :meth:`stop` wait for ``thread`` (an SFTP session) too."""
        with self._lock:
            self._threads.add(thread)

    def untrack(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.discard(thread)

    def _accept(self) -> None:
        assert self._listener is not None
        with self._listener, selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self.stopping.is_set():
                selector.select()
                if self.stopping.is_set():
                    return
                try:
                    sock, address = self._listener.accept()
                except BlockingIOError:
                    continue
                except OSError as exc:  # out of file descriptors: wait, do not spin
                    event("refused", protocol=PROTOCOL, reason=exc.strerror or str(exc))
                    self.stopping.wait(0.5)
                    continue
                ip = address[0]
                if from_balancer(ip, self.settings.proxy_protocol_from):
                    self._await_header(sock, ip)
                    continue
                if self._admit(sock, ip):
                    try:
                        self._spawn(self._serve, f"sftp-{ip}", sock, ip)
                    except RuntimeError as exc:
                        event("refused", protocol=PROTOCOL, ip=ip, reason=str(exc))
                        sock.close()
                        self.runtime.guard.release(ip, PROTOCOL)

    def _admit(self, sock: socket.socket, ip: str) -> bool:
        """Whether the guard admits the client at ``ip``; when not, logged and closed."""
        refusal = self.runtime.guard.admit(ip, PROTOCOL)
        if refusal:
            self.runtime.refused(PROTOCOL, ip, refusal)
            sock.close()
        return not refusal

    def _await_header(self, sock: socket.socket, balancer: str) -> None:
        """Read the PROXY header of a connection from ``balancer`` in a thread of its own
        (as many at once as ``max_prelogin_connections``), then serve the client it names."""
        with self._lock:
            full = self._headers_awaited >= self.settings.max_prelogin_connections
            if not full:
                self._headers_awaited += 1
        if full:
            self.runtime.refused(
                PROTOCOL, balancer, "too many connections waiting for their header"
            )
            sock.close()
            return
        try:
            self._spawn(self._behind_balancer, f"sftp-via-{balancer}", sock, balancer)
        except RuntimeError as exc:
            event("refused", protocol=PROTOCOL, ip=balancer, reason=str(exc))
            sock.close()
            with self._lock:
                self._headers_awaited -= 1

    def _behind_balancer(self, sock: socket.socket, balancer: str) -> None:
        try:
            source = read_header(sock)
        except ProxyRefused as exc:
            self.runtime.refused(PROTOCOL, balancer, f"from the balancer: {exc}")
            sock.close()
            return
        finally:
            with self._lock:
                self._headers_awaited -= 1
        ip = source[0] if source is not None else balancer
        if self._admit(sock, ip):
            self._serve(sock, ip)

    def _serve(self, sock: socket.socket, ip: str) -> None:
        transport = connection = None
        try:
            with self._lock:  # stop() sees this transport, or this thread sees stop()
                if self.stopping.is_set():
                    return
                transport = paramiko.Transport(
                    HeaderRefused(sock, lambda: self.runtime.refused(PROTOCOL, ip, NOT_A_BALANCER)),
                    default_window_size=WINDOW_SIZE,
                    default_max_packet_size=MAX_PACKET_SIZE,
                    disabled_algorithms=WEAK_ALGORITHMS,
                )
                transport.local_version = SSH_VERSION
                self._transports.add(transport)
            connection = Connection(self, transport, ip)
            self._converse(transport, connection)
        finally:
            if connection is not None:
                connection.logged_out()
            if transport is None:
                sock.close()
            else:
                transport.close()
                with self._lock:
                    self._transports.discard(transport)
            logged_in = connection is not None and connection.logged_in.is_set()
            self.runtime.guard.release(ip, PROTOCOL, logged_in)

    def _converse(self, transport: paramiko.Transport, connection: Connection) -> None:
        """Run the SSH session; close it at the login deadline or when idle."""
        assert self._host_key is not None
        transport.set_log_channel(SSH_LOG)
        transport.add_server_key(self._host_key)
        transport.set_subsystem_handler(PROTOCOL, SftpSession, TenantFiles)
        limit = self.settings.handshake_timeout
        if limit:
            transport.banner_timeout = transport.handshake_timeout = limit
        transport.start_server(event=threading.Event(), server=connection)
        deadline = time.monotonic() + limit
        while not connection.logged_in.wait(0.25):
            if not transport.is_active():
                return
            if limit and time.monotonic() >= deadline:
                event(
                    "refused",
                    protocol=PROTOCOL,
                    ip=connection.ip,
                    reason=f"no login within {limit:g} s",
                )
                return
        idle = self.settings.idle_timeout
        while transport.is_active():
            left = connection.last_request + idle - time.monotonic()
            if idle and left <= 0:
                event(
                    "closed",
                    protocol=PROTOCOL,
                    tenant=connection.tenant_name,
                    ip=connection.ip,
                    reason=f"idle for {idle:g} s",
                )
                return
            transport.join(left if idle else None)


class HeaderRefused:
    """A client's socket, as paramiko reads it: when the client's first bytes are a PROXY
    header (only a balancer may say where a connection comes from, and its header, if
    any, is read already), ``refuse()`` is called and the client is seen to hang up."""

    def __init__(self, sock: socket.socket, refuse: Callable[[], None]) -> None:
        self._sock = sock
        self._refuse = refuse
        self._first = FirstBytes()

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if self._first.verdict is None and self._first.look(data):
            self._refuse()
            return b""
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


# -- one connection: who it is, what it may open ---------------------------------------------


class Connection(paramiko.ServerInterface):
    """Login and channel decisions for one SSH connection."""

    def __init__(self, server: SftpServer, transport: paramiko.Transport, ip: str) -> None:
        self.server = server
        self.runtime = server.runtime
        self.transport = transport
        self.ip = ip
        self.tenant: Tenant | None = None
        self.logged_in = threading.Event()
        self.last_request = time.monotonic()
        self._sessions = threading.Semaphore(MAX_SESSIONS)
        self.channels: set[SftpSession] = set()  # its SFTP sessions, open files and all

    @property
    def tenant_name(self) -> str | None:
        return self.tenant.name if self.tenant else None

    def touch(self) -> None:
        self.last_request = time.monotonic()

    def refuse(self, reason: str) -> None:
        self.runtime.refused_in_session(PROTOCOL, self.tenant_name, self.ip, reason=reason)

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password"

    def check_auth_password(self, username: str, password: str | bytes) -> int:
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        full = self.runtime.limits.full(username, self.runtime.gatekeeper.tenants)
        if full and self.tenant is None:
            event("refused", protocol=PROTOCOL, tenant=username, ip=self.ip, reason=full)
            return paramiko.AUTH_FAILED
        tenant = self.runtime.gatekeeper.password(username, password, self.ip, PROTOCOL)
        return self._log_in(tenant)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        """paramiko asks this before it checks the client's signature, so the login is
        decided (logged, counted) only once the signature has been checked."""
        gate, key_type, blob = self.runtime.gatekeeper, key.get_name(), key.asbytes()
        if not gate.accepts_key(username, key_type, blob, self.ip, PROTOCOL):
            gate.public_key(username, key_type, blob, self.ip, PROTOCOL)  # logged, counted
            return paramiko.AUTH_FAILED
        verify = key.verify_ssh_sig

        def verify_then_log_in(data: bytes, signature: paramiko.Message) -> bool:
            proven = verify(data, signature)
            tenant = gate.public_key(username, key_type, blob, self.ip, PROTOCOL, proven)
            return self._log_in(tenant) == paramiko.AUTH_SUCCESSFUL

        # No tenant is set until this runs: were it skipped, every channel is refused.
        key.verify_ssh_sig = verify_then_log_in  # type: ignore[method-assign]
        return paramiko.AUTH_SUCCESSFUL

    def _log_in(self, tenant: Tenant | None) -> int:
        if tenant is None:
            return paramiko.AUTH_FAILED
        if self.tenant is None:
            refusal = self.runtime.limits.log_in(tenant, PROTOCOL)
            if refusal:
                event("refused", protocol=PROTOCOL, tenant=tenant.name, ip=self.ip, reason=refusal)
                return paramiko.AUTH_FAILED
        self.tenant = tenant
        if not self.logged_in.is_set():
            self.runtime.guard.logged_in(self.ip, PROTOCOL)
        self.logged_in.set()
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and self.tenant is not None and self.transport.is_authenticated():
            return paramiko.OPEN_SUCCEEDED
        self.refuse(f"{kind} channel")
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != PROTOCOL or self.tenant is None:
            self.refuse(f"subsystem {name[:32]!r}")
            return False
        if not self._sessions.acquire(blocking=False):
            self.refuse("too many SFTP sessions on one connection")
            return False
        if super().check_channel_subsystem_request(channel, name):
            return True
        self.session_ended()
        return False

    def session_ended(self) -> None:
        self._sessions.release()

    def logged_out(self) -> None:
        """The connection is over: the tenant's session no longer counts."""
        if self.tenant is not None:
            self.runtime.limits.log_out(self.tenant, PROTOCOL)

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.refuse("exec")
        return False

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        self.refuse("shell")
        return False

    def check_channel_pty_request(self, channel: paramiko.Channel, *args: Any) -> bool:
        self.refuse("pty")
        return False

    def check_port_forward_request(self, address: str, port: int) -> bool:
        self.refuse("port forwarding")
        return False

    def check_channel_direct_tcpip_request(self, chanid: int, origin: Any, dest: Any) -> int:
        self.refuse("direct-tcpip channel")
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
