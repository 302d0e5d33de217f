"""FTPS done right, and an FTP listener that survives: the attacks of issue #14 on the
built-in FTP and FTPS servers, each made with real clients on 127.0.0.1."""

from __future__ import annotations

import ftplib
import io
import re
import resource
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest
from test_crash import listferry_command
from test_ftp_server import LIST, PASSWORD, add_tenant, ftp, ftp_tls, refusal

from listferry.testing import Sandbox, wait_for
from listferry_plugins.ftp.transport import TlsFtp

SECRET = b"email\r\nsecret@example.org\r\n"


def final_reply(client: ftplib.FTP) -> str:
    """The next reply that is not a preliminary (1xx) one."""
    while True:
        reply = client.getmultiline()
        if not reply.startswith("1"):
            return reply


def tls_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


class ImplicitFtp(TlsFtp):
    """An implicit-FTPS client: ftplib wrapped in TLS from the first byte."""

    def connect(self, host: str = "", port: int = 0, timeout: float = 10, *_: Any) -> str:
        self.host, self.port, self.timeout = host, port, timeout
        raw = socket.create_connection((host, port), timeout)
        self.sock = self.context.wrap_socket(raw, server_hostname=host)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


# -- finding 4: downgrade -------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["tenant require_tls", "server require_tls", "ftps port", "tls not required"]
)
def test_prot_c_after_pasv_never_lets_a_plain_data_connection_carry_an_upload(
    ws: Sandbox, served, where: str, events
) -> None:
    """Issue #14, finding 4: AUTH TLS, PROT P, PASV, then PROT C and a plain data
    connection must not store anything; where TLS is required PROT C itself is refused."""
    home = add_tenant(ws, require_tls=where == "tenant require_tls")
    protocol = "ftps" if where == "ftps port" else "ftp"
    with served([protocol], require_tls=where == "server require_tls") as s:
        client = ftp_tls(s.ports[protocol], s.settings.tls_cert)
        _host, port = client.makepasv()
        if where == "tls not required":
            client.sendcmd("PROT C")  # allowed, but not for the port set up under PROT P
        else:
            assert refusal(lambda: client.sendcmd("PROT C")).startswith("536")
        client.putcmd("STOR subscriber_list.csv")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
                plain.sendall(LIST)
        except ConnectionRefusedError:
            pass  # the port set up under PROT P is closed: nothing to send to
        assert not final_reply(client).startswith("2")
        client.quit()
    assert not (home / "subscriber_list.csv").exists()
    assert list(home.iterdir()) == []
    assert not [e for e in events("upload") if "result=ok" in e]


# -- finding 5: passive port theft -----------------------------------------------------------


def test_another_client_on_the_same_address_gets_nothing_from_a_passive_port(
    ws: Sandbox, served, events
) -> None:
    """Issue #14, finding 5: a second client from the same address, with a TLS session of
    its own, connects to another session's passive port first: it gets no data, and a
    plain data connection from another address is refused without disturbing the
    session (a scan of the passive ports breaks no one's transfer)."""
    home = add_tenant(ws)
    (home / "subscriber_list.csv").write_bytes(SECRET)
    add_tenant(ws, "beta")
    with served(["ftps", "ftp"]) as s:
        cert = s.settings.tls_cert
        victim = ftp_tls(s.ports["ftps"], cert)
        thief = ftp_tls(s.ports["ftps"], cert, user="beta")  # its own control session
        _host, port = victim.makepasv()
        victim.putcmd("RETR subscriber_list.csv")
        assert victim.getmultiline().startswith("150")
        stolen = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            try:
                with thief.context.wrap_socket(
                    raw, server_hostname="127.0.0.1", session=thief.sock.session
                ) as data:
                    while chunk := data.recv(65536):
                        stolen += chunk
            except (ssl.SSLError, ConnectionError):
                pass
        assert stolen == b""
        assert final_reply(victim).startswith("522")
        assert victim.retrbinary("RETR subscriber_list.csv", io.BytesIO().write).startswith("226")
        victim.quit()
        thief.quit()

        plain = ftp(s.ports["ftp"])  # plain FTP: only from the control connection's address
        _host, port = plain.makepasv()
        plain.putcmd("RETR subscriber_list.csv")
        assert plain.getmultiline().startswith("150")
        with socket.create_connection(("127.0.0.1", port), 10, ("127.0.0.2", 0)) as foreign:
            assert foreign.recv(65536) == b""
        # ... without a word to the session, whose own client then takes its data.
        with socket.create_connection(("127.0.0.1", port), 10) as own:
            got = b""
            while chunk := own.recv(65536):
                got += chunk
        assert got == SECRET
        assert final_reply(plain).startswith("226")
        plain.quit()
    refused = events("refused")
    assert [e for e in refused if "did not resume the control connection's TLS session" in e]
    assert [e for e in refused if "ip=127.0.0.2 reason=\"a data connection to another's port" in e]


