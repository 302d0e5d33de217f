"""Shared fixtures: a workspace with a real config file, real homes and real tenant stores."""

from __future__ import annotations

import csv
import io
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from listferry.app import App, open_app
from listferry.cli import cli
from listferry.config.edit import write_atomically
from listferry.config.starter import STARTER_CONFIG
from listferry.names import count_name
from listferry.ops.night import sync_and_export
from listferry.ops.tenants import add_tenant
from listferry.runs import RunRecord
from listferry.store.database import Store

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


class Workspace:
    """A folder with a config, tenants' homes and state, and ways to drive them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_path = root / "listferry.toml"
        write_atomically(self.config_path, STARTER_CONFIG)

    def app(self) -> App:
        return open_app(self.config_path)

    def add_tenant(self, name: str = "acme", **settings: Any) -> Path:
        add_tenant(self.app(), name, settings)
        home = self.home(name)
        home.mkdir(parents=True, exist_ok=True)
        return home

    def home(self, name: str = "acme") -> Path:
        return Path(self.app().config.tenant(name).home)

    def upload(
        self,
        rows: Sequence[Sequence[str]] | str | bytes,
        tenant: str = "acme",
        name: str = "subscriber_list.csv",
        count: int | str | None = None,
        header: Sequence[str] = HEADER,
    ) -> Path:
        """Put a list file (rows, text or bytes) and, if given, its count file in the home."""
        path = self.home(tenant) / name
        if isinstance(rows, bytes):
            path.write_bytes(rows)
        elif isinstance(rows, str):
            path.write_bytes(rows.encode("utf-8"))
        else:
            path.write_bytes(csv_text(rows, header).encode("utf-8"))
        if count is not None:
            (self.home(tenant) / count_name(name)).write_text(f"{count}\n")
        return path

    def sync(self, tenant: str = "acme", force: bool = False) -> list[RunRecord]:
        app = self.app()
        return sync_and_export(app, app.config.tenant(tenant), force)

    def store(self, tenant: str = "acme") -> Store:
        return Store(self.app().config.tenant(tenant).database)

    def subscribers(self, tenant: str = "acme", status: str = "active") -> dict[str, dict]:
        with self.store(tenant) as store:
            return {row["email"]: row for row in store.subscribers(status)}

    def cli(self, *args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(cli, ["--config", str(self.config_path), *args], input=input)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


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

    def __init__(self, ws: Workspace, protocols: Sequence[str], **settings: Any) -> None:
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
def served(ws: Workspace):
    """``with served(["sftp"], block_seconds=1) as s: s.ports["sftp"]`` for the test's servers."""

    def start(protocols: Sequence[str], **settings: Any) -> Served:
        return Served(ws, protocols, **settings)

    return start
