"""The ``ftp`` and ``ftps`` transports: a tenant home on the customer's FTP server (ftplib).

``ftp://user@host:port/folder``, or ``ftps://...`` for FTP with explicit TLS (AUTH TLS,
then every data connection protected too). FTPS verifies the server's certificate
against ``ca_file``, else the system's CA store, unless ``tls_verify = false``. Passive
mode; listings use MLSD, or NLST with SIZE and MDTM where the server has no MLSD.
"""

from __future__ import annotations

import calendar
import contextlib
import ftplib
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from listferry import Endpoint, hookimpl
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

BLOCK = 1 << 16
#: Replies that say a command is not implemented (rather than refused for this file).
NOT_IMPLEMENTED = ("500", "501", "502", "504")


class TlsFtp(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session.

    Servers such as vsftpd (``require_ssl_reuse``) refuse data connections that do not.
    """

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[Any, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        session = getattr(self.sock, "session", None)
        return self.context.wrap_socket(conn, server_hostname=self.host, session=session), size


def parse_time(value: str) -> float:
    """``YYYYMMDDHHMMSS[.sss]`` (UTC, as MLSD and MDTM give it) as epoch seconds.

    A time the server does not give, or gives in another form, is 0: the file's size
    alone then tells whether it is still changing.
    """
    whole, _, fraction = value.strip().partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole[:14], "%Y%m%d%H%M%S"))
    except ValueError:
        return 0.0
    return seconds + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)


def is_fault(exc: BaseException) -> bool:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    faults = (ftplib.error_temp, ftplib.error_reply, ftplib.error_proto, ssl.SSLError)
    return network_fault(exc) or isinstance(exc, faults)


class FtpTransport(RemoteTransport):
    """A connection to one home over FTP or FTPS, opened on first use, reopened after a fault."""

    def __init__(self, home: RemoteHome) -> None:
        super().__init__(home)
        self._ftp: ftplib.FTP | None = None
        self._mlsd = True

    # -- the connection ------------------------------------------------------------------

    def _client(self) -> ftplib.FTP:
        if self._ftp is None:
            self._connect()
        assert self._ftp is not None
        return self._ftp

    def _tls_context(self) -> ssl.SSLContext:
        home = self.home
        if not home.tls_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if home.ca_file and not home.ca_file.is_file():
            raise Refused(f"{home.where}: {home.words['ca_file']} {home.ca_file} does not exist")
        return ssl.create_default_context(cafile=str(home.ca_file) if home.ca_file else None)

    def _open(self) -> None:
        home = self.home
        if not home.password:  # an empty one would only count towards the server's block
            raise Refused(f"{home.where}: no credentials: {home.words['password']}")
        secure = home.scheme == "ftps"
        ftp = TlsFtp(context=self._tls_context(), timeout=home.timeout) if secure else None
        self._ftp = ftp = ftp or ftplib.FTP(timeout=home.timeout)
        ftp.connect(home.host, home.port)
        if isinstance(ftp, TlsFtp):
            try:
                ftp.auth()
            except ssl.SSLCertVerificationError as exc:
                raise Refused(
                    f"{home.where}: the server's TLS certificate is not trusted "
                    f"({exc.verify_message}); {home.words['untrusted']}"
                ) from None
            except ftplib.error_perm:
                raise Refused(
                    f"{home.where}: the server does not offer TLS (AUTH TLS was refused); "
                    "use ftp:// only if plain FTP is intended"
                ) from None
        try:
            ftp.login(home.user, home.password)
        except ftplib.error_perm:
            raise Refused(
                f"{home.where}: login refused for user {home.user} (wrong password?)"
            ) from None
        if isinstance(ftp, TlsFtp):
            ftp.prot_p()
        if home.folder:
            try:
                ftp.cwd(home.folder)
            except ftplib.error_perm:
                raise Refused(f"{home.where}: the folder {home.folder} does not exist") from None

    def _drop(self) -> None:
        if self._ftp is not None:
            with contextlib.suppress(OSError):  # a broken connection may fail to close
                self._ftp.close()
        self._ftp = None

    def _do(self, doing: str, action: Any) -> Any:
        return retrying(
            self.home,
            doing,
            lambda: action(self._client()),
            self._drop,
            is_fault,
            (ftplib.error_perm, OSError),
        )

    # -- listing -------------------------------------------------------------------------

    def _entries(self, ftp: ftplib.FTP) -> list[RemoteFile]:
        """Every file in the folder, hidden ones too."""
        if self._mlsd:
            try:
                return [
                    RemoteFile(name, int(facts.get("size", 0)), parse_time(facts.get("modify", "")))
                    for name, facts in ftp.mlsd()
                    if facts.get("type", "").lower() == "file"
                ]
            except ftplib.error_perm as exc:
                if not str(exc).startswith(NOT_IMPLEMENTED):
                    raise
                self._mlsd = False
        try:
            names = ftp.nlst()
        except ftplib.error_perm as exc:  # some servers answer 550 for an empty folder
            if str(exc).startswith("550"):
                return []
            raise
        ftp.voidcmd("TYPE I")
        files = []
        for name in names:
            name = name.rsplit("/", 1)[-1]
            try:
                size = ftp.size(name)
            except ftplib.error_perm:  # a folder, or gone since the listing
                continue
            try:
                modified = ftp.sendcmd(f"MDTM {name}")
            except ftplib.error_perm:  # no MDTM here: the size alone tells
                modified = ""
            if size is not None:
                files.append(RemoteFile(name, size, parse_time(modified[4:])))
        return files

    def _find(self, ftp: ftplib.FTP, name: str) -> RemoteFile | None:
        return next((f for f in self._entries(ftp) if f.name == name), None)

    def list(self) -> list[RemoteFile]:
        return self._do(
            "list the folder", lambda ftp: [f for f in self._entries(ftp) if listed(f.name)]
        )

    # -- transfers -----------------------------------------------------------------------

    def _download(self, ftp: ftplib.FTP, name: str, size: int, out: BinaryIO) -> int:
        ftp.retrbinary(f"RETR {name}", out.write, BLOCK)
        return out.tell()

    def _size(self, ftp: ftplib.FTP, name: str) -> int | None:
        ftp.voidcmd("TYPE I")
        try:
            return ftp.size(name)
        except ftplib.error_perm as exc:
            if not str(exc).startswith(NOT_IMPLEMENTED):
                raise
        found = self._find(ftp, name)
        return found.size if found else None

    def _put(
        self,
        ftp: ftplib.FTP,
        source: Path,
        name: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._remove_leftovers(ftp)
        temp = upload_name(name)
        self._leftovers.add(temp)
        size = source.stat().st_size
        sent = 0

        def told(block: bytes) -> None:
            nonlocal sent
            sent += len(block)
            if progress is not None:
                progress(sent)

        with source.open("rb") as data:
            ftp.storbinary(f"STOR {temp}", data, BLOCK, callback=told)
        got = self._size(ftp, temp)
        if got != size:
            raise Incomplete(got or 0, size)
        try:
            ftp.rename(temp, name)
        except ftplib.error_perm:  # some servers will not rename onto an existing file
            if self._find(ftp, name) is None:
                raise
            ftp.delete(name)
            ftp.rename(temp, name)
        self._leftovers.discard(temp)

    def _lookup(self, ftp: ftplib.FTP, name: str) -> RemoteFile | None:
        return self._find(ftp, name)

    def _delete(self, ftp: ftplib.FTP, name: str) -> None:
        ftp.delete(name)

    def _delete_temp(self, ftp: ftplib.FTP, temp: str) -> None:
        with contextlib.suppress(ftplib.error_perm):  # never created, or gone already
            ftp.delete(temp)

    def close(self) -> None:
        if self._ftp is not None:
            with contextlib.suppress(OSError, EOFError, ftplib.Error):
                self._ftp.quit()
        self._drop()


def ftp_home(endpoint: Endpoint) -> FtpTransport:
    """The transport for an ``ftp://`` or ``ftps://`` endpoint."""
    return FtpTransport(RemoteHome.from_endpoint(endpoint))


@hookimpl
def register_transports(register: Any) -> None:
    register("ftp", ftp_home)
    register("ftps", ftp_home)