def test_a_client_that_cannot_resume_its_tls_session_needs_tls_session_reuse_off(
    ws: Sandbox, served, events
) -> None:
    """Issue #14, finding 5: Python's stock ``ftplib.FTP_TLS`` does not resume the
    control connection's session for data: refused, unless its tenant says
    ``tls_session_reuse = false``."""
    add_tenant(ws)
    add_tenant(ws, "beta", tls_session_reuse=False)
    with served(["ftps"]) as s:
        for user, works in (("acme", False), ("beta", True)):
            client = ftplib.FTP_TLS(context=tls_context(s.settings.tls_cert), timeout=10)
            client.connect("127.0.0.1", s.ports["ftps"])
            client.login(user, PASSWORD)
            client.prot_p()
            if works:
                client.storbinary("STOR subscriber_list.csv", io.BytesIO(LIST))
                assert client.nlst() == ["subscriber_list.csv"]
            else:
                with pytest.raises((ftplib.error_perm, OSError)):
                    client.storbinary("STOR subscriber_list.csv", io.BytesIO(LIST))
            client.close()
    assert not (ws.home_of("acme") / "subscriber_list.csv").exists()
    assert (ws.home_of("beta") / "subscriber_list.csv").read_bytes() == LIST
    # The operator's log says what to do; the upload was refused, not cut off.
    (refused,) = [e for e in events("refused") if "tenant=acme" in e]
    assert "tls_session_reuse = false" in refused
    (upload,) = [e for e in events("upload") if "tenant=acme" in e]
    assert "result=refused" in upload


# -- finding 12: passive ports only from the range -------------------------------------------


def test_an_exhausted_passive_range_is_refused_with_425_not_a_random_port(
    ws: Sandbox, served, events
) -> None:
    """Issue #14, finding 12: when every port of ``passive_ports`` is taken, PASV and
    EPSV are refused with 425 instead of falling back to a random port."""
    add_tenant(ws)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        only = taken.getsockname()[1]
        with served(["ftp"], passive_ports=(only, only)) as s:
            client = ftp(s.ports["ftp"])
            assert refusal(client.makepasv).startswith("425")
            assert refusal(lambda: client.sendcmd("EPSV")).startswith("425")
            assert refusal(client.nlst).startswith("425")  # no data connection set up
            taken.close()
            assert client.makepasv()[1] == only  # free again: the range's port
            client.quit()
    assert [e for e in events("refused") if "every passive port is in use" in e]


# -- implicit FTPS ---------------------------------------------------------------------------


