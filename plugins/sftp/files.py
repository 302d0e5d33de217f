"""What one SFTP session may do with files: its tenant's home as ``/``, nothing outside.

Every path goes through :func:`listferry.serve.jail.jail`; symlinks cannot be made, and
a link that leads out of the home is refused wherever it sits. Hidden in-progress
upload names are neither listed nor opened. A file opened for writing is written under
a hidden temp name and renamed to its name only when the client closes it; a session
that ends with the file still open (the client vanished) leaves nothing behind.

In cluster mode the folder here is a spool and the home's files are in storage: what
the spool does not hold is listed, stat'ed, read (:class:`StoredDownload`, a part at a
time), removed and renamed there, through the runtime's homes
(:mod:`listferry.serve.spool`). When storage does not answer, the request gets a failure
status saying so, and the log one ``event=storage`` line.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServerInterface
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

from listferry.config import Tenant
from listferry.serve.jail import OutsideHome, is_upload_in_progress, jail, upload_temp_name, virtual
from listferry.serve.limits import LimitReached, file_mode, folder_mode
from listferry.serve.log import event
from listferry.serve.runtime import Homes
from listferry.serve.spool import NotKept
from listferry.serve.stored import FILE_MODE as STORED_FILE_MODE
from listferry.serve.stored import UNAVAILABLE, Refused, StorageFault, StoredReader
from listferry_plugins.sftp.session import TRANSFER_SIZE, Refusal

if TYPE_CHECKING:
    from listferry_plugins.sftp.service import Connection

PROTOCOL = "sftp"
#: How much of a file in storage one read takes, to start a resumed upload from it.
COPY_PART = 1 << 20

Result = TypeVar("Result")


def os_error(exc: OSError) -> int:
    return paramiko.SFTPServer.convert_errno(exc.errno)


def confined(method: Callable[..., Result]) -> Callable[..., Result | int]:
    """An SFTP operation whose paths may not leave the home; OS errors become SFTP codes."""

    @functools.wraps(method)
    def run(self: TenantFiles, *args: Any) -> Result | int:
        self.connection.touch()
        try:
            return method(self, *args)
        except OutsideHome as exc:
            self.connection.refuse(f"{method.__name__}: {exc}")
            return SFTP_PERMISSION_DENIED
        except LimitReached as exc:
            self.connection.refuse(f"{method.__name__}: {exc}")
            return Refusal(SFTP_FAILURE, f"Refused: {exc}")
        except NotKept as exc:
            self.connection.refuse(f"{method.__name__}: {exc.detail}")
            return Refusal(SFTP_FAILURE, f"Not kept: {exc}")
        except Refused as exc:
            self.connection.refuse(f"{method.__name__}: {exc}")
            return Refusal(SFTP_FAILURE, f"Refused: {exc}")
        except StorageFault as exc:
            return self.storage_failed(method.__name__, args[0] if args else None, exc)
        except OSError as exc:
            return os_error(exc)

    return run


class TenantFiles(SFTPServerInterface):
    """One SFTP session's file operations, inside the tenant's home."""

    def __init__(self, connection: Connection, *args: Any) -> None:
        super().__init__(connection)
        if connection.tenant is None:
            raise PermissionError("an SFTP session before login")
        self.connection = connection
        self.server = connection.server
        self.tenant: Tenant = connection.tenant
        self.home = connection.runtime.home(connection.tenant)
        self.root = jail(self.home, "/")
        self.limits = connection.runtime.limits.home(connection.tenant)
        self.umask = connection.runtime.settings.umask
        self.handles: set[Transfer] = set()
        self.closed = 0  # transfers closed since the server was last told

    def may_open(self) -> None:
        """Raise :class:`LimitReached` when the connection, all its SFTP channels together,
        holds its most open handles."""
        most = self.server.runtime.settings.max_handles_per_session
        if sum(channel.open_handles() for channel in list(self.connection.channels)) >= most:
            raise LimitReached(f"at most {most} files and folders may be open at once")

    def report_closed(self) -> None:
        """Tell the server how many transfers ended, once the client has its answers."""
        if self.closed:
            self.server.transfers_ended(self.closed)
            self.closed = 0

    def session_ended(self) -> None:
        self.connection.session_ended()

    def storage_failed(self, doing: str, path: object, exc: StorageFault) -> Refusal:
        """Storage did not answer: one log line with the reason, and the status for the
        client, which says to try again later."""
        connection = self.connection
        connection.runtime.storage_failed(
            PROTOCOL, self.tenant.name, connection.ip, str(exc), command=doing, path=path
        )
        return Refusal(SFTP_FAILURE, UNAVAILABLE)

    @property
    def homes(self) -> Homes:
        """Where the home's files are: the local folder, or the spool and storage."""
        return self.connection.runtime.homes

    # -- paths

    def real(self, path: str) -> Path:
        """The real path of the client's ``path``, symlinks followed, inside the home."""
        real = jail(self.home, path)
        if is_upload_in_progress(real.name):
            raise OutsideHome(f"{path!r} is an upload in progress")
        return real

    def entry(self, path: str) -> Path:
        """The directory entry ``path`` names, a final symlink not followed.

        The whole path must stay in the home too: a link out of it cannot even be removed.
        """
        self.real(path)
        clean = posixpath.normpath(posixpath.join("/", path))
        if clean == "/":
            return self.root
        entry = jail(self.home, posixpath.dirname(clean)) / posixpath.basename(clean)
        if is_upload_in_progress(entry.name):
            raise OutsideHome(f"{path!r} is an upload in progress")
        return entry

    def movable(self, path: str) -> Path:
        """The entry ``path`` names, to remove or rename: anything but the home itself."""
        entry = self.entry(path)
        if entry == self.root:
            raise OutsideHome("the home itself cannot be removed or renamed")
        return entry

    def name_of(self, real: Path) -> str:
        return virtual(self.home, real).lstrip("/")

    # -- files

    @confined
    def open(self, path: str, flags: int, attr: SFTPAttributes) -> Transfer | int:
        if self.server.stopping.is_set():
            self.connection.refuse("the server is stopping")
            return SFTP_FAILURE
        self.may_open()
        target = self.real(path)
        if flags & (os.O_WRONLY | os.O_RDWR):
            return self._open_upload(target, flags)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return StoredDownload(self, self.homes.read(self.tenant, target), target)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return SFTP_FAILURE
        return Download(self, fd, target)

    def _open_upload(self, target: Path, flags: int) -> Transfer | int:
        self.homes.provide_folder(self.tenant, target.parent)
        exists = os.path.lexists(target)
        stored = None
        replacing = os.O_CREAT | os.O_TRUNC
        if not exists and (flags & os.O_EXCL or flags & replacing != replacing):
            # whether the file is in storage matters only here: a plain upload
            # (create, truncate) replaces it either way, even with storage away
            stored = self.homes.lookup(self.tenant, target)
            exists = stored is not None
        if (flags & os.O_EXCL and exists) or target.is_dir() or (stored and stored.folder):
            return SFTP_FAILURE
        if not exists and not flags & os.O_CREAT:
            return SFTP_NO_SUCH_FILE
        temp = target.with_name(upload_temp_name(target.name))
        mode = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with self.limits.adding:
            self.limits.may_upload(self.tenant, target)
            fd = os.open(temp, mode | (flags & os.O_APPEND), 0o600)
        size = 0
        try:
            os.fchmod(fd, file_mode(self.umask))
            if exists and not flags & os.O_TRUNC:  # resuming or patching: start from the file
                start = stored.size if stored else os.stat(target).st_size
                self.limits.grow(self.tenant, start, start)
                size = start
                with open(fd, "wb", closefd=False) as new:
                    if stored:
                        copy_stored(self.homes.read(self.tenant, target), new)
                    else:
                        with open(target, "rb") as old:
                            shutil.copyfileobj(old, new)
        except (OSError, StorageFault):
            os.close(fd)
            temp.unlink()
            self.limits.shrink(size)
            raise
        return Upload(self, fd, target, temp, size, bool(flags & os.O_APPEND))

    @confined
    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        self.may_open()
        folder = self.real(path)
        listing = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if is_upload_in_progress(entry.name):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    listing.append(SFTPAttributes.from_stat(info, entry.name))
            here = True
        except FileNotFoundError:
            here = False
        stored = self.homes.listing(self.tenant, folder)
        if not here and not stored:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        seen = {attributes.filename for attributes in listing}
        listing += [
            SFTPAttributes.from_stat(entry.stat(), name)
            for name, entry in stored.items()
            if name not in seen
        ]
        return listing

    @confined
    def stat(self, path: str) -> SFTPAttributes | int:
        return SFTPAttributes.from_stat(self._stat(self.real(path), os.stat))

    @confined
    def lstat(self, path: str) -> SFTPAttributes | int:
        return SFTPAttributes.from_stat(self._stat(self.entry(path), os.lstat))

    def _stat(self, real: Path, local: Callable[[Path], os.stat_result]) -> os.stat_result:
        """``local(real)``; for what the spool does not hold, what storage holds there."""
        try:
            return local(real)
        except FileNotFoundError:
            found = self.homes.lookup(self.tenant, real)
            if found is None:
                raise
            return found.stat()

    @confined
    def remove(self, path: str) -> int:
        entry = self.movable(path)
        try:
            size = os.lstat(entry).st_size
        except FileNotFoundError:
            size = self.homes.remove(self.tenant, entry).size
        else:
            os.remove(entry)
        self.limits.shrink(size)
        event("remove", protocol=PROTOCOL, tenant=self.tenant.name, file=self.name_of(entry))
        return SFTP_OK

    @confined
    def rename(self, oldpath: str, newpath: str) -> int:
        old, new = self.movable(oldpath), self.movable(newpath)
        if os.path.lexists(new) or self.homes.lookup(self.tenant, new):
            return SFTP_FAILURE
        return self._move(old, new)

    @confined
    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._move(self.movable(oldpath), self.movable(newpath))

    def _move(self, old: Path, new: Path) -> int:
        if old.is_dir() and not old.is_symlink():
            self.limits.may_move(self.tenant, old, new)
        homes = self.connection.runtime.homes
        with homes.keeping(self.limits.adding):  # a count of the home never sees neither name
            stored = homes.rename(self.tenant, old, new)
        name = self.name_of(new)
        event("rename", protocol=PROTOCOL, tenant=self.tenant.name, file=self.name_of(old), to=name)
        if stored or new.is_file():  # uploaded under one name, then renamed into place
            self.connection.runtime.uploads.received(self.tenant, name)
        return SFTP_OK

    @confined
    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        entry = self.entry(path)
        if os.path.lexists(entry) or self.homes.lookup(self.tenant, entry):
            return SFTP_FAILURE
        self.homes.provide_folder(self.tenant, entry.parent)
        with self.limits.adding:
            self.limits.may_add(self.tenant, entry, folder=True)
            os.mkdir(entry, 0o700)
        os.chmod(entry, folder_mode(self.umask))
        return SFTP_OK

    @confined
    def rmdir(self, path: str) -> int:
        self.homes.remove_folder(self.tenant, self.movable(path))
        return SFTP_OK

    @confined
    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        real = self.real(path)
        try:
            return change_attributes(real, attr)
        except FileNotFoundError:
            if self.homes.lookup(self.tenant, real) is None:
                raise
            return stored_attributes(attr)

    @confined
    def readlink(self, path: str) -> str | int:
        if not self.entry(path).is_symlink():
            return SFTP_FAILURE
        return virtual(self.home, self.real(path))

    def symlink(self, target_path: str, path: str) -> int:
        self.connection.refuse("symlinks cannot be made")
        return SFTP_PERMISSION_DENIED

    def canonicalize(self, path: str) -> str:
        """The client's absolute view of ``path``; a path outside the home is an error."""
        self.connection.touch()
        try:
            return virtual(self.home, jail(self.home, path))
        except OutsideHome as exc:
            self.connection.refuse(f"realpath: {exc}")
            raise


