"""Return files: rendered from a real tenant store, read back, compared with the events."""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import logging
import sqlite3
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pytest
import sqlite_utils
from conftest import csv_text
from remote_servers import Remote

from listferry.config import EXPORT_FIELDS
from listferry.errors import ListferryError
from listferry.export.query import Batch
from listferry.export.render import csv_row, csv_rows
from listferry.export.run import ExportResult, export_tenant
from listferry.fields import Field
from listferry.ops.tenants import add_tenant
from listferry.store.database import MIGRATIONS, Store, _migrate_1
from listferry.store.events import load_events
from listferry.store.locks import EXPORTS, tenant_lock
from listferry.templates import TemplateError
from listferry.testing import Sandbox

HEADER = ("email", "first_name", "last_name", "segment_code", "CRM Id")
LIST = [
    ("ada@example.org", "Ada", "Lovelace", "GOLD", "1001"),
    ("bob@example.org", "Bob, Jr.", 'O"Neil', "SILVER", "1002"),
    ("cyd@example.org", "Zoë", "Two\r\nLines", "GOLD", "1003"),
    ("dan@example.org", "Dan", "Quiet", "", "1004"),
]
#: Loaded from a CSV file with ``events load``; the offset time is stored in UTC.
FILE_EVENTS = [
    ("ada@example.org", "open", "2026-03-01T08:00:00Z", "news"),
    ("ada@example.org", "open", "2026-03-05T08:00:00Z", "sport"),
    ("ada@example.org", "click", "2026-03-05T08:05:00Z", "sport"),
    ("ada@example.org", "open", "2026-03-03T09:00:00+02:00", "arts"),
    ("bob@example.org", "open", "2026-03-04T10:00:00Z", "news"),
    ("bob@example.org", "unsubscribe", "2026-03-05T11:00:00Z", ""),
]
#: Recorded through the Python API; the first repeats an event of the file.
API_EVENTS = [
    {"email": "ADA@example.org", "type": "open", "at": "2026-03-01T08:00:00Z", "topic": "news"},
    {
        "email": "ada@example.org",
        "type": "click",
        "at": datetime(2026, 3, 4, 12, tzinfo=UTC),
        "topic": "news",
    },
    {"email": "cyd@example.org", "type": "click", "at": datetime(2026, 3, 6, 6, 30)},
]
#: The same events as stored: address lower-cased, time in UTC, each once.
STORED = {
    ("ada@example.org", "open", "2026-03-01T08:00:00Z", "news"),
    ("ada@example.org", "open", "2026-03-05T08:00:00Z", "sport"),
    ("ada@example.org", "click", "2026-03-05T08:05:00Z", "sport"),
    ("ada@example.org", "open", "2026-03-03T07:00:00Z", "arts"),
    ("ada@example.org", "click", "2026-03-04T12:00:00Z", "news"),
    ("bob@example.org", "open", "2026-03-04T10:00:00Z", "news"),
    ("bob@example.org", "unsubscribe", "2026-03-05T11:00:00Z", ""),
    ("cyd@example.org", "click", "2026-03-06T06:30:00Z", ""),
}
ALL_FIELDS = [*EXPORT_FIELDS, "fields.CRM Id"]


# -- helpers ----------------------------------------------------------------------------


def export(ws: Sandbox, tenant: str = "acme", to: str | None = None) -> ExportResult:
    app = ws.app()
    return export_tenant(app, app.config.tenant(tenant), to)


def outbox(ws: Sandbox, tenant: str = "acme") -> Path:
    return ws.home_of(tenant) / "outbox"


def listing(folder: Path) -> list[str]:
    """Every name in a folder, hidden ones too."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def count_in(path: Path) -> int:
    return int(path.read_text())


def table(ws: Sandbox, sql: str) -> list[tuple]:
    conn = sqlite3.connect(ws.tenant.database)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def engagement(events: set[tuple[str, str, str, str]], email: str) -> dict[str, str]:
    """What the return file must say of ``email``'s opens and clicks, from the events."""
    mine = [e for e in events if e[0] == email]
    opens = [at for _, kind, at, _ in mine if kind == "open"]
    clicks = [at for _, kind, at, _ in mine if kind == "click"]
    return {
        "open_count": str(len(opens)),
        "click_count": str(len(clicks)),
        "last_open": max(opens, default=""),
        "last_click": max(clicks, default=""),
    }


