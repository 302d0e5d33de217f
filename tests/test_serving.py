"""The server toolkit every protocol shares: the jail, the login guard, the gatekeeper."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from listferry.config import ServerSettings, Tenant
from listferry.config.passwords import hash_password
from listferry.serve.jail import OutsideHome, jail, virtual
from listferry.serve.logins import Gatekeeper, LoginGuard, ip_in
from listferry.testing import Sandbox


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    acme, acme2 = tmp_path / "homes" / "acme", tmp_path / "homes" / "acme2"
    for home in (acme, acme2):
        (home / "sub").mkdir(parents=True)
        (home / "list.csv").write_text("email\n")
    return acme, acme2


@pytest.mark.parametrize("path", ["list.csv", "/list.csv", "sub/../list.csv", "../../list.csv"])
def test_jail_keeps_paths_inside_the_home(homes: tuple[Path, Path], path: str) -> None:
    acme, _ = homes
    assert jail(acme, path) == (acme / "list.csv").resolve()


@pytest.mark.parametrize(
    "path", ["../acme2/list.csv", "/../acme2/list.csv", "../../homes/acme2/list.csv"]
)
def test_dot_dot_stops_at_the_home_and_never_reaches_a_neighbour(
    homes: tuple[Path, Path], path: str
) -> None:
    acme, _ = homes
    # ".." cannot climb above "/": the path lands inside acme's own home
    assert jail(acme, path).is_relative_to(acme.resolve())


@pytest.mark.parametrize("path", ["..\\acme2\\list.csv", "list.csv\x00.txt", "sub\\x"])
def test_backslashes_and_nul_bytes_are_refused(homes: tuple[Path, Path], path: str) -> None:
    with pytest.raises(OutsideHome):
        jail(homes[0], path)


def test_a_symlink_out_of_the_home_is_refused_wherever_it_sits(homes: tuple[Path, Path]) -> None:
    acme, acme2 = homes
    os.symlink(acme2, acme / "escape")
    os.symlink(acme2 / "list.csv", acme / "sub" / "theirs.csv")
    for path in ("escape", "escape/list.csv", "sub/theirs.csv", "/escape/../escape/list.csv"):
        with pytest.raises(OutsideHome):
            jail(acme, path)


def test_prefix_confusion_acme_cannot_reach_acme2(homes: tuple[Path, Path]) -> None:
    acme, acme2 = homes
    os.symlink(acme2, acme / "x")
    with pytest.raises(OutsideHome):
        jail(acme, "x/list.csv")
    assert virtual(acme, acme / "sub") == "/sub"
    assert virtual(acme, acme) == "/"


def settings(**values: object) -> ServerSettings:
    return ServerSettings(
        **{"delay_after_failures": 2, "block_after_failures": 4, "block_seconds": 0.3, **values}
    )


class Clock:
    """A monotonic clock the test moves on by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_logins_are_delayed_then_blocked_and_the_block_lifts() -> None:
    clock = Clock()
    guard = LoginGuard(settings(), clock)
    assert [guard.failed("127.0.0.9") for _ in range(3)] == [0.0, 0.5, 1.0]
    assert not guard.blocked("127.0.0.9")
    guard.failed("127.0.0.9")
    assert guard.blocked("127.0.0.9")
    assert guard.admit("127.0.0.9") == "address blocked after repeated failed logins"
    assert guard.admit("127.0.0.8") is None  # other addresses are not affected
    clock.now += 0.29
    assert guard.blocked("127.0.0.9")
    clock.now += 0.02  # block_seconds (0.3) have passed
    assert guard.admit("127.0.0.9") is None
    assert guard.failed("127.0.0.9") == 0.0  # and the count starts again


def test_connection_limits_per_address_and_in_all() -> None:
    guard = LoginGuard(settings(max_connections=3, max_connections_per_ip=2))
    assert guard.admit("127.0.0.1") is None and guard.admit("127.0.0.1") is None
    assert guard.admit("127.0.0.1") == "too many connections from this address"
    assert guard.admit("127.0.0.2") is None
    assert guard.admit("127.0.0.3") == "too many connections"
    guard.release("127.0.0.1")
    assert guard.admit("127.0.0.3") is None


