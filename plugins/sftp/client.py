"""The ``sftp`` transport: a tenant home on the customer's SSH server (paramiko).

(The ``sftp-transport`` plugin, :mod:`sftp_transport`, opens it for ``sftp://`` homes.)

``sftp://user@host:port/folder``. The server's host key must be in the known-hosts file
(the tenant's ``known_hosts``, else ``state/NAME/known_hosts``); an unknown or changed
key is refused with its type and SHA256 fingerprint, never accepted. Logs in with
``remote_key_file`` (the password, if any, unlocks it) or with the password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import paramiko
from paramiko.message import Message
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, int64

from listferry.transport import RemoteFile
from listferry_plugins.remote_home import (
    Incomplete,
    Refused,
    RemoteHome,
    RemoteTransport,
    listed,
    network_fault,
    retrying,
    upload_name,
)
from listferry_plugins.sftp.host_keys import check_host_key, known_key_types

#: paramiko logs each fault itself, tracebacks included; the transport reports it in one
#: line instead, so paramiko's account is shown only with LISTFERRY_DEBUG=1.
PARAMIKO_LOG = logging.getLogger("listferry.paramiko")
if not os.environ.get("LISTFERRY_DEBUG"):
    PARAMIKO_LOG.setLevel(logging.CRITICAL)

#: Downloads keep WINDOW reads of REQUEST bytes in flight (OpenSSH's ``sftp`` does the same,
#: ``-B 32768 -R 64``): 2 MiB on the way at most. 32 KiB is the read every server must
#: answer in full. The requests are sent from the calling thread, not with paramiko's
#: ``prefetch`` or ``readv``: those send from a thread of their own, which dies with a
#: traceback on stderr when the connection is cut (paramiko issue #2379).
REQUEST = 32 * 1024
WINDOW = 64


class SftpTransport(RemoteTransport):
    """A connection to one home over SFTP, opened on first use and reopened after a fault."""

    def __init__(self, home: RemoteHome) -> None:
        super().__init__(home)
        self._ssh: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- the connection ------------------------------------------------------------------

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._connect()
        assert self._sftp is not None
        return self._sftp

    def _open(self) -> None:
        home = self.home
        ssh = paramiko.Transport(socket.create_connection((home.host, home.port), home.timeout))
        self._ssh = ssh
        ssh.set_log_channel(PARAMIKO_LOG.name)
        ssh.banner_timeout = ssh.handshake_timeout = ssh.auth_timeout = home.timeout
        types = known_key_types(home, ssh.get_security_options().key_types)
        if types:
            ssh.get_security_options().key_types = types
        # start_client gives up quietly (nothing said, nothing done) at its own timeout:
        # give the banner's and the handshake's timeouts the time to fail first, in words
        ssh.start_client(timeout=2 * home.timeout + 1 if home.timeout else None)
        check_host_key(home, ssh.get_remote_server_key())
        self._login(ssh)
        sftp = paramiko.SFTPClient.from_transport(ssh)
        assert sftp is not None
        sftp.get_channel().settimeout(home.timeout)
        self._sftp = sftp
        if home.folder:
            try:
                if not stat.S_ISDIR(sftp.stat(home.folder).st_mode or 0):
                    raise Refused(f"{home.where}: {home.folder} is not a folder")
            except FileNotFoundError:
                raise Refused(f"{home.where}: the folder {home.folder} does not exist") from None

    def _login(self, ssh: paramiko.Transport) -> None:
        home = self.home
        try:
            if home.key_file:
                ssh.auth_publickey(home.user, self._key())
            elif home.password:
                ssh.auth_password(home.user, home.password)
            else:
                raise Refused(f"{home.where}: no credentials: {home.words['credentials']}")
        except paramiko.AuthenticationException:
            way = "key" if home.key_file else "password"
            raise Refused(
                f"{home.where}: login refused for user {home.user} (wrong {way}?)"
            ) from None

    def _key(self) -> paramiko.PKey:
        """The private key of ``remote_key_file``, unlocked with the password if it has one."""
        path = self.home.key_file
        secret = self.home.password.encode() if self.home.password else None
        try:
            try:
                return paramiko.PKey.from_path(path, secret)
            except TypeError:  # a passphrase given for a plain key, or none for a locked one
                if secret is None:
                    raise
                return paramiko.PKey.from_path(path)
        except FileNotFoundError:
            reason = "no such file"
        except TypeError:
            reason = f"it is locked with a passphrase; {self.home.words['passphrase']}"
        except (OSError, ValueError, paramiko.SSHException, paramiko.UnknownKeyType) as exc:
            reason = "wrong passphrase, or " if secret else ""
            reason += f"not a private key paramiko reads ({type(exc).__name__})"
        raise Refused(
            f"{self.home.where}: cannot use the key file {path} "
            f"({self.home.words['key_file']}): {reason}"
        )

    def _drop(self) -> None:
        for thing in (self._sftp, self._ssh):
            if thing is not None:
                with contextlib.suppress(Exception):  # a broken connection may fail to close
                    thing.close()
        self._sftp = self._ssh = None

    def _is_fault(self, exc: BaseException) -> bool:
        if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
            return False
        if network_fault(exc) or isinstance(exc, paramiko.SSHException):
            return True
        # a bare OSError ("Socket is closed", no errno) is the connection, not the file
        dead = self._ssh is None or not self._ssh.is_active()
        return isinstance(exc, OSError) and (exc.errno is None and dead)

    def _do(self, doing: str, action: Any) -> Any:
        return retrying(
            self.home, doing, lambda: action(self._client()), self._drop, self._is_fault
        )

    # -- the transport -------------------------------------------------------------------

    def list(self) -> list[RemoteFile]:
        return self._do("list the folder", self._list)

    def _list(self, sftp: paramiko.SFTPClient) -> list[RemoteFile]:
        return [
            RemoteFile(entry.filename, entry.st_size or 0, float(entry.st_mtime or 0))
            for entry in sftp.listdir_attr(self.home.folder or ".")
            if listed(entry.filename) and stat.S_ISREG(entry.st_mode or 0)
        ]

    def _stat(self, sftp: paramiko.SFTPClient, name: str) -> RemoteFile | None:
        try:
            attrs = sftp.stat(self.home.path(name))
        except FileNotFoundError:
            return None
        return RemoteFile(name, attrs.st_size or 0, float(attrs.st_mtime or 0))

    def _download(self, sftp: paramiko.SFTPClient, name: str, size: int, out: BinaryIO) -> int:
        remote = sftp.open(self.home.path(name), "rb")
        got = download(sftp, remote.handle, size, out)
        remote.close()  # not on a fault: closing would wait on a dead connection
        return got

    def _put(
        self,
        sftp: paramiko.SFTPClient,
        source: Path,
        name: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._remove_leftovers(sftp)
        temp = self.home.path(upload_name(name))
        self._leftovers.add(temp)
        size = source.stat().st_size
        told = (lambda done, _total: progress(done)) if progress else None
        with source.open("rb") as data:
            sftp.putfo(data, temp, file_size=size, callback=told, confirm=False)
        got = sftp.stat(temp).st_size or 0
        if got != size:
            raise Incomplete(got, size)
        target = self.home.path(name)
        try:
            sftp.posix_rename(temp, target)
        except OSError as exc:
            if exc.errno is not None or not self._ssh or not self._ssh.is_active():
                raise
            # no posix-rename@openssh.com: plain SFTP rename will not replace a file
            if self._stat(sftp, name) is not None:
                sftp.remove(target)
            sftp.rename(temp, target)
        self._leftovers.discard(temp)

    def _lookup(self, sftp: paramiko.SFTPClient, name: str) -> RemoteFile | None:
        return self._stat(sftp, name)

    def _delete(self, sftp: paramiko.SFTPClient, name: str) -> None:
        sftp.remove(self.home.path(name))

    def _delete_temp(self, sftp: paramiko.SFTPClient, temp: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(temp)

    def close(self) -> None:
        self._drop()


class _Replies:
    """Where paramiko leaves the answers to one download's reads until their turn comes."""

    def __init__(self) -> None:
        self.waiting: dict[int, tuple[int, Message]] = {}

    def _async_response(self, kind: int, msg: Message, num: int) -> None:
        self.waiting[num] = (kind, msg)