def load_scenario(ws: Sandbox, **settings: object) -> None:
    """The tenant's list, synced; then FILE_EVENTS through the CLI, API_EVENTS in Python."""
    ws.add_tenant("acme", **settings)
    ws.upload(LIST, header=HEADER, count=len(LIST))
    [run] = ws.sync_all()
    assert run.status == "applied", run.reason
    events = ws.root / "events.csv"
    events.write_text(csv_text(FILE_EVENTS, ("email", "type", "at", "topic")), encoding="utf-8")
    loaded = ws.cli("events", "load", "acme", str(events))
    assert loaded.exit_code == 0, loaded.output
    assert ws.record_events(API_EVENTS) == (2, 1)


@pytest.fixture
def plugin(ws: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], object]]:
    """``plugin(source)`` writes a plugin module, names it in the config, returns it."""
    installed: list[str] = []

    def install(source: str) -> object:
        name = f"lf_export_pack_{len(installed)}"
        folder = ws.root / "plugin_modules"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(folder))
        text = ws.config_path.read_text()
        ws.config_path.write_text(
            text.replace("[listferry]\n", f'[listferry]\nplugins = ["{name}"]\n', 1)
        )
        installed.append(name)
        return importlib.import_module(name)

    yield install
    for name in installed:
        sys.modules.pop(name, None)


#: A CRM pack: its dialect, its own return file, a field of its own, templates that fail.
PACK = """
    import json
    from pathlib import Path

    from listferry import hookimpl
    from listferry.dialect import DEFAULT_ALIASES, Dialect
    from listferry.fields import Field
    from listferry.templates import Template

    CRM = '''\\
    Contact ID;E-Mail;Opted Out;Opted Out On;Opens;Unsubscribes
    {% for row in rows %}
    {{ [row["fields.CRM Id"], row.email, row.opted_out, row.opted_out_at | date("%d.%m.%Y"),
        row.open_count, row.unsubscribe_count] | csv_row(delimiter=";", true="J", false="N") }}
    {% endfor %}
    '''

    @hookimpl
    def register_dialects(register):
        register(Dialect(name="optcrm", aliases={**DEFAULT_ALIASES, "opt_out": ("opted out",)}))

    @hookimpl
    def register_fields(register):
        register("unsubscribe_count", Field(
            "coalesce(pack_unsubscribes.n, 0)", kind="number",
            joins=("LEFT JOIN (SELECT email, count(*) AS n FROM events "
                   "WHERE type = 'unsubscribe' GROUP BY email) AS pack_unsubscribes "
                   "ON pack_unsubscribes.email = s.email",),
        ))

    @hookimpl
    def register_templates(register):
        register("crm", Template(CRM, suffix=".txt", newline="\\r\\n",
                                 fields=("fields.CRM Id", "opted_out", "opted_out_at",
                                         "open_count", "unsubscribe_count")))
        register("explode", Template(
            "{% for row in rows %}\\n{{ row | csv_row }}\\n"
            "{% if loop.index == 2 %}\\n{{ row.open_count // 0 }}\\n{% endif %}\\n"
            "{% endfor %}\\n", suffix=".csv"))
        register("broken", Template(
            "{{ fields | csv_row }}\\n{% for row in rows %}\\n{{ row | csv_row }\\n"
            "{% endfor %}\\n", suffix=".csv"))
        register("undefined", "{{ fields | csv_row }}\\n{{ title }}\\n")

    class Drop:
        '''A transport for drop://<folder> URLs: a folder, written the plain way.'''

        def __init__(self, endpoint):
            self.folder = Path(endpoint.location.split("://", 1)[1])

        def put(self, source, name):
            (self.folder / name).write_bytes(source.read_bytes())

        def close(self):
            pass

    @hookimpl
    def register_transports(register):
        register("drop", Drop)
"""

#: A sending platform: events it hands to the export, and each ``since`` it was asked.
PLATFORM = """
    from datetime import UTC, datetime

    from listferry import hookimpl

    EVENTS = []
    ASKED = []

    @hookimpl
    def collect_events(tenant, since):
        ASKED.append((tenant.name, since))
        return [e for e in EVENTS if since is None or e["at"] >= since]
"""


# -- what a return file says ------------------------------------------------------------