def change_attributes(target: Path | int, attr: SFTPAttributes) -> int:
    """Times, and permissions kept sane (owner read-write, no set-id bits, no world write).

    Owners and sizes are refused here: a size is only changed on an upload's own handle.
    """
    if attr.st_uid is not None or attr.st_gid is not None or attr.st_size is not None:
        return SFTP_PERMISSION_DENIED
    if attr.st_mode is not None:
        is_dir = stat.S_ISDIR(os.stat(target).st_mode)
        os.chmod(target, (stat.S_IMODE(attr.st_mode) & 0o755) | (0o700 if is_dir else 0o600))
    if attr.st_mtime is not None:
        os.utime(target, (attr.st_atime or attr.st_mtime, attr.st_mtime))
    return SFTP_OK


def stored_attributes(attr: SFTPAttributes) -> int:
    """A file in storage keeps the time it was stored and no permissions: a change of
    either is taken and not kept (clients set them after an upload, and would report the
    upload failed otherwise); owners and sizes are refused, as for a local file."""
    if attr.st_uid is not None or attr.st_gid is not None or attr.st_size is not None:
        return SFTP_PERMISSION_DENIED
    return SFTP_OK


def copy_stored(reader: StoredReader, out: Any) -> None:
    """Write the file ``reader`` reads to ``out``, a part at a time."""
    try:
        while data := reader.read(COPY_PART):
            out.write(data)
    finally:
        reader.close()


