"""A temporary listferry for tests: a config, tenants with real homes and stores, real files.

A pack's test reads its sample export, syncs it, exports a return file and looks at
the result, in a few lines::

    from listferry.testing import Sandbox

    def test_sample(tmp_path):
        box = Sandbox(tmp_path, plugins=["listferry_mycrm"], dialect="mycrm")
        box.upload(Path(__file__).parent / "sample_export.csv")
        run = box.sync()
        assert run.status == "applied", run.reason
        assert box.subscribers()["ada@example.org"]["first_name"] == "Ada"
        rows = box.export_rows(template="mycrm")

Everything is real: the config file, the tenants' homes and SQLite stores, the pipeline
and the templates, exactly as ``listferry sync`` and ``listferry export`` run them.
``plugins`` are the pack's modules; they are loaded whether or not the pack is
installed, and other installed packs stay out unless named.

listferry's own tests use the same kit on an operator's folder:
:meth:`Sandbox.from_starter` starts from the config ``listferry init`` writes, and
tests add tenants, edit the config's text and drive the command line::

    box = Sandbox.from_starter(tmp_path)
    box.add_tenant("acme", strategy="incremental")
    box.upload([("ada@example.org", "Ada", "Lovelace", "GOLD")], count=1)
    [run] = box.sync_all()
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from listferry.app import App, open_app
from listferry.config.edit import toml_value, write_atomically
from listferry.config.settings import Tenant
from listferry.config.starter import STARTER_CONFIG
from listferry.export.run import ExportResult, export_tenant
from listferry.names import count_name
from listferry.ops.tenants import add_tenant
from listferry.runs import RunRecord
from listferry.store.database import Store
from listferry.sync.check import CheckResult, check_file
from listferry.times import parse_iso

if TYPE_CHECKING:
    from click.testing import Result

__all__ = ["Sandbox", "wait_for"]

T = TypeVar("T")

#: The columns of the built-in dialect, the header of rows uploaded without one.
_LIST_HEADER = ("email", "first_name", "last_name", "segment_code")


def wait_for(condition: Callable[[], T], what: str = "the condition", timeout: float = 10) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail the test
    after ``timeout`` seconds, naming ``what`` was awaited. For a server's or a process's
    doings, which no event announces to the test."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return result


class Sandbox:
    """A config, tenants and their homes under ``root``, driven like the CLI drives them.

    ``Sandbox(root, plugins=[...], **settings)`` is a pack's sandbox: a minimal config
    that loads ``plugins`` (module names: the pack under test) and keeps other installed
    packs out, and one tenant, named ``tenant`` (``test``), already added. Any other
    keyword is a setting of that tenant, as in the config's tenant table
    (``dialect="mycrm"``, ``strategy="incremental"``, ``export_template="mycrm"``); its
    ``count_file`` is ``optional`` unless given.

    The methods that act on a tenant act on the sandbox's own unless given
    ``tenant="name"``, one added with :meth:`add_tenant`.
    """

    def __init__(
        self,
        root: Path | str,
        plugins: Sequence[str] = (),
        tenant: str = "test",
        **settings: Any,
    ) -> None:
        self._begin(root, tenant, plugins, only_named_packs=True)
        lines = [
            "[listferry]",
            'state = "state"',
            'homes = "homes"',
            f"plugins = {toml_value(list(self.plugins))}",
            "",
        ]
        write_atomically(self.config_path, "\n".join(lines))
        self.add_tenant(tenant, **{"count_file": "optional", **settings})

    @classmethod
    def from_starter(cls, root: Path | str, tenant: str = "acme") -> Sandbox:
        """A sandbox on the starter config ``listferry init`` writes, as an operator
        begins: its ``[listferry]`` and ``[defaults]`` tables and no tenant yet.

        Edit the config's text at :attr:`config_path` as an operator would (a
        ``plugins = [...]`` line, ``[defaults]`` settings), then add tenants with
        :meth:`add_tenant`; ``tenant`` (``acme``) names the one the methods act on by
        default, and the one ``add_tenant()`` adds when given no name.
        Plugins load as ``listferry`` loads them: the config's ``plugins`` and the
        installed packs ``LISTFERRY_LOAD_PLUGINS`` lets in.
        """
        box = cls.__new__(cls)
        box._begin(root, tenant, (), only_named_packs=False)
        write_atomically(box.config_path, STARTER_CONFIG)
        return box

    def _begin(
        self, root: Path | str, tenant: str, plugins: Sequence[str], only_named_packs: bool
    ) -> None:
        #: The folder everything is under: the config, ``state/``, ``homes/``.
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        #: The name of the sandbox's own tenant, the one the methods act on by default.
        self.tenant_name = tenant
        #: The modules the config's ``plugins`` names.
        self.plugins = tuple(plugins)
        #: The config file, ``listferry.toml``: every command reads it afresh.
        self.config_path = self.root / "listferry.toml"
        self._only_named_packs = only_named_packs

    @contextmanager
    def _loading(self) -> Iterator[None]:
        """A pack's sandbox keeps installed packs not named in ``plugins`` out, as the
        operator's config would; a starter sandbox loads what the environment says."""
        if not self._only_named_packs:
            yield
            return
        before = os.environ.get("LISTFERRY_LOAD_PLUGINS")
        os.environ["LISTFERRY_LOAD_PLUGINS"] = ""
        try:
            yield
        finally:
            if before is None:
                del os.environ["LISTFERRY_LOAD_PLUGINS"]
            else:
                os.environ["LISTFERRY_LOAD_PLUGINS"] = before

    def app(self) -> App:
        """The config and plugins, freshly read, as every command starts."""
        with self._loading():
            return open_app(self.config_path)

    def _tenant(self, tenant: str | None) -> Tenant:
        return self.app().config.tenant(tenant or self.tenant_name)

    def add_tenant(self, name: str | None = None, **settings: Any) -> Path:
        """Add a tenant as ``listferry tenant add`` does, with its home; the home's path.

        ``name`` is the sandbox's own tenant unless given; ``settings`` are the tenant's
        settings, as in its table in the config (``strategy="incremental"``); the rest
        come from ``[defaults]``.
        """
        name = name or self.tenant_name
        with self._loading():
            add_tenant(open_app(self.config_path), name, settings)
        home = self.home_of(name)
        home.mkdir(parents=True, exist_ok=True)
        return home

    @property
    def tenant(self) -> Tenant:
        """The sandbox's own tenant's settings, as the config reads them now."""
        return self._tenant(None)

    @property
    def home(self) -> Path:
        """The sandbox's own tenant's home folder, where the CRM's files arrive."""
        return self.home_of(self.tenant_name)

    def home_of(self, tenant: str) -> Path:
        """The home folder of the tenant named ``tenant``."""
        return Path(self._tenant(tenant).home)

    def upload(
        self,
        data: Path | str | bytes | Sequence[Sequence[str]],
        name: str | None = None,
        count: int | str | None = None,
        *,
        header: Sequence[str] = _LIST_HEADER,
        tenant: str | None = None,
    ) -> Path:
        """Put a list file in the tenant's home; its path.

        ``data`` is a path (copied, keeping its name unless ``name`` is given), text,
        bytes, or rows: a list of tuples written as CSV under ``header`` (the built-in
        dialect's ``email,first_name,last_name,segment_code`` unless given). Text is
        written as UTF-8; give bytes for any other encoding. Other than a path, the file
        is ``subscriber_list.csv`` unless ``name`` is given. ``count`` also writes the
        count file, the number (or any text) on a line, under the name a sync looks for
        (:func:`listferry.count_name`).
        """
        home = self.home_of(tenant or self.tenant_name)
        if isinstance(data, Path):
            target = home / (name or data.name)
            shutil.copyfile(data, target)
        else:
            target = home / (name or "subscriber_list.csv")
            if isinstance(data, str):
                data = data.encode("utf-8")
            elif not isinstance(data, bytes):
                data = _csv_text(data, header).encode("utf-8")
            target.write_bytes(data)
        if count is not None:
            (home / count_name(target.name)).write_text(f"{count}\n", encoding="utf-8")
        return target

    def sync(self, force: bool = False, *, tenant: str | None = None) -> RunRecord:
        """Run ``listferry sync`` for the tenant; the last run (``idle`` when no file).

        ``force`` is ``--force``: a list already applied is applied again.
        """
        return self.sync_all(force, tenant=tenant)[-1]

    def sync_all(self, force: bool = False, *, tenant: str | None = None) -> list[RunRecord]:
        """Run ``listferry sync`` for the tenant; every run it made, one per pending file,
        oldest first (one ``idle`` run when there was none). For every tenant at once,
        ``cli("sync", "--all")``."""
        from listferry.ops.night import sync_and_export

        app = self.app()
        return sync_and_export(app, app.config.tenant(tenant or self.tenant_name), force)

    def store(self, tenant: str | None = None) -> Store:
        """The tenant's store, to open with ``with box.store() as store:``."""
        return Store(self._tenant(tenant).database)

    def subscribers(
        self, status: str | None = None, *, tenant: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """The stored subscribers by address: every one, or those with ``status``
        (``active``, ``unsubscribed`` or ``removed``).

        Each is a dict as ``listferry subscribers --json`` prints it; ``fields`` holds the
        columns the dialect kept, by their header as the CRM wrote it.
        """
        with self.store(tenant) as store:
            return {row["email"]: row for row in store.subscribers(status or "all")}

    def record_events(
        self, events: Iterable[Mapping[str, Any]], *, tenant: str | None = None
    ) -> tuple[int, int]:
        """Store engagement events (``email``, ``type``, ``at``, ``topic``), as a platform would.

        Returns ``(stored, already known)``.
        """
        from listferry.store.events import record_events

        with self.store(tenant) as store:
            return record_events(store, events)

    def export(self, *, tenant: str | None = None, **settings: Any) -> tuple[ExportResult, Path]:
        """Run ``listferry export`` into a folder; the result and the return file's path.

        ``settings`` override the tenant's export settings for this export
        (``template="mycrm"`` is ``export_template``; ``fields=[...]`` is ``export_fields``).
        """
        app = self.app()
        chosen = app.config.tenant(tenant or self.tenant_name)
        renamed = {
            (f"export_{key}" if not key.startswith("export_") else key): value
            for key, value in settings.items()
        }
        if "export_fields" in renamed:
            renamed["export_fields"] = tuple(renamed["export_fields"])
        out = self.root / "returned"
        out.mkdir(exist_ok=True)
        result = export_tenant(app, replace(chosen, **renamed), to=str(out))
        return result, out / result.file

    def export_text(
        self, encoding: str = "utf-8", *, tenant: str | None = None, **settings: Any
    ) -> str:
        """The return file's text, as the CRM would read it (line endings kept)."""
        _, path = self.export(tenant=tenant, **settings)
        with open(path, encoding=encoding, newline="") as f:
            return f.read()

    def export_rows(
        self,
        delimiter: str = ",",
        encoding: str = "utf-8",
        *,
        tenant: str | None = None,
        **settings: Any,
    ) -> list[dict[str, str]]:
        """The return file read back as CSV: one dict per record, by the file's header."""
        text = self.export_text(encoding=encoding, tenant=tenant, **settings)
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))

    def check(
        self, file: Path, dialect: str | None = None, *, tenant: str | None = None
    ) -> CheckResult:
        """``listferry check FILE --tenant T [--dialect D]`` as data: the tenant's verdict,
        the mapping, counts, invalid lines and the plan."""
        app = self.app()
        chosen = app.config.tenant(tenant or self.tenant_name)
        if dialect is not None:
            chosen = replace(chosen, dialect=dialect)
        return check_file(app.host, Path(file), chosen)

    def cli(self, *args: str, input: str | None = None) -> Result:
        """Run a ``listferry`` command against this sandbox's config; a click ``Result``
        (``exit_code``, ``output``)."""
        from click.testing import CliRunner

        from listferry.cli import cli

        with self._loading():
            return CliRunner().invoke(cli, ["--config", str(self.config_path), *args], input=input)

    @staticmethod
    def at(text: str) -> datetime:
        """An ISO 8601 time as an aware UTC datetime, for events."""
        moment = parse_iso(text)
        if moment is None:
            raise ValueError("no time given")
        return moment


def _csv_text(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """``header`` and ``rows`` as a CRM writes CSV: commas, quotes where needed, CRLF."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