def test_csv_return_file_holds_every_data_point_of_the_loaded_events(ws: Sandbox) -> None:
    load_scenario(ws, export_fields=ALL_FIELDS)
    with ws.store() as store:
        assert set(store.conn.execute("SELECT email, type, at, topic FROM events")) == STORED

    result = export(ws)

    today = datetime.now(UTC).strftime("%Y%m%d")
    assert (result.file, result.count_file) == (f"return_{today}.csv", f"return_{today}_count.txt")
    assert listing(outbox(ws)) == [result.file, result.count_file]
    path = outbox(ws) / result.file
    with path.open(encoding="utf-8", newline="") as f:
        assert next(csv.reader(f)) == ALL_FIELDS
    rows = {row["email"]: row for row in read_csv(path)}
    assert list(rows) == [email for email, *_ in LIST]
    for email, first, last, segment, crm_id in LIST:
        row = rows[email]
        assert (row["first_name"], row["last_name"], row["segment_code"]) == (first, last, segment)
        assert row["fields.CRM Id"] == crm_id
        assert {k: row[k] for k in engagement(STORED, email)} == engagement(STORED, email)
    # ada: sport and news twice each, sport the latest; arts once
    assert [rows[e]["topics"] for e in rows] == ["sport;news;arts", "news", "", ""]
    assert rows["bob@example.org"]["status"] == "unsubscribed"
    assert rows["bob@example.org"]["opted_out"] == "true"
    assert rows["bob@example.org"]["opted_out_at"] == "2026-03-05T11:00:00Z"
    for email in ("ada@example.org", "cyd@example.org", "dan@example.org"):
        assert (rows[email]["status"], rows[email]["opted_out"]) == ("active", "false")
        assert rows[email]["opted_out_at"] == ""
    assert count_in(outbox(ws) / result.count_file) == len(rows) == result.records == 4


def test_csv_is_rfc_4180_utf8_with_crlf_and_its_count_file_counts_records(ws: Sandbox) -> None:
    load_scenario(ws, export_fields=["email", "first_name", "last_name"])

    result = export(ws)

    raw = (outbox(ws) / result.file).read_bytes()
    assert (
        raw
        == (
            "email,first_name,last_name\r\n"
            "ada@example.org,Ada,Lovelace\r\n"
            'bob@example.org,"Bob, Jr.","O""Neil"\r\n'
            'cyd@example.org,Zoë,"Two\r\nLines"\r\n'
            "dan@example.org,Dan,Quiet\r\n"
        ).encode()
    )
    assert raw.count(b"\r\n") == 6  # a quoted line break is still one record
    assert (outbox(ws) / result.count_file).read_text() == "4\n"


def test_jsonl_return_file_keeps_lists_booleans_and_empty_values(ws: Sandbox) -> None:
    load_scenario(ws, export_template="jsonl", export_fields=ALL_FIELDS)

    result = export(ws)

    assert result.file.endswith(".jsonl")
    rows = {row["email"]: row for row in read_jsonl(outbox(ws) / result.file)}
    assert list(rows["ada@example.org"]) == ALL_FIELDS
    for email in rows:
        expected = engagement(STORED, email)
        assert rows[email]["open_count"] == int(expected["open_count"])
        assert rows[email]["click_count"] == int(expected["click_count"])
        assert rows[email]["last_open"] == (expected["last_open"] or None)
        assert rows[email]["last_click"] == (expected["last_click"] or None)
    assert rows["ada@example.org"]["topics"] == ["sport", "news", "arts"]
    assert rows["dan@example.org"]["topics"] == []
    assert rows["bob@example.org"]["opted_out"] is True
    assert rows["bob@example.org"]["opted_out_at"] == "2026-03-05T11:00:00Z"
    assert rows["ada@example.org"]["opted_out"] is False
    assert rows["ada@example.org"]["opted_out_at"] is None
    assert rows["dan@example.org"]["segment_code"] is None  # an empty cell of the list
    assert rows["cyd@example.org"]["first_name"] == "Zoë"
    assert count_in(outbox(ws) / result.count_file) == len(rows) == 4


def test_opt_out_through_a_file_is_exported_with_when_it_was_applied(
    ws: Sandbox, plugin: Callable[[str], object]
) -> None:
    plugin(PACK)
    ws.add_tenant("acme", dialect="optcrm", export_fields=["email", "opted_out", "opted_out_at"])
    before = datetime.now(UTC).replace(microsecond=0)
    ws.upload("email,opted out\nada@example.org,no\nbob@example.org,yes\n")
    [run] = ws.sync_all()
    after = datetime.now(UTC)
    assert run.status == "applied", run.reason

    rows = {row["email"]: row for row in read_csv(outbox(ws) / export(ws).file)}

    assert rows["ada@example.org"]["opted_out"] == "false"
    assert rows["bob@example.org"]["opted_out"] == "true"
    when = datetime.fromisoformat(rows["bob@example.org"]["opted_out_at"].replace("Z", "+00:00"))
    assert before <= when <= after
    [(recorded,)] = table(ws, "SELECT at FROM optouts WHERE email = 'bob@example.org'")
    assert rows["bob@example.org"]["opted_out_at"] == recorded


