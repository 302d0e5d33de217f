"""The PROXY protocol v2 header (listferry.serve.proxy): read whole or in parts, refused
when broken, and the first bytes of a client that sends one itself recognised.

The servers' use of it, behind a real HAProxy, is tests/cluster/test_ha.py.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from listferry.config import load_config
from listferry.errors import ConfigError
from listferry.serve.proxy import (
    SIGNATURE,
    FirstBytes,
    Header,
    ProxyRefused,
    from_balancer,
    header_bytes,
    read_header,
)


def parsed(data: bytes, step: int | None = None) -> tuple[str, int] | None:
    header = Header()
    at = 0
    while header.wants():
        size = min(header.wants(), step or header.wants())
        header.feed(data[at : at + size])
        at += size
    assert at == len(data) or data[at:] == b"after"
    return header.source


@pytest.mark.parametrize("step", [None, 1, 5])
def test_a_header_names_the_client_whether_read_at_once_or_a_byte_at_a_time(step) -> None:
    v4 = header_bytes("192.0.2.7", 51234, ("10.0.0.5", 22))
    assert parsed(v4, step) == ("192.0.2.7", 51234)
    v6 = header_bytes("2001:db8::7", 443, ("2001:db8::1", 21))
    assert parsed(v6, step) == ("2001:db8::7", 443)
    assert parsed(header_bytes("10.0.0.9", 1, ("10.0.0.5", 22), local=True), step) is None


def test_tlvs_after_the_addresses_are_read_and_skipped() -> None:
    plain = header_bytes("192.0.2.7", 51234, ("10.0.0.5", 22))
    tlv = b"\x04" + struct.pack("!H", 3) + b"abc"  # PP2_TYPE_NOOP
    longer = plain[:14] + struct.pack("!H", 12 + len(tlv)) + plain[16:] + tlv
    assert parsed(longer + b"after") == ("192.0.2.7", 51234)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PROXY TCP4 192.0.2.7 10.0.0.5 51234 22\r\n", "version 1: send version 2"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "no PROXY header"),
        (b"USER acme\r\n\r\n\r\n", "no PROXY header"),
        (SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1, command 1"),
        (SIGNATURE + b"\x2f\x11\x00\x0c" + bytes(12), "version 2, command 15"),
        (SIGNATURE + b"\x21\x11\xff\xff", "65535 bytes"),
        (SIGNATURE + b"\x21\x31\x00\x00", "family 3"),
        (SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "transport 2"),
        (SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "too short for its addresses"),
    ],
)
def test_a_broken_header_is_refused_saying_why(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyRefused, match=reason):
        parsed(data)


def test_reading_from_a_socket_takes_the_header_only_and_refuses_silence_and_hang_ups() -> None:
    server, client = socket.socketpair()
    with server, client:
        client.sendall(header_bytes("192.0.2.7", 5, ("10.0.0.5", 22)) + b"SSH-2.0-x\r\n")
        server.settimeout(7)
        assert read_header(server) == ("192.0.2.7", 5)
        assert server.gettimeout() == 7  # left as it was
        assert server.recv(100) == b"SSH-2.0-x\r\n"  # the client's bytes are its protocol's
    server, client = socket.socketpair()
    with server, client:
        client.sendall(SIGNATURE[:8])
        with pytest.raises(ProxyRefused, match=r"no PROXY header within 0\.2 s"):
            read_header(server, seconds=0.2)
    server, client = socket.socketpair()
    with server:
        client.sendall(SIGNATURE)
        threading.Timer(0.05, client.close).start()
        with pytest.raises(ProxyRefused, match="closed before its PROXY header ended"):
            read_header(server)


@pytest.mark.parametrize(
    ("parts", "verdict"),
    [
        ([header_bytes("192.0.2.7", 5, ("10.0.0.5", 22))], True),
        ([b"\r", b"\n\r", b"\n\x00\r"], True),  # split however TCP likes
        ([b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"], True),
        ([b"SSH-2.0-OpenSSH_9.2\r\n"], False),
        ([b"USER acme\r\n"], False),
        ([b"\r\n"], None),  # not yet known
        ([b"\r\nUSER"], False),
    ],
)
def test_a_clients_first_bytes_tell_a_proxy_header(parts: list[bytes], verdict) -> None:
    first = FirstBytes()
    for part in parts:
        first.look(part)
    assert first.verdict is verdict


def test_only_the_named_balancers_may_send_a_header() -> None:
    balancers = ("10.0.0.5", "10.1.0.0/16", "2001:db8:1::/48")
    assert from_balancer("10.0.0.5", balancers)
    assert from_balancer("::ffff:10.0.0.5", balancers)  # an IPv4 address mapped into IPv6
    assert from_balancer("10.1.200.3", balancers)
    assert from_balancer("2001:db8:1:2::9", balancers)
    assert not from_balancer("10.0.0.6", balancers)
    assert not from_balancer("10.0.0.5", ())
    assert not from_balancer("not an address", balancers)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('masquerade_address = "ftp.example.org"', "not an IPv4 address"),
        ('masquerade_address = "2001:db8::1"', "not an IPv4 address"),
        ('proxy_protocol_from = ["haproxy"]', "not an IP address or CIDR network"),
        ('proxy_protocol_from = "10.0.0.5"', "must be a list"),
    ],
)
def test_the_settings_are_checked_with_the_line_named(tmp_path, line: str, problem: str) -> None:
    path = tmp_path / "listferry.toml"
    path.write_text(f'[listferry]\nstate = "state"\n\n[server]\n{line}\n')
    with pytest.raises(ConfigError, match=problem) as refused:
        load_config(path)
    assert "line 5" in str(refused.value)


def test_the_settings_are_taken() -> None:
    from listferry.config.settings import SERVER_KEYS

    assert SERVER_KEYS["masquerade_address"][0] == ""
    assert SERVER_KEYS["proxy_protocol_from"][0] == []
