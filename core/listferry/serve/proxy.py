"""The PROXY protocol, version 2: the customer's address, as a load balancer passes it on.

Behind a TCP load balancer every connection comes from the balancer. HAProxy
(``send-proxy-v2``) and cloud network load balancers put a binary header before the
client's first byte that names the client's address; the servers read it from the
addresses ``[server] proxy_protocol_from`` names, and from them only, so allow lists,
login defence, limits and logs see the customer, not the balancer.

- A connection from a named balancer must start with a header (version 2): one that does
  not, or sends a broken one, is refused.
- A connection from anyone else is taken as it is, at the address it comes from; one that
  starts with a PROXY header (either version) is refused: nobody but a balancer may say
  where a connection comes from.
- A header with the ``LOCAL`` command (a balancer's own health check) keeps the
  connection's own address.

Only the header's own bytes are read: what follows is the client's, for its protocol.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from contextlib import suppress

from listferry.serve.blocks import address_of

#: The twelve bytes every version 2 header starts with.
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The signature, the version and command, the family and transport, the length.
FIXED = 16
#: The longest address block (with its TLVs) taken: more is not a balancer's header.
MOST = 1024
#: Seconds a balancer has to send the header after it connects.
HEADER_SECONDS = 5.0
#: Why a header from anyone but a named balancer is refused (logged as the reason).
NOT_A_BALANCER = "a PROXY header from an address not in proxy_protocol_from"

_FAMILIES = {0x1: (4, socket.AF_INET), 0x2: (16, socket.AF_INET6)}


class ProxyRefused(Exception):
    """The connection's PROXY header is missing or wrong; the message says how."""


def from_balancer(ip: str, balancers: tuple[str, ...]) -> bool:
    """Whether a connection from ``ip`` comes from one of the ``balancers`` (addresses or
    networks, ``[server] proxy_protocol_from``)."""
    if not balancers:
        return False
    address = address_of(ip)
    return address is not None and any(
        address in ipaddress.ip_network(net, strict=False) for net in balancers
    )


#: How a PROXY header starts, either version: enough of it to know one.
_STARTS = (SIGNATURE[:6], b"PROXY ")


class FirstBytes:
    """Watches a direct connection's first bytes: :meth:`look` at each part received
    says True once they are a PROXY header's (version 2, or version 1's ``PROXY ``: what
    only a balancer may send), False once they cannot be, None while too few have come."""

    def __init__(self) -> None:
        self._seen = b""
        self.verdict: bool | None = None

    def look(self, data: bytes) -> bool | None:
        if self.verdict is None and data:
            self._seen = (self._seen + data)[:6]
            if any(self._seen.startswith(start) for start in _STARTS):
                self.verdict = True
            elif not any(start.startswith(self._seen) for start in _STARTS):
                self.verdict = False
        return self.verdict


class Header:
    """A version 2 header read a part at a time: :meth:`wants` says how many bytes more
    to read (never more than the header has), :meth:`feed` takes them; once ``wants()``
    is 0, :attr:`source` is the client's ``(ip, port)``, or None for a ``LOCAL``
    connection (the balancer's own)."""

    def __init__(self) -> None:
        self._data = b""
        self._length: int | None = None
        self.source: tuple[str, int] | None = None

    def wants(self) -> int:
        if self._length is None:
            return FIXED - len(self._data)
        return FIXED + self._length - len(self._data)

    def feed(self, data: bytes) -> None:
        """Take ``data`` (at most :meth:`wants` bytes); :class:`ProxyRefused` when the
        header is not one."""
        self._data += data
        if self._length is None:
            if not SIGNATURE.startswith(self._data[:12]):
                if self._data.startswith(b"PROXY "[: len(self._data)]):
                    raise ProxyRefused("a PROXY header of version 1: send version 2")
                raise ProxyRefused("no PROXY header (version 2)")
            if len(self._data) < FIXED:
                return
            version, command = self._data[12] >> 4, self._data[12] & 0xF
            if version != 2 or command not in (0, 1):
                raise ProxyRefused(f"a PROXY header of version {version}, command {command}")
            (self._length,) = struct.unpack("!H", self._data[14:16])
            if self._length > MOST:
                raise ProxyRefused(f"a PROXY header of {self._length} bytes (at most {MOST})")
        if self.wants() == 0:
            self.source = _source(self._data)


def _source(header: bytes) -> tuple[str, int] | None:
    command, family, transport = header[12] & 0xF, header[13] >> 4, header[13] & 0xF
    if command == 0 or family == 0:  # LOCAL, or a client the balancer cannot name
        return None
    if family not in _FAMILIES or transport != 0x1:
        raise ProxyRefused(f"a PROXY header for family {family}, transport {transport}")
    size, kind = _FAMILIES[family]
    if len(header) < FIXED + 2 * size + 4:
        raise ProxyRefused("a PROXY header too short for its addresses")
    ip = socket.inet_ntop(kind, header[FIXED : FIXED + size])
    (port,) = struct.unpack("!H", header[FIXED + 2 * size : FIXED + 2 * size + 2])
    return ip, port


def read_header(sock: socket.socket, seconds: float = HEADER_SECONDS) -> tuple[str, int] | None:
    """Read the header at the start of ``sock`` (blocking, for at most ``seconds``); the
    client's ``(ip, port)``, or None for the balancer's own connection. The socket's
    timeout is left as it was."""
    header = Header()
    deadline = time.monotonic() + seconds
    before = sock.gettimeout()
    try:
        while header.wants():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProxyRefused(f"no PROXY header within {seconds:g} s")
            sock.settimeout(left)
            try:
                data = sock.recv(header.wants())
            except TimeoutError:
                raise ProxyRefused(f"no PROXY header within {seconds:g} s") from None
            except OSError as exc:
                raise ProxyRefused(f"the connection failed: {exc.strerror or exc}") from None
            if not data:
                raise ProxyRefused("the connection closed before its PROXY header ended")
            header.feed(data)
    finally:
        with suppress(OSError):  # closed meanwhile
            sock.settimeout(before)
    return header.source


def header_bytes(ip: str, port: int, to: tuple[str, int], local: bool = False) -> bytes:
    """A version 2 header saying a TCP connection comes from ``(ip, port)`` to ``to``
    (``local``: the balancer's own connection), as a balancer sends it."""
    address = ipaddress.ip_address(ip)
    family = 0x1 if address.version == 4 else 0x2
    kind = socket.AF_INET if family == 0x1 else socket.AF_INET6
    body = (
        socket.inet_pton(kind, ip) + socket.inet_pton(kind, to[0]) + struct.pack("!HH", port, to[1])
    )
    command = 0x20 if local else 0x21
    return SIGNATURE + bytes([command, family << 4 | 0x1]) + struct.pack("!H", len(body)) + body