# -- open files ----------------------------------------------------------------------------


class Transfer(SFTPHandle):
    """An open file: reads and writes at the client's offsets, one system call each."""

    kind = "transfer"

    def __init__(self, files: TenantFiles, fd: int, target: Path) -> None:
        super().__init__()
        self.files = files
        self.fd = fd
        self.target = target
        self.bytes = 0
        self.aborted = False
        files.handles.add(self)
        files.server.transfer_started()

    def read(self, offset: int, length: int) -> bytes | int:
        self.files.connection.touch()
        try:
            data = os.pread(self.fd, min(length, TRANSFER_SIZE), offset)
        except OSError as exc:
            return os_error(exc)
        self.bytes += len(data)
        return data

    def write(self, offset: int, data: bytes | memoryview) -> int:
        return SFTP_PERMISSION_DENIED

    def stat(self) -> SFTPAttributes | int:
        return SFTPAttributes.from_stat(os.fstat(self.fd))

    def chattr(self, attr: SFTPAttributes) -> int:
        try:
            return change_attributes(self.fd, attr)
        except OSError as exc:
            return os_error(exc)

    def close(self) -> None:
        if self not in self.files.handles:
            return
        self.files.handles.discard(self)
        try:
            os.close(self.fd)
            self.finish()
        finally:
            self.files.closed += 1

    def finish(self) -> None:
        self.log("aborted" if self.aborted else "ok")

    def log(self, result: str, reason: str | None = None) -> None:
        files = self.files
        event(
            self.kind,
            protocol=PROTOCOL,
            tenant=files.tenant.name,
            ip=files.connection.ip,
            file=files.name_of(self.target),
            bytes=self.bytes,
            result=result,
            reason=reason,
        )