def test_implicit_ftps_speaks_tls_from_the_first_byte_to_curl_and_ftplib(
    ws: Sandbox, served, tmp_path: Path, events
) -> None:
    """Issue #14 (FTPS done right): the optional implicit FTPS port takes curl's
    ``ftps://`` and ftplib over TLS from the first byte, with the same tenants and guard;
    it says nothing in plain text."""
    home = add_tenant(ws)
    upload = tmp_path / "subscriber_list.csv"
    upload.write_bytes(LIST)
    with served(["ftps"], implicit_ftps_port=0) as s:
        port = s.ports["ftps-implicit"]
        cert = s.settings.tls_cert
        done = subprocess.run(
            [
                *("curl", "-sS", "--fail", "--cacert", str(cert), "-u", f"acme:{PASSWORD}"),
                *("-T", str(upload), f"ftps://127.0.0.1:{port}/"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        client = ImplicitFtp(context=tls_context(cert), timeout=10)
        client.connect("127.0.0.1", port)
        client.login("acme", PASSWORD)
        client.prot_p()
        assert client.nlst() == ["subscriber_list.csv"]
        client.quit()
        wrong = ImplicitFtp(context=tls_context(cert), timeout=10)
        wrong.connect("127.0.0.1", port)
        assert refusal(lambda: wrong.login("acme", "wrong")).startswith("530")
        wrong.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"USER acme\r\n")
            try:
                answer = raw.recv(1024)
            except ConnectionResetError:  # a failed TLS handshake: no plain text ever
                answer = b""
            assert b"220" not in answer
    assert (home / "subscriber_list.csv").read_bytes() == LIST
    assert [e for e in events("upload") if "protocol=ftps " in e and "result=ok" in e]


# -- finding 10: the login deadline ----------------------------------------------------------


def test_noop_never_stretches_the_login_deadline(ws: Sandbox, served) -> None:
    """Issue #14, finding 10: the login deadline runs from the connection's start: an
    FTP connection that sends NOOP without logging in, or an SSH connection that keeps
    sending SSH_MSG_IGNORE, is closed at ``handshake_timeout``."""
    import paramiko

    add_tenant(ws)
    # 3 s: time enough for an SSH key exchange on a busy machine, not for 60 x 0.2 s.
    with served(["ftp", "sftp"], handshake_timeout=3, idle_timeout=30) as s:
        client = ftp(s.ports["ftp"], user=None)
        closed = threading.Event()
        for _ in range(60):  # 60 x 0.2 s: far past the 3 s deadline
            try:
                client.voidcmd("NOOP")
            except (ftplib.error_temp, EOFError, OSError):
                closed.set()
                break
            closed.wait(0.2)
        client.close()
        assert closed.is_set()

        transport = paramiko.Transport(("127.0.0.1", s.ports["sftp"]))
        transport.start_client(timeout=10)
        for _ in range(60):
            if not transport.is_active():
                break
            transport.send_ignore()
            closed.clear()
            closed.wait(0.2)
        assert not transport.is_active()
        transport.close()


# -- finding 1: the listener survives running out of file descriptors ------------------------

FD_LIMIT = 64


def test_the_ftp_listener_survives_running_out_of_file_descriptors(
    ws: Sandbox, tmp_path: Path
) -> None:
    """Issue #14, finding 1: a flood of connections exhausts the file descriptors of
    ``listferry serve`` (soft and hard limit lowered, so raising the soft one cannot hide
    it); once the flood is over, an FTP login and upload work on the same port."""
    base = [*listferry_command(), "--config", str(ws.config_path)]
    subprocess.run([*base, "init"], check=True, capture_output=True, timeout=60)
    text = ws.config_path.read_text()
    limits = (
        "max_connections = 500\nmax_connections_per_ip = 500\nmax_prelogin_connections = 500\n"
        "max_prelogin_per_ip = 500\nimplicit_ftps_port = 0\n"
    )
    ws.config_path.write_text(f"{text}\n[server]\n{limits}")
    home = add_tenant(ws)
    log = tmp_path / "serve.log"

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    command = [*base, "serve", "--protocols", "ftp,ftps", "--ftp-port", "0", "--ftps-port", "0"]
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=few_descriptors
        )
    lines: Queue[str] = Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout])
    reader.start()
    flood: list[socket.socket] = []
    try:
        ports: dict[str, int] = {}
        while len(ports) < 3:
            try:
                line = lines.get(timeout=30)
            except Empty:
                raise AssertionError(f"no listening lines: {log.read_text()}") from None
            if found := re.fullmatch(r"listening (\S+) 127\.0\.0\.1:(\d+)\n", line):
                ports[found[1]] = int(found[2])
        assert set(ports) == {"ftp", "ftps", "ftps-implicit"}
        port = ports["ftp"]
        for _ in range(FD_LIMIT):  # more than the process can take
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        wait_for(lambda: "Too many open files" in log.read_text(), "the server to run out")
        for sock in flood:
            sock.close()
        flood.clear()

        def uploads() -> bool:
            try:
                client = ftp(port)
                client.storbinary("STOR subscriber_list.csv", io.BytesIO(LIST))
                client.quit()
            except (OSError, EOFError, ftplib.Error):
                return False
            return True

        wait_for(uploads, "a login and upload after the flood", timeout=30)
    finally:
        for sock in flood:
            sock.close()
        proc.terminate()
        code = proc.wait(timeout=30)
        reader.join(5)
        proc.stdout.close()
    assert code == 0, log.read_text()
    assert (home / "subscriber_list.csv").read_bytes() == LIST
    assert "Traceback" not in log.read_text()