def test_a_good_login_forgets_only_that_accounts_failures_from_that_address() -> None:
    guard = LoginGuard(settings(delay_after_failures=10), Clock())
    for _ in range(3):
        guard.failed("127.0.0.9", "beta")  # guessing another tenant's password
        guard.succeeded("127.0.0.9", "acme")  # between good logins to its own account
    assert guard.failures("127.0.0.9") == 3 and not guard.blocked("127.0.0.9")
    guard.failed("127.0.0.9", "acme")
    guard.succeeded("127.0.0.9", "acme")  # forgets acme's failure, not beta's three
    assert guard.failures("127.0.0.9") == 3
    guard.failed("127.0.0.9", "beta")
    assert guard.blocked("127.0.0.9")


def test_the_addresses_of_one_ipv6_64_count_as_one_source() -> None:
    guard = LoginGuard(settings(delay_after_failures=10), Clock())
    for host in range(1, 5):
        guard.failed(f"2001:db8:1:2::{host:x}", "acme")
    assert guard.blocked("2001:db8:1:2:ffff::1")  # anywhere in the /64
    assert not guard.blocked("2001:db8:1:3::1")
    assert [b.source for b in guard.blocks()] == ["2001:db8:1:2::/64"]
    guard.failed("::ffff:127.0.0.5", "acme")
    assert guard.failures("127.0.0.5") == 1  # an IPv4-mapped address is its IPv4 address


def test_failures_on_one_account_from_many_addresses_delay_it_but_never_block_it() -> None:
    clock = Clock()
    guard = LoginGuard(settings(account_delay_after_failures=3, block_seconds=60), clock)
    delays = [guard.failed(f"127.0.1.{n}", "acme") for n in range(6)]
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0]  # each source failed once only
    assert guard.account_failures("acme") == 6 and not guard.blocked("127.0.1.0")
    assert guard.failed("127.0.2.1", "beta") == 0.0  # other accounts are not slowed
    guard.succeeded("127.0.0.1", "acme")  # the customer's own good login, from elsewhere
    assert guard.account_failures("acme") == 6  # forgets none of the others'
    clock.now += 601  # failures are remembered for at least 10 minutes
    assert guard.account_failures("acme") == 0
    assert guard.failed("127.0.1.0", "acme") == 0.0


def test_connections_waiting_to_log_in_have_a_pool_per_protocol_and_per_address() -> None:
    guard = LoginGuard(settings(max_prelogin_connections=2, max_prelogin_per_ip=2))
    assert guard.admit("127.0.0.2", "sftp") is None and guard.admit("127.0.0.2", "sftp") is None
    assert guard.admit("127.0.0.2", "ftp") == (
        "too many connections waiting to log in from this address"
    )
    assert guard.admit("127.0.0.3", "sftp") == "too many connections waiting to log in"
    assert guard.admit("127.0.0.3", "ftp") is None  # FTP's pool is its own
    guard.logged_in("127.0.0.2", "sftp")  # a login leaves the pool
    assert guard.admit("127.0.0.3", "sftp") is None
    guard.release("127.0.0.2", "sftp", logged_in=True)
    guard.release("127.0.0.2", "sftp")
    assert guard.admit("127.0.0.2", "ftp") is None


def test_blocks_are_kept_in_a_file_that_outlasts_the_guard_and_lifts_them(tmp_path: Path) -> None:
    from listferry.serve.blocks import BlockFile

    path = tmp_path / "blocked.db"
    first = LoginGuard(settings(block_seconds=60), blocks=path)
    for _ in range(4):
        first.failed("127.0.0.9", "acme")
    again = LoginGuard(settings(block_seconds=60), blocks=path)  # serve started again
    assert again.blocked("127.0.0.9")
    [block] = again.blocks()
    assert (block.source, block.failures, block.accounts) == ("127.0.0.9", 4, ("acme",))
    assert BlockFile(path).remove("127.0.0.9", block.until - 30)  # `server unblock`
    assert not again.blocked("127.0.0.9") and again.failures("127.0.0.9") == 0


def tenant(tmp_path: Path, **values: object) -> Tenant:
    return Tenant(name="acme", home=str(tmp_path), state_dir=tmp_path / "s", **values)


