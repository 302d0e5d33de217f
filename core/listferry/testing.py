"""A temporary listferry for a pack's tests: one tenant, a real store, real files.

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

Everything is real: the config file, the tenant's home and SQLite store, the pipeline
and the templates, exactly as ``listferry sync`` and ``listferry export`` run them.
``plugins`` are the pack's modules; they are loaded whether or not the pack is
installed, and other installed packs stay out unless named.
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
from typing import Any, TypeVar

from listferry.app import App, open_app
from listferry.config.edit import toml_value, write_atomically
from listferry.export.run import ExportResult, export_tenant
from listferry.names import count_name
from listferry.ops.tenants import add_tenant
from listferry.runs import RunRecord
from listferry.store.database import Store
from listferry.sync.check import CheckResult, check_file
from listferry.times import parse_iso

__all__ = ["Sandbox", "wait_for"]

T = TypeVar("T")


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
    """A config, a tenant and its home under ``root``, driven like the CLI drives them.

    ``plugins``: module names to load (the pack under test). ``tenant``: the tenant's
    name. Any other keyword is a tenant setting, as in the config's tenant table
    (``dialect="mycrm"``, ``strategy="incremental"``, ``export_template="mycrm"``).
    """

    def __init__(
        self,
        root: Path | str,
        plugins: Sequence[str] = (),
        tenant: str = "test",
        **settings: Any,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tenant_name = tenant
        self.plugins = tuple(plugins)
        self.config_path = self.root / "listferry.toml"
        lines = [
            "[listferry]",
            'state = "state"',
            'homes = "homes"',
            f"plugins = {toml_value(list(self.plugins))}",
            "",
        ]
        write_atomically(self.config_path, "\n".join(lines))
        with self._only_named_packs():
            add_tenant(open_app(self.config_path), tenant, {"count_file": "optional", **settings})
        self.home.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _only_named_packs(self) -> Iterator[None]:
        """Installed packs not named in ``plugins`` stay out, as the operator's config would."""
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
        with self._only_named_packs():
            return open_app(self.config_path)

    @property
    def tenant(self) -> Any:
        return self.app().config.tenant(self.tenant_name)

    @property
    def home(self) -> Path:
        """The tenant's home folder, where the CRM's files arrive."""
        return Path(self.app().config.tenant(self.tenant_name).home)

    def upload(
        self,
        data: Path | str | bytes,
        name: str | None = None,
        count: int | None = None,
    ) -> Path:
        """Put a list file in the home: a path (copied, keeping its name), text or bytes.

        Text is written as UTF-8; give bytes for any other encoding. ``count`` also
        writes the count file (``<stem>_count.txt``, as :func:`listferry.count_name` names it).
        """
        if isinstance(data, Path):
            target = self.home / (name or data.name)
            shutil.copyfile(data, target)
        else:
            target = self.home / (name or "list.csv")
            target.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        if count is not None:
            count_file = self.home / count_name(target.name)
            count_file.write_text(f"{count}\n", encoding="ascii")
        return target

    def sync(self, force: bool = False) -> RunRecord:
        """Run ``listferry sync`` for the tenant; the last run (``idle`` when no file)."""
        return self.sync_all(force)[-1]

    def sync_all(self, force: bool = False) -> list[RunRecord]:
        """Every run of one sync: one per pending file, oldest first."""
        from listferry.ops.night import sync_and_export

        app = self.app()
        return sync_and_export(app, app.config.tenant(self.tenant_name), force)

    def subscribers(self, status: str | None = None) -> dict[str, dict[str, Any]]:
        """The stored subscribers by address (``status``: ``active`` or ``unsubscribed``).

        Each is a dict as ``listferry subscribers --json`` prints it; ``fields`` holds the
        columns the dialect kept, by their header as the CRM wrote it.
        """
        with Store(self.tenant.database) as store:
            return {row["email"]: row for row in store.subscribers(status or "all")}

    def record_events(self, events: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
        """Store engagement events (``email``, ``type``, ``at``, ``topic``), as a platform would.

        Returns ``(stored, already known)``.
        """
        from listferry.store.events import record_events

        with Store(self.tenant.database) as store:
            return record_events(store, events)

    def export(self, **settings: Any) -> tuple[ExportResult, Path]:
        """Run ``listferry export`` into a folder; the result and the return file's path.

        ``settings`` override the tenant's export settings for this export
        (``template="mycrm"`` is ``export_template``; ``fields=[...]`` is ``export_fields``).
        """
        from dataclasses import replace

        app = self.app()
        tenant = app.config.tenant(self.tenant_name)
        renamed = {
            (f"export_{key}" if not key.startswith("export_") else key): value
            for key, value in settings.items()
        }
        if "export_fields" in renamed:
            renamed["export_fields"] = tuple(renamed["export_fields"])
        tenant = replace(tenant, **renamed)
        out = self.root / "returned"
        out.mkdir(exist_ok=True)
        result = export_tenant(app, tenant, to=str(out))
        return result, out / result.file

    def export_text(self, encoding: str = "utf-8", **settings: Any) -> str:
        """The return file's text, as the CRM would read it (line endings kept)."""
        _, path = self.export(**settings)
        with open(path, encoding=encoding, newline="") as f:
            return f.read()

    def export_rows(
        self, delimiter: str = ",", encoding: str = "utf-8", **settings: Any
    ) -> list[dict[str, str]]:
        """The return file read back as CSV: one dict per record, by the file's header."""
        text = self.export_text(encoding=encoding, **settings)
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))

    def check(self, file: Path, dialect: str | None = None) -> CheckResult:
        """``listferry check FILE --tenant T [--dialect D]`` as data: the sandbox tenant's
        verdict, the mapping, counts, invalid lines and the plan."""
        app = self.app()
        tenant = app.config.tenant(self.tenant_name)
        if dialect is not None:
            tenant = replace(tenant, dialect=dialect)
        return check_file(app.host, Path(file), tenant)

    def cli(self, *args: str, input: str | None = None) -> Any:
        """Run a ``listferry`` command against this sandbox's config; a click ``Result``."""
        from click.testing import CliRunner

        from listferry.cli import cli

        with self._only_named_packs():
            return CliRunner().invoke(cli, ["--config", str(self.config_path), *args], input=input)

    @staticmethod
    def at(text: str) -> datetime:
        """An ISO 8601 time as an aware UTC datetime, for events."""
        moment = parse_iso(text)
        if moment is None:
            raise ValueError("no time given")
        return moment