def test_removed_subscribers_are_not_in_the_return_file(ws: Sandbox) -> None:
    ws.add_tenant("acme", export_fields=["email", "status"])
    ws.upload(LIST, header=HEADER)
    ws.sync()
    ws.upload(LIST[:3], header=HEADER)
    [run] = ws.sync_all()
    assert run.removed == 1

    rows = read_csv(outbox(ws) / export(ws).file)

    assert [row["email"] for row in rows] == [email for email, *_ in LIST[:3]]


def test_export_name_takes_the_tenant_and_the_utc_date(ws: Sandbox) -> None:
    ws.add_tenant("acme", export_name="{tenant}-engagement-{date}", export_template="jsonl")
    days = {datetime.now(UTC).strftime("%Y%m%d")}
    result = export(ws)
    days.add(datetime.now(UTC).strftime("%Y%m%d"))
    assert result.file in {f"acme-engagement-{day}.jsonl" for day in days}
    assert result.count_file == result.file.removesuffix(".jsonl") + "_count.txt"
    assert (outbox(ws) / result.file).read_text() == ""
    assert count_in(outbox(ws) / result.count_file) == 0


def test_a_second_return_file_of_a_day_never_replaces_the_first(ws: Sandbox) -> None:
    """The CRM may not have fetched the first yet: with changed-since-last its changes
    would be gone. The second takes ``-2`` after the stem, its count file too."""
    ws.add_tenant("acme", export_name="return_{date}", export_subscribers="changed-since-last")
    ws.upload(LIST, header=HEADER)
    ws.sync()
    first = export(ws)
    second = export(ws)
    stem = first.file.removesuffix(".csv")
    if not second.file.startswith(stem):  # midnight passed between the two
        return
    assert (second.file, second.count_file) == (f"{stem}-2.csv", f"{stem}-2_count.txt")
    assert count_in(outbox(ws) / first.count_file) == first.records > 0
    assert count_in(outbox(ws) / second.count_file) == second.records == 0
    third = export(ws)
    assert third.file == f"{stem}-3.csv"


# -- which subscribers ------------------------------------------------------------------