class Download(Transfer):
    kind = "download"


class StoredDownload(Download):
    """A file of the home in storage, read a part at a time as the client asks for it;
    when storage stops answering, the read fails saying so, and the download is logged
    ``failed`` with the reason when the file is closed."""

    def __init__(self, files: TenantFiles, reader: StoredReader, target: Path) -> None:
        super().__init__(files, -1, target)
        self.reader = reader
        self.failed: str | None = None

    def read(self, offset: int, length: int) -> bytes | int:
        self.files.connection.touch()
        try:
            data = self.reader.read_at(offset, min(length, TRANSFER_SIZE))
        except StorageFault as exc:
            self.failed = str(exc)
            return Refusal(SFTP_FAILURE, UNAVAILABLE)
        self.bytes += len(data)
        return data

    def stat(self) -> SFTPAttributes | int:
        attributes = SFTPAttributes()
        attributes.st_size = self.reader.size
        attributes.st_mode = stat.S_IFREG | STORED_FILE_MODE
        attributes.st_atime = attributes.st_mtime = int(self.reader.mtime)
        return attributes

    def chattr(self, attr: SFTPAttributes) -> int:
        return stored_attributes(attr)

    def close(self) -> None:
        if self not in self.files.handles:
            return
        self.files.handles.discard(self)
        try:
            self.reader.close()
            self.finish()
        finally:
            self.files.closed += 1

    def finish(self) -> None:
        if self.failed is not None:
            self.log("failed", self.failed)
        else:
            super().finish()


