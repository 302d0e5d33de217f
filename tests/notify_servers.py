"""A real SMTP server (aiosmtpd, STARTTLS and login) and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import email
import logging
import socket
import ssl
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from remote_servers import HOST, tls_certificate

logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's own deprecation notes


class Mailbox:
    """What the SMTP server received: (envelope recipients, parsed message) each."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []
        self.logins: list[str] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content)
        with self.arrived:
            self.messages.append((list(envelope.rcpt_tos), message))
            self.arrived.notify_all()
        return "250 OK"

    def wait(self, count: int, timeout: float = 10) -> list[tuple[list[str], Message]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


class SmtpServer:
    """aiosmtpd on a free port: STARTTLS required before AUTH as user/password."""

    def __init__(self, folder: Path, user: str = "mailer", password: str = "s3cret-smtp") -> None:
        cert, key = tls_certificate(folder)
        self.ca_file = cert
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.mailbox = Mailbox()
        mailbox = self.mailbox

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (
                data.login.decode() == user and data.password.decode() == password
            )
            if ok:
                mailbox.logins.append(user)
            return AuthResult(success=ok, handled=False)

        with socket.socket() as probe:  # aiosmtpd connects to its port to see it is up
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(
            mailbox,
            hostname=HOST,
            port=self.port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_required=True,
        )

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class WebhookServer:
    """An HTTP server that records each POST; the first ``fail_first`` get a 503."""

    def __init__(self, fail_first: int = 0, status: int = 204) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                outer.requests.append((dict(self.headers), body))
                code = 503 if len(outer.requests) <= outer.fail_first else status
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/hooks/listferry"

    def __enter__(self) -> WebhookServer:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