def test_passwords_are_checked_against_the_salted_hash(tmp_path: Path) -> None:
    gate = Gatekeeper(
        {"acme": tenant(tmp_path, password_hash=hash_password("pw-1"))}, LoginGuard(settings())
    )
    assert gate.password("acme", "pw-1", "127.0.0.1", "ftp").name == "acme"
    assert gate.password("acme", "pw-2", "127.0.0.1", "ftp") is None
    assert gate.password("nobody", "pw-1", "127.0.0.1", "ftp") is None


def test_sftp_needs_an_allow_list_and_an_address_in_it(tmp_path: Path) -> None:
    hashed = hash_password("pw")
    open_to_all = tenant(tmp_path, password_hash=hashed)
    listed = tenant(tmp_path, password_hash=hashed, allow_ips=("127.0.0.0/30",))
    gate = Gatekeeper({"acme": open_to_all}, LoginGuard(settings()))
    assert gate.password("acme", "pw", "127.0.0.1", "sftp") is None
    assert gate.password("acme", "pw", "127.0.0.1", "ftp") is not None
    gate = Gatekeeper({"acme": listed}, LoginGuard(settings()))
    assert gate.password("acme", "pw", "127.0.0.2", "sftp") is not None
    assert gate.password("acme", "pw", "127.0.0.9", "sftp") is None
    assert gate.password("acme", "pw", "127.0.0.9", "ftp") is None


def test_public_keys_match_by_type_and_blob(tmp_path: Path) -> None:
    blob = b"\x00\x00\x00\x0bssh-ed25519" + os.urandom(32)
    line = f"ssh-ed25519 {base64.b64encode(blob).decode()} crm@acme"
    gate = Gatekeeper(
        {"acme": tenant(tmp_path, ssh_keys=(line,), allow_ips=("127.0.0.1",))},
        LoginGuard(settings()),
    )
    assert gate.public_key("acme", "ssh-ed25519", blob, "127.0.0.1", "sftp") is not None
    assert gate.public_key("acme", "ssh-rsa", blob, "127.0.0.1", "sftp") is None
    assert gate.public_key("acme", "ssh-ed25519", blob[:-1] + b"x", "127.0.0.1", "sftp") is None


def test_ipv4_mapped_addresses_match_ipv4_networks() -> None:
    assert ip_in("::ffff:127.0.0.1", ("127.0.0.0/8",))
    assert not ip_in("not-an-ip", ("0.0.0.0/0",))


def test_init_makes_the_server_keys_once(ws: Sandbox) -> None:
    first = ws.cli("init")
    assert first.exit_code == 0, first.output
    server = ws.app().config.server
    assert server.tls_cert.exists() and server.ssh_host_key.exists()
    assert oct(server.ssh_host_key.stat().st_mode & 0o777) == "0o600"
    assert oct(server.tls_key.stat().st_mode & 0o777) == "0o600"
    key = server.ssh_host_key.read_bytes()
    second = ws.cli("init")
    assert second.exit_code == 0 and "made" not in second.output
    assert server.ssh_host_key.read_bytes() == key


def test_serve_without_keys_says_to_run_init(ws: Sandbox) -> None:
    result = ws.cli("serve", "--protocols", "sftp", "--sftp-port", "0")
    assert result.exit_code == 1
    assert "listferry init" in result.output


def test_refusals_from_many_addresses_write_a_bounded_number_of_lines(caplog) -> None:
    """Review finding: a scan of a session's passive port from thousands of addresses
    wrote a line each. 20 a minute per source (an IPv6 /64 is one), 200 per reason."""
    import logging
    from types import SimpleNamespace

    from listferry.serve.log import Budget
    from listferry.serve.runtime import ServerRuntime

    runtime = SimpleNamespace(refusals=Budget(), all_refusals=Budget(lines=200))
    with caplog.at_level(logging.INFO):
        for n in range(1000):
            ip = f"10.0.{n // 250}.{n % 250}"
            ServerRuntime.refused(runtime, "ftp", ip, "a data connection to another's port")
        for n in range(100):
            ServerRuntime.refused(runtime, "ftp", f"2001:db8::{n:x}", "too many connections")
    lines = [r.getMessage() for r in caplog.records if "event=refused" in r.getMessage()]
    assert sum("another's port" in line for line in lines) == 200
    assert sum("too many connections" in line for line in lines) == 20
