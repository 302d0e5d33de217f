"""The SFTP wire protocol loop: paramiko's SFTP server, made fast for big files.

paramiko reads each request with two small channel reads and answers each in its own
SSH packet. :class:`SftpSession` takes whatever the channel holds, serves reads and
writes itself, hands every other request to paramiko (and so to
:class:`~listferry_plugins.sftp.files.TenantFiles`), and sends the answers to a batch
of requests together. It offers OpenSSH's ``limits@openssh.com``, so OpenSSH's client
moves 255 KB per request instead of 32 KB.

Two of paramiko's internals are used: ``_process`` (serve one request) and
``_send_packet`` (send one answer, overridden here to join the batch).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import paramiko
from paramiko import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_INIT,
    CMD_READ,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_BAD_MESSAGE,
    SFTP_DESC,
    SFTP_EOF,
    SFTP_FAILURE,
    SFTP_OK,
)

from listferry.serve.spool import NotKept

if TYPE_CHECKING:
    from listferry_plugins.sftp.service import Connection

#: The most one read or write request moves, as OpenSSH's own server allows.
TRANSFER_SIZE = 255 * 1024
#: Larger requests end the session: no client needs them, and they cost memory.
REQUEST_LIMIT = 2**20
#: Answers waiting beyond this are sent before the rest of a batch is served.
FLUSH_AT = 2**20
EXTENSIONS = (("posix-rename@openssh.com", "1"), ("limits@openssh.com", "1"))


class Refusal(int):
    """An SFTP status code with the message the client is sent instead of the usual one."""

    message: str

    def __new__(cls, code: int, message: str) -> Refusal:
        refusal = super().__new__(cls, code)
        refusal.message = message
        return refusal


def status_text(code: int) -> str:
    if isinstance(code, Refusal):
        return code.message
    return SFTP_DESC[code] if 0 <= code < len(SFTP_DESC) else "Unknown"


class SftpSession(paramiko.SFTPServer):
    """One SFTP session, on its own thread, which the server's stop waits for."""

    def __init__(self, channel: paramiko.Channel, name: str, server: Connection, *args: Any):
        super().__init__(channel, name, server, *args)
        self.daemon = True
        self.name = f"sftp-session-{server.ip}"
        self.owner = server.server
        self.owner.track(self)
        self.connection = server
        server.channels.add(self)
        self._outbox: list[bytes] = []
        self._waiting = 0

    def finish_subsystem(self) -> None:
        """The session is over: a file still open was never finished, so it is aborted.

        paramiko would close such files only after closing the channel, which fails when
        the connection is already gone.
        """
        try:
            for handle in self.file_table.values():
                handle.aborted = True
                handle.close()
            self.file_table.clear()
        finally:
            try:
                super().finish_subsystem()
            finally:
                self.server.report_closed()
                self.connection.channels.discard(self)
                self.owner.untrack(self)

    def start_subsystem(self, name: str, transport: paramiko.Transport, channel: Any) -> None:
        self.sock = channel
        buffer = bytearray()
        started = False
        while chunk := channel.recv(REQUEST_LIMIT):
            buffer += chunk
            done = 0
            while len(buffer) - done >= 4:
                (size,) = struct.unpack_from(">I", buffer, done)
                if not 5 <= size <= REQUEST_LIMIT:
                    return
                end = done + 4 + size
                if end > len(buffer):
                    break
                request = bytes(memoryview(buffer)[done + 4 : end])
                done = end
                if not started:
                    if request[0] != CMD_INIT:
                        return
                    self._send_version()
                    self.server.session_started()
                    started = True
                    continue
                self._serve(request)
                if self._waiting >= FLUSH_AT:
                    self._flush()
            del buffer[:done]
            self._flush()

    def _serve(self, request: bytes) -> None:
        kind = request[0]
        (number,) = struct.unpack_from(">I", request, 1)
        try:
            if kind == CMD_WRITE:
                self._write(number, request)
            elif kind == CMD_READ:
                self._read(number, request)
            elif kind == CMD_CLOSE:
                self._close(number, request)
            else:
                msg = Message(request[5:])
                if kind == CMD_EXTENDED and msg.get_text() == "limits@openssh.com":
                    self._limits(number)
                else:
                    self._process(kind, number, Message(request[5:]))
        except Exception:
            self._status(number, SFTP_FAILURE)

    def _write(self, number: int, request: bytes) -> None:
        (length,) = struct.unpack_from(">I", request, 5)
        handle = self.file_table.get(request[9 : 9 + length])
        offset, size = struct.unpack_from(">QI", request, 9 + length)
        start = 9 + length + 12
        if handle is None or start + size > len(request):
            self._status(number, SFTP_BAD_MESSAGE)
            return
        self._status(number, handle.write(offset, memoryview(request)[start : start + size]))

    def _read(self, number: int, request: bytes) -> None:
        (length,) = struct.unpack_from(">I", request, 5)
        handle = self.file_table.get(request[9 : 9 + length])
        offset, size = struct.unpack_from(">QI", request, 9 + length)
        if handle is None:
            self._status(number, SFTP_BAD_MESSAGE)
            return
        data = handle.read(offset, size)
        if isinstance(data, int):
            self._status(number, data)
        elif not data:
            self._status(number, SFTP_EOF)
        else:
            self._queue(CMD_DATA, struct.pack(">II", number, len(data)), data)

    def _close(self, number: int, request: bytes) -> None:
        """Close a handle; a file whose upload could not be kept answers with why."""
        handle = Message(request[5:]).get_binary()
        if handle not in self.file_table:
            self._process(CMD_CLOSE, number, Message(request[5:]))
            return
        try:
            self.file_table.pop(handle).close()
        except NotKept as exc:
            self._status(number, Refusal(SFTP_FAILURE, f"Upload not kept: {exc}"))
            return
        self._status(number, SFTP_OK)

    def _limits(self, number: int) -> None:
        self._queue(
            CMD_EXTENDED_REPLY,
            struct.pack(">IQQQQ", number, TRANSFER_SIZE + 1024, TRANSFER_SIZE, TRANSFER_SIZE, 0),
        )

    def _send_version(self) -> None:
        msg = Message()
        msg.add_int(3)
        for name, version in EXTENSIONS:
            msg.add_string(name)
            msg.add_string(version)
        self._send_packet(CMD_VERSION, msg)

    def open_handles(self) -> int:
        """The files and folders the client holds open."""
        return len(self.file_table) + len(self.folder_table)

    def _send_status(self, request_number: int, code: int, desc: str | None = None) -> None:
        """Where paramiko's own handlers answer with a status: a refusal's message too."""
        super()._send_status(request_number, code, status_text(code) if desc is None else desc)

    def _status(self, number: int, code: int) -> None:
        text = status_text(code).encode()
        self._queue(CMD_STATUS, struct.pack(">III", number, code, len(text)), text, b"\0\0\0\0")

    def _send_packet(self, t: int, packet: Message) -> None:
        """Where paramiko's own handlers answer: into the batch too."""
        self._queue(t, packet.asbytes())

    def _queue(self, kind: int, *parts: bytes) -> None:
        size = 1 + sum(len(part) for part in parts)
        self._outbox += (struct.pack(">IB", size, kind), *parts)
        self._waiting += size

    def _flush(self) -> None:
        data = memoryview(b"".join(self._outbox))
        self._outbox.clear()
        self._waiting = 0
        while data:
            sent = self.sock.send(data)
            if sent <= 0:
                raise EOFError("the channel is closed")
            data = data[sent:]
        self.server.report_closed()  # only now may a stopping server hang up