class Upload(Transfer):
    """Written to a hidden temp file, renamed to its name when the client closes it."""

    kind = "upload"

    def __init__(
        self, files: TenantFiles, fd: int, target: Path, temp: Path, size: int, append: bool
    ) -> None:
        super().__init__(files, fd, target)
        self.temp = temp
        self.size = size  # the file's apparent size, as counted against the home's limits
        self.append = append  # every write lands at the end, whatever its offset
        self.refused: str | None = None

    def resize(self, size: int) -> None:
        """Count the file at ``size`` bytes; raise :class:`LimitReached` past a limit."""
        files = self.files
        if size > self.size:
            files.limits.grow(files.tenant, size - self.size, size)
        else:
            files.limits.shrink(self.size - size)
        self.size = size

    def refuse(self, reason: str) -> Refusal:
        """The upload passed a limit: it is over, and the part written is removed now."""
        if self.refused is None:
            self.refused = reason
            # Counted off as the part goes (first, so a count of the home in between
            # errs on the side of refusing), not again at close.
            self.files.limits.shrink(self.size)
            self.size = 0
            self.temp.unlink(missing_ok=True)
            self.files.connection.refuse(f"upload of {self.files.name_of(self.target)}: {reason}")
        return Refusal(SFTP_FAILURE, f"Upload refused: {self.refused}")

    def write(self, offset: int, data: bytes | memoryview) -> int:
        self.files.connection.touch()
        if self.refused is not None:
            return self.refuse(self.refused)
        try:
            end = self.size if self.append else offset
            self.resize(max(self.size, end + len(data)))
        except LimitReached as exc:
            return self.refuse(str(exc))
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            return os_error(exc)
        self.bytes += len(data)
        return SFTP_OK

    def chattr(self, attr: SFTPAttributes) -> int:
        if attr.st_size is not None:
            try:
                if self.refused is not None:
                    return self.refuse(self.refused)
                self.resize(attr.st_size)
                os.ftruncate(self.fd, attr.st_size)
            except LimitReached as exc:
                self.files.connection.refuse(f"setstat: {exc}")
                return Refusal(SFTP_FAILURE, f"Refused: {exc}")
            except OSError as exc:
                return os_error(exc)
            attr.st_size = None
        return super().chattr(attr)

    def finish(self) -> None:
        if self.refused is not None or self.aborted:
            self.files.limits.shrink(self.size)
            self.size = 0
            self.temp.unlink(missing_ok=True)
            self.log("refused" if self.refused else "aborted", self.refused)
            return
        try:
            replaced = os.lstat(self.target).st_size
        except FileNotFoundError:
            replaced = 0
        files = self.files
        try:
            homes = files.connection.runtime.homes
            with homes.keeping(files.limits.adding):  # a count never sees neither name
                homes.keep(files.tenant, self.temp, self.target)
        except OSError as exc:
            self.temp.unlink(missing_ok=True)
            files.limits.shrink(self.size)
            self.log("failed", exc.detail if isinstance(exc, NotKept) else exc.strerror)
            raise
        files.limits.shrink(replaced)
        self.log("ok")
        files.connection.runtime.uploads.received(files.tenant, files.name_of(self.target))