def test_changed_since_last_exports_only_those_whose_data_status_or_engagement_changed(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", export_subscribers="changed-since-last", export_fields=ALL_FIELDS)
    ws.upload(LIST, header=HEADER)
    ws.sync()
    first = export(ws)
    assert first.records == 4
    again = export(ws)
    assert again.records == 0
    assert read_csv(outbox(ws) / again.file) == []
    assert count_in(outbox(ws) / again.count_file) == 0

    ws.record_events([{"email": "ada@example.org", "type": "open", "at": "2026-03-09"}])
    ws.record_events(
        [{"email": "cyd@example.org", "type": "unsubscribe", "at": "2026-03-10T10:00:00Z"}]
    )
    renamed = [("bob@example.org", "Robert", *LIST[1][2:]), *LIST[:1], *LIST[2:]]
    ws.upload(renamed, header=HEADER, name="second.csv")
    [run] = ws.sync_all()
    assert (run.status, run.updated) == ("applied", 1)

    changed = export(ws)

    rows = {row["email"]: row for row in read_csv(outbox(ws) / changed.file)}
    assert sorted(rows) == ["ada@example.org", "bob@example.org", "cyd@example.org"]
    assert rows["ada@example.org"]["open_count"] == "1"
    assert rows["bob@example.org"]["first_name"] == "Robert"
    assert rows["cyd@example.org"]["opted_out"] == "true"
    assert count_in(outbox(ws) / changed.count_file) == changed.records == 3
    assert export(ws).records == 0


def test_a_return_file_that_was_not_delivered_does_not_count_as_sent(ws: Sandbox) -> None:
    ws.add_tenant("acme", export_subscribers="changed-since-last")
    ws.upload(LIST, header=HEADER)
    ws.sync()
    assert export(ws).records == 4
    ws.record_events([{"email": "dan@example.org", "type": "click", "at": "2026-03-09"}])

    with pytest.raises(ListferryError, match="no such folder"):
        export(ws, to=str(ws.root / "missing"))

    assert [row["email"] for row in read_csv(outbox(ws) / export(ws).file)] == ["dan@example.org"]
    assert table(ws, "SELECT records FROM exports ORDER BY id") == [(4,), (1,)]


def test_a_database_from_before_return_files_is_upgraded_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "tenant.db"
    conn = sqlite3.connect(path, isolation_level=None)
    _migrate_1(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO subscribers (email, status) VALUES ('ada@example.org', 'active')")
    conn.close()

    with Store(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert store.last_export() is None
        assert [row["email"] for row in store.subscribers()] == ["ada@example.org"]


# -- templates and fields from plugins --------------------------------------------------


def test_a_pack_template_with_its_own_columns_words_dates_and_field(
    ws: Sandbox, plugin: Callable[[str], object]
) -> None:
    plugin(PACK)
    load_scenario(ws, export_template="crm", export_fields=["email"])

    result = export(ws)

    assert result.file.endswith(".txt")
    raw = (outbox(ws) / result.file).read_bytes().decode("utf-8")
    assert raw == (
        "Contact ID;E-Mail;Opted Out;Opted Out On;Opens;Unsubscribes\r\n"
        "1001;ada@example.org;N;;3;0\r\n"
        "1002;bob@example.org;J;05.03.2026;1;1\r\n"
        "1003;cyd@example.org;N;;0;0\r\n"
        "1004;dan@example.org;N;;0;0\r\n"
    )
    assert count_in(outbox(ws) / result.count_file) == 4


def test_a_template_that_fails_mid_render_leaves_nothing_behind(
    ws: Sandbox, plugin: Callable[[str], object]
) -> None:
    plugin(PACK)
    load_scenario(ws)
    good = export(ws)
    before = {name: (outbox(ws) / name).read_bytes() for name in listing(outbox(ws))}
    text = ws.config_path.read_text()
    ws.config_path.write_text(text + 'export_template = "explode"\n')

    with pytest.raises(TemplateError) as failed:
        export(ws)

    assert str(failed.value) == (
        "template 'explode' line 4: ZeroDivisionError: integer division or modulo by zero"
    )
    assert listing(outbox(ws)) == [good.file, good.count_file]
    assert {name: (outbox(ws) / name).read_bytes() for name in listing(outbox(ws))} == before
    assert listing(ws.tenant.state_dir / "exports") == []
    assert table(ws, "SELECT count(*) FROM exports") == [(1,)]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("broken", "template 'broken' line 3: unexpected '}'"),
        ("undefined", "template 'undefined' line 2: UndefinedError: 'title' is undefined"),
    ],
)
def test_a_template_error_names_the_template_and_line_and_writes_nothing(
    ws: Sandbox, plugin: Callable[[str], object], template: str, message: str
) -> None:
    plugin(PACK)
    ws.add_tenant("acme", export_template=template)
    ws.upload(LIST, header=HEADER)
    ws.sync()

    result = ws.cli("export", "acme")

    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"
    assert listing(outbox(ws)) == []


def test_an_unknown_export_field_or_template_is_a_config_error(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    text = ws.config_path.read_text()
    ws.config_path.write_text(text + 'export_fields = ["email", "opens"]\n')

    result = ws.cli("export", "acme")

    assert result.exit_code == 2
    line = ws.config_path.read_text().splitlines().index('export_fields = ["email", "opens"]') + 1
    assert result.output.startswith(
        f"Error: {ws.config_path} line {line}: [tenants.acme] export_fields: unknown field 'opens'"
    )
    ws.config_path.write_text(text + 'export_template = "xlsx"\n')
    result = ws.cli("export", "acme")
    assert result.exit_code == 2
    assert "[tenants.acme] export_template: unknown template 'xlsx' (known: csv, jsonl)" in (
        result.output
    )
    ws.config_path.write_text(text)
    with pytest.raises(ListferryError, match="export_fields: unknown field 'opens'"):
        ws.add_tenant("globex", export_fields=["opens"])


def test_the_fields_family_takes_any_column_name(ws: Sandbox) -> None:
    header = ("email", 'Member\'s "Type"', "Joined.Year")
    ws.add_tenant(
        "acme",
        export_template="jsonl",
        export_fields=["email", 'fields.Member\'s "Type"', "fields.Joined.Year", "fields.Absent"],
    )
    ws.upload([("ada@example.org", "Fellow", "1843")], header=header)
    ws.sync()

    [row] = read_jsonl(outbox(ws) / export(ws).file)

    assert row == {
        "email": "ada@example.org",
        'fields.Member\'s "Type"': "Fellow",
        "fields.Joined.Year": "1843",
        "fields.Absent": None,
    }


# -- engagement from the sending platform -----------------------------------------------


def test_events_a_plugin_collects_before_each_export_are_stored_once(
    ws: Sandbox, plugin: Callable[[str], object]
) -> None:
    platform = plugin(PLATFORM)
    ws.add_tenant("acme", export_fields=["email", "open_count", "click_count", "topics"])
    ws.upload(LIST, header=HEADER)
    ws.sync()
    platform.EVENTS[:] = [
        {
            "email": "ada@example.org",
            "type": "open",
            "at": datetime(2026, 3, 1, tzinfo=UTC),
            "topic": "news",
        },
        {
            "email": "ada@example.org",
            "type": "click",
            "at": datetime(2026, 3, 2, tzinfo=UTC),
            "topic": "news",
        },
    ]

    first = export(ws)
    second = export(ws)

    assert (first.events_stored, first.events_known) == (2, 0)
    assert (second.events_stored, second.events_known) == (0, 0)
    [(started,)] = table(ws, "SELECT started_at FROM exports WHERE id = 1")
    asked = [("acme", None), ("acme", datetime.fromisoformat(started.replace("Z", "+00:00")))]
    assert asked == platform.ASKED
    rows = {row["email"]: row for row in read_csv(outbox(ws) / second.file)}
    assert (rows["ada@example.org"]["open_count"], rows["ada@example.org"]["click_count"]) == (
        "1",
        "1",
    )
    assert rows["ada@example.org"]["topics"] == "news"


def test_a_bad_collected_event_stops_the_export_and_stores_nothing(
    ws: Sandbox, plugin: Callable[[str], object]
) -> None:
    platform = plugin(PLATFORM)
    ws.add_tenant("acme")
    platform.EVENTS[:] = [
        {"email": "ada@example.org", "type": "open", "at": "2026-03-01T00:00:00Z"},
        {"email": "ada@example.org", "type": "forward", "at": "2026-03-02T00:00:00Z"},
    ]

    result = ws.cli("export", "acme")

    assert result.exit_code == 1
    assert result.output == (
        "Error: collecting events failed: collected event 2: type 'forward' is not one of "
        "open, click, unsubscribe\n"
    )
    assert table(ws, "SELECT count(*) FROM events") == [(0,)]
    assert listing(outbox(ws)) == []


def test_record_events_is_all_or_nothing_and_names_the_bad_event(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    with pytest.raises(ListferryError, match=r"^event 2: at 'soon'"):
        ws.record_events(
            [
                {"email": "ada@example.org", "type": "open", "at": "2026-03-01T00:00:00Z"},
                {"email": "bob@example.org", "type": "open", "at": "soon"},
            ],
        )
    assert table(ws, "SELECT count(*) FROM events") == [(0,)]


def test_events_loaded_from_csv_and_jsonl_are_the_same_events(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    as_csv = ws.root / "events.csv"
    as_csv.write_text(csv_text(FILE_EVENTS, ("email", "type", "at", "topic")))
    as_jsonl = ws.root / "events.jsonl"
    keys = ("email", "type", "at", "topic")
    as_jsonl.write_text(
        "".join(json.dumps(dict(zip(keys, e, strict=True))) + "\n" for e in FILE_EVENTS)
    )
    with ws.store() as store:
        assert load_events(store, as_csv)[:2] == (6, 0)
        assert load_events(store, as_jsonl)[:2] == (0, 6)


# -- scheduling -------------------------------------------------------------------------


def test_export_after_sync_writes_after_an_applied_run_and_not_after_a_voided_one(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", export_after_sync=True, count_file="required")
    ws.upload(LIST, header=HEADER, count=4)
    [run] = ws.sync_all()
    assert run.status == "applied", run.reason
    [name] = [n for n in listing(outbox(ws)) if n.endswith(".csv")]
    assert len(read_csv(outbox(ws) / name)) == 4
    for path in outbox(ws).iterdir():
        path.unlink()

    ws.upload(LIST[:2], header=HEADER, count=3)
    [run] = ws.sync_all()

    assert run.status == "voided"
    assert listing(outbox(ws)) == []
    assert table(ws, "SELECT count(*) FROM exports") == [(1,)]


def test_a_failed_export_after_sync_is_one_log_line_and_the_run_stands(
    ws: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    ws.add_tenant("acme", export_after_sync=True, export_to="no-such-folder")
    ws.upload(LIST, header=HEADER)

    with caplog.at_level(logging.ERROR, logger="listferry"):
        [run] = ws.sync_all()

    assert run.status == "applied", run.reason
    assert len(ws.subscribers("active")) == 4
    [record] = [r for r in caplog.records if r.name == "listferry"]
    assert record.getMessage() == (
        f"acme: the return file after the sync was not written: "
        f"{ws.root / 'no-such-folder'}: no such folder for the return file"
    )
    assert not record.exc_info


# -- delivery to a customer's server ---------------------------------------------------


@pytest.mark.parametrize("protocol", ["ftp", "ftps", "sftp"])
def test_a_home_on_a_customer_server_gets_the_return_file_in_its_outbox(
    ws: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("ACME_PASSWORD", "only-the-server-knows")
    with contextlib.ExitStack() as stack:
        server = Remote(stack, tmp_path / "remote", protocol, "only-the-server-knows")
        add_tenant(ws.app(), "acme", server.tenant_settings())
        (server.folder / "subscriber_list.csv").write_text(csv_text(LIST, HEADER))
        (server.folder / "subscriber_list_count.txt").write_text("4\n")
        [run] = ws.sync_all()
        assert run.status == "applied", run.reason
        (server.folder / "outbox").mkdir()

        result = export(ws)

        assert result.target == f"{server.url}/outbox"
        assert listing(server.folder / "outbox") == [result.file, result.count_file]
        assert len(read_csv(server.folder / "outbox" / result.file)) == 4
        assert count_in(server.folder / "outbox" / result.count_file) == 4


# -- the command line -------------------------------------------------------------------


def test_cli_export_delivers_to_the_outbox_and_says_so(ws: Sandbox) -> None:
    load_scenario(ws)

    result = ws.cli("export", "acme")

    assert result.exit_code == 0, result.output
    day = datetime.now(UTC).strftime("%Y%m%d")
    assert result.output == (
        f"acme: return_{day}.csv (4 records, all) and return_{day}_count.txt delivered to "
        f"{outbox(ws)}\n"
    )
    assert listing(outbox(ws)) == [f"return_{day}.csv", f"return_{day}_count.txt"]


def test_cli_export_to_a_folder_a_file_url_or_a_registered_scheme(
    ws: Sandbox, plugin: Callable[[str], object]
) -> None:
    plugin(PACK)
    load_scenario(ws)
    for target in ("plain", "url", "drop"):
        (ws.root / target).mkdir()

    plain = ws.cli("export", "acme", "--to", str(ws.root / "plain"), "--json")
    url = ws.cli("export", "acme", "--to", (ws.root / "url").as_uri())
    drop = ws.cli("export", "acme", "--to", f"drop://{ws.root / 'drop'}")

    assert [r.exit_code for r in (plain, url, drop)] == [0, 0, 0], (plain, url, drop)
    shown = json.loads(plain.output)
    assert shown["target"] == str(ws.root / "plain")
    assert (shown["records"], shown["template"], shown["subscribers"]) == (4, "csv", "all")
    for target in ("plain", "url", "drop"):
        files = listing(ws.root / target)
        assert files == [shown["file"], shown["count_file"]]
        assert len(read_csv(ws.root / target / shown["file"])) == 4
    assert listing(outbox(ws)) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["export", "nobody"], 2, "no tenant 'nobody'"),
        (["export", "acme", "--to", "ftpx://host/path"], 2, "no transport for ftpx://"),
        (["export", "acme", "--to", "/no/such/folder"], 1, "/no/such/folder: no such folder"),
    ],
)
def test_cli_export_errors_are_one_line_with_an_exit_code(
    ws: Sandbox, args: list[str], code: int, message: str
) -> None:
    ws.add_tenant("acme")

    result = ws.cli(*args)

    assert result.exit_code == code
    assert result.output.startswith("Error: ") and message in result.output
    assert result.output.count("\n") == 1
    assert listing(outbox(ws)) == []


def test_a_template_encoding_writes_a_bom_or_the_code_page_and_refuses_what_it_cannot_hold(
    ws, tmp_path
):
    from listferry.export.render import render
    from listferry.templates import Template

    source = "{% for row in rows %}{{ row.name }}\n{% endfor %}"
    for encoding, expected in (
        ("utf-8-sig", "\ufeffJörg\nŁukasz\n".encode()),
        ("cp1252", None),
    ):
        out = tmp_path / f"out-{encoding}.txt"
        rows = iter([{"name": "Jörg"}, {"name": "Łukasz"}])
        template = Template(source, encoding=encoding)
        with open(out, "w", encoding=template.encoding, newline="") as f:
            if expected is None:
                with pytest.raises(ListferryError, match=r"'Ł' cannot be written in cp1252"):
                    render("crm", template, {"rows": rows}, f)
            else:
                render("crm", template, {"rows": rows}, f)
        if expected is not None:
            assert out.read_bytes() == expected
    with pytest.raises(ValueError, match="encoding 'klingon' is not known"):
        Template(source, encoding="klingon")


def test_subscribers_without_the_id_a_crm_matches_on_are_left_out_until_they_have_it(
    tmp_path, monkeypatch
) -> None:
    from listferry.testing import Sandbox

    (tmp_path / "match_on_pack_for_test.py").write_text(
        "from listferry import hookimpl\n"
        "from listferry.templates import Template\n"
        "@hookimpl\n"
        "def register_templates(register):\n"
        "    register('crm', Template(\n"
        "        '{% for row in rows %}{{ [row[\"fields.CRM Id\"], row.email] | csv_row }}\\n'\n"
        "        '{% endfor %}', suffix='.csv', match_on=('fields.CRM Id',)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    box = Sandbox(
        tmp_path / "box",
        plugins=["match_on_pack_for_test"],
        export_template="crm",
        export_subscribers="changed-since-last",
        strategy="incremental",
    )
    box.upload("email,CRM Id\nada@example.org,C1\nnew@example.org,\n", name="a.csv")
    box.sync()
    result, path = box.export()
    assert path.read_text() == "C1,ada@example.org\n"
    assert (result.records, result.unmatched) == (1, 1)
    assert (path.parent / f"return_{path.stem.split('_')[1]}_count.txt").read_text() == "1\n"
    box.upload("email,CRM Id\nnew@example.org,C2\n", name="b.csv")
    box.sync()
    result, path = box.export()
    assert path.read_text() == "C2,new@example.org\n"  # sent once it has its id
    assert (result.records, result.unmatched) == (1, 0)
    assert box.cli("export", "test").exit_code == 0


def test_a_batch_written_at_once_is_each_row_as_csv_row_writes_it() -> None:
    fields = {
        "email": Field("s.email"),
        "score": Field("s.score", kind="number"),
        "ok": Field("s.ok", kind="bool"),
        "at": Field("s.at", kind="date"),
        "tags": Field("s.tags", kind="list"),
        "mixed": Field("s.mixed", convert=lambda value: [value, True, 2]),
    }
    batch = Batch(
        fields,
        [
            ["a@example.org", 1, 1, "2026-03-01T08:00:00Z", '["x", "y"]', "m"],
            ["b@example.org", None, 0, "2026-03-01T09:00:00+02:00", None, None],
            ["c@example.org", 2.5, None, None, "[]", ""],
            ["d@example.org", 0, 1, "", '["only"]', 'q"uote, two'],
        ],
    )
    environment = jinja2.Environment(newline_sequence="\r\n")
    for options in (
        {},
        {"none": "NULL", "true": "J", "false": "N", "join": "|"},
        {"date": "%d.%m.%Y", "delimiter": ";"},
    ):
        expected = "\r\n".join(csv_row(row, **options) for row in batch)
        assert csv_rows(environment, batch, **options) == expected


def test_a_second_export_while_one_runs_is_refused_and_sends_nothing(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(LIST, header=HEADER)
    ws.sync()
    tenant = ws.tenant

    with tenant_lock(tenant, EXPORTS) as locked:  # as an export in another process holds it
        assert locked
        result = ws.cli("export", "acme")
        with tenant_lock(tenant) as runs_free:  # a sync is not held up by an export
            assert runs_free

    assert result.exit_code == 1
    assert result.output == "Error: acme: another export of this tenant is in progress\n"
    assert listing(outbox(ws)) == []
    assert ws.cli("export", "acme").exit_code == 0  # the lock is free again
    assert len(listing(outbox(ws))) == 2


def test_what_a_killed_export_left_in_its_work_folder_is_cleared_by_the_next(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    ws.upload(LIST, header=HEADER)
    ws.sync()
    area = ws.tenant.state_dir / "exports"
    left = area / "export-k1ll3d"
    left.mkdir(parents=True)
    (left / "acme_20261130.csv").write_text("half a file")

    assert ws.cli("export", "acme").exit_code == 0

    assert list(area.iterdir()) == []
