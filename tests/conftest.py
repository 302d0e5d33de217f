"""Shared fixtures: a sandbox with a real config file, real homes and real tenant stores."""

from __future__ import annotations

import csv
import io
import logging
import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from listferry.testing import Sandbox

# Third-party packs installed in the same environment stay out of the host's own tests.
os.environ["LISTFERRY_LOAD_PLUGINS"] = ""

HEADER = ("email", "first_name", "last_name", "segment_code")


def csv_text(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER, delimiter=",") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def people(n: int, start: int = 0, segment: str = "GOLD") -> list[tuple[str, str, str, str]]:
    return [
        (f"p{i}@example.org", f"First{i}", f"Last{i}", segment) for i in range(start, start + n)
    ]


def on_a_terminal(command: Sequence[str]) -> tuple[int, str]:
    """Run ``command`` with its stderr on a pseudo-terminal: (exit code, what it wrote)."""
    import subprocess

    leader, follower = os.openpty()
    try:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the follower side closed: the process is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(leader)


@pytest.fixture
def ws(tmp_path: Path) -> Sandbox:
    """An operator's folder: the starter config ``listferry init`` writes, no tenant yet."""
    return Sandbox.from_starter(tmp_path)


def write_module(folder: Path, name: str, source: str) -> None:
    """A plugin module ``name`` in ``folder`` (dedented ``source``)."""
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on ``sys.path`` for plugin modules the config's ``plugins`` names."""
    folder = tmp_path / "plugin_modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


class Served:
    """Built-in servers running in this process on 127.0.0.1, on free ports."""

    def __init__(self, ws: Sandbox, protocols: Sequence[str], **settings: Any) -> None:
        from dataclasses import replace

        from listferry.serve.keys import ensure_server_keys
        from listferry.serve.runtime import ServerRuntime

        app = ws.app()
        ports = {"ftp_port": 0, "ftps_port": 0, "sftp_port": 0, "upload_grace": 0}
        self.settings = replace(app.config.server, **{**ports, **settings})
        ensure_server_keys(self.settings)
        self.runtime = ServerRuntime.create(app, self.settings)
        self.servers = [app.host.servers.get(p)(self.runtime) for p in protocols]
        self.ports: dict[str, int] = {}

    def __enter__(self) -> Served:
        for server in self.servers:
            for protocol, _host, port in server.start():
                self.ports[protocol] = port
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.stop(5)
        self.runtime.uploads.stop(5)


@pytest.fixture
def served(ws: Sandbox):
    """``with served(["sftp"], block_seconds=1) as s: s.ports["sftp"]`` for the test's servers."""

    def start(protocols: Sequence[str], **settings: Any) -> Served:
        return Served(ws, protocols, **settings)

    return start


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[str]]:
    """``events("upload")``: the structured server log lines of that kind so far."""
    caplog.set_level(logging.INFO, logger="listferry.server")
    return lambda kind: [m for m in caplog.messages if m.startswith(f"event={kind} ")]