def download(sftp: paramiko.SFTPClient, handle: bytes, size: int, out: BinaryIO) -> int:
    """Write the first ``size`` bytes of the open remote file to ``out``; the bytes written.

    Reads go out WINDOW at a time ahead of the one being written, through the same
    request and reply calls paramiko's own ``prefetch`` uses, and come back in any order;
    a short answer has its rest asked for again. A fault (the connection cut, a stall past
    the timeout) is raised here, in the caller's thread; the end of the file before
    ``size`` raises :class:`Incomplete`.
    """
    replies = _Replies()
    asked: deque[tuple[int, int, int]] = deque()  # (request, offset, length), in file order

    def ask(offset: int, length: int) -> tuple[int, int, int]:
        num = sftp._async_request(replies, CMD_READ, handle, int64(offset), length)
        return num, offset, length

    ahead = 0
    while asked or ahead < size:
        while ahead < size and len(asked) < WINDOW:
            asked.append(ask(ahead, min(REQUEST, size - ahead)))
            ahead += asked[-1][2]
        num, offset, length = asked.popleft()
        while num not in replies.waiting:
            sftp._read_response()
        kind, msg = replies.waiting.pop(num)
        if kind == CMD_STATUS:
            try:
                sftp._convert_status(msg)
            except EOFError:  # the file ends before its size: it shrank
                raise Incomplete(offset, size) from None
        if kind != CMD_DATA:
            raise paramiko.SFTPError(f"the server answered a read with message type {kind}")
        data = msg.get_binary()
        if not data:
            raise Incomplete(offset, size)
        out.write(data)
        if len(data) < length:
            asked.appendleft(ask(offset + len(data), length - len(data)))
    return out.tell()
