"""Hostile list files: whatever bytes a CRM uploads, check and sync end in plain words.

Two kinds of proof. A committed corpus (``tests/data/hostile/``, written by its
``make_corpus.py``) of files that real exports and broken uploads look like, each with
its expected outcome in ``expected.toml``. And generated files (hypothesis, derandomized
so CI sees the same examples every time): random encodings, delimiters, quoting, line
ends, NULs, BOMs, huge fields and ragged rows, where ``check`` and ``sync`` must never
raise past the CLI, must end ``applied`` or ``voided`` with a reason, and a second
upload of the same bytes must end ``skipped`` once the first was applied.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import shutil
import tomllib
from pathlib import Path

import pytest
from click.testing import Result
from conftest import csv_text
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from listferry.names import count_name
from listferry.testing import Sandbox
from listferry_plugins.csv_reader import FIELD_LIMIT

CORPUS = Path(__file__).parent / "data" / "hostile"
EXPECTED = tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8"))


def no_crash(result: Result) -> None:
    """The CLI answered in its own words: exit 0 or 1, no traceback, no internal error."""
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output


def check(ws: Sandbox, path: Path, *options: str) -> dict:
    result = ws.cli("check", str(path), "--json", *options)
    no_crash(result)
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["status"] == "ok" else 1)
    return report


def sync(ws: Sandbox) -> dict:
    result = ws.cli("sync", "acme", "--json")
    no_crash(result)
    (run,) = json.loads(result.stdout)
    assert result.exit_code == (1 if run["status"] in ("voided", "failed") else 0)
    return run


def sync_twice(ws: Sandbox, home: Path, data: bytes, name: str, count: bytes | None) -> dict:
    """Upload and sync ``data``, then the same bytes again: never applied twice."""
    runs = []
    for _ in range(2):
        (home / name).write_bytes(data)
        if count is not None:
            (home / count_name(name)).write_bytes(count)
        runs.append(sync(ws))
    first, again = runs
    assert first["status"] in ("applied", "voided"), first
    if first["status"] == "applied":
        assert first["reason"] is None
        assert again["status"] == "skipped"
        assert (
            again["reason"] == f"the same content as the last applied file (run {first['run_id']})"
        )
    else:
        assert first["reason"]
        assert (again["status"], again["reason"]) == ("voided", first["reason"])
    return first


# The corpus ------------------------------------------------------------------------------


def test_corpus_has_fifty_files_each_with_an_outcome() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.suffix == ".csv"}
    assert len(files) >= 50
    assert files == set(EXPECTED)


def corpus_file_ends_as_expected(ws: Sandbox, name: str) -> dict:
    """Check and sync the corpus file ``name`` in a fresh sandbox; the first run."""
    want = EXPECTED[name]
    path = CORPUS / name
    count = CORPUS / want["count_file"] if "count_file" in want else None

    report = check(ws, path)
    home = ws.add_tenant("acme")
    as_tenant = check(ws, path, "--tenant", "acme")
    run = sync_twice(ws, home, path.read_bytes(), name, count.read_bytes() if count else None)
    assert run["status"] == want["status"], run["reason"]
    for verdict in (report, as_tenant):  # check says what the sync says
        assert verdict["status"] == ("ok" if run["status"] == "applied" else "void"), verdict
        assert verdict["reason"] == run["reason"]
    if want["status"] == "voided":
        assert want["reason"] in run["reason"]
    for key in ("records", "invalid", "duplicates"):
        if key in want:
            assert report[key] == want[key], key
            assert run["received" if key == "records" else key] == want[key], key
    return run


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_ends_as_expected(ws: Sandbox, name: str) -> None:
    corpus_file_ends_as_expected(ws, name)


def test_export_with_a_hundred_columns_keeps_each_and_a_resend_with_one_change_updates_one(
    ws: Sandbox,
) -> None:
    header = ["email", *(f"Custom {c}" for c in range(99))]
    rows = [[f"p{i}@example.org", *(f"v{i}.{c}" for c in range(99))] for i in range(40)]
    home = ws.add_tenant("acme", strategy="incremental")
    (home / "a.csv").write_bytes(csv_text(rows, header).encode())
    assert sync(ws)["added"] == 40
    fields = ws.subscribers("active")["p7@example.org"]["fields"]
    assert fields == {f"Custom {c}": f"v7.{c}" for c in range(99)}
    rows[7][50] = "changed"
    (home / "b.csv").write_bytes(csv_text(rows, header).encode())
    run = sync(ws)
    assert (run["status"], run["updated"], run["unchanged"]) == ("applied", 1, 39)
    assert ws.subscribers("active")["p7@example.org"]["fields"]["Custom 49"] == "changed"


# Generated files -------------------------------------------------------------------------

DELIMITERS = (",", ";", "\t", "|")
NEWLINES = ("\r\n", "\n", "\r")
ENCODINGS = ("utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16")

good_addresses = st.builds(
    "{}{}@{}".format,
    st.sampled_from("pPq"),
    st.integers(0, 30),
    st.sampled_from(["example.org", "Example.ORG", "bücher.de"]),
)
bad_addresses = st.sampled_from(["", " ", "not-an-address", "a@b", "\u200bx@example.org", '"'])
plain_cells = st.text(alphabet="abcXYZ éü€ 0-'", max_size=10)
hazard_cells = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=',;\t|"\r\n\x00 \ufeff=', max_size=8),
    st.sampled_from(['=HYPERLINK("x")', '"', '""', "sep=;", "yes"]),
)


def pick(draw: st.DrawFn, usual: st.SearchStrategy, rare: st.SearchStrategy, odds: int) -> object:
    """Mostly ``usual``; ``rare`` one time in ``odds``."""
    return draw(rare if draw(st.integers(1, odds)) == 1 else usual)


huge = st.just("x" * (FIELD_LIMIT + 10))


@st.composite
def list_files(draw: st.DrawFn) -> bytes:
    """CSV bytes as a sloppy exporter writes them, now and then with a fault put in."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=300))
    delimiter = draw(st.sampled_from(DELIMITERS))
    header = pick(
        draw,
        st.sampled_from([["email", "first_name", "last_name", "segment_code"], ["E-Mail", "Name"]]),
        st.one_of(
            st.permutations(["Email", "First Name", "Surname", "opt_out"]),
            st.lists(hazard_cells, min_size=1, max_size=5),
            st.lists(hazard_cells, min_size=1, max_size=4).map(lambda cells: ["email", *cells]),
        ),
        4,
    )
    width = len(header)
    rows = []
    for _ in range(draw(st.integers(0, 30))):
        row = [pick(draw, good_addresses, bad_addresses, 40)]
        row += [pick(draw, plain_cells, hazard_cells, 25) for _ in range(width - 1)]
        if draw(st.integers(1, 40)) == 1:  # ragged
            row = row[: draw(st.integers(0, width + 2))] + [draw(plain_cells)] * draw(
                st.integers(0, 2)
            )
        rows.append(row)
    if rows and draw(st.integers(0, 24)) == 0 and rows[-1]:  # a ragged row may be empty
        rows[-1][-1] = draw(huge)
    out = io.StringIO()
    if draw(st.integers(1, 3)) > 1:  # balanced: a real CSV writer
        quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
        newline = draw(st.sampled_from(NEWLINES))
        writer = csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=newline)
        writer.writerows([header, *rows])
    else:  # joined by hand: a stray quote stays unbalanced
        for row in [header, *rows]:
            out.write(delimiter.join(row) + draw(st.sampled_from(NEWLINES)))
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    encoding = draw(st.sampled_from(ENCODINGS))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 4)) == 0:  # a BOM, bad bytes or NULs at some point
        at = draw(st.integers(0, len(data)))
        junk = draw(
            st.one_of(
                st.sampled_from([codecs.BOM_UTF8, codecs.BOM_UTF16_LE, b"\x00", b"\x81\x8d"]),
                st.binary(min_size=1, max_size=4),
            )
        )
        data = data[:at] + junk + data[at:]
    return data


hostile = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def sandbox_for_generated_files(root: Path) -> tuple[Sandbox, Path, Path]:
    """A sandbox in ``root`` with the tenant ``acme``: the sandbox, its home, its state."""
    ws = Sandbox.from_starter(root)
    home = ws.add_tenant("acme")
    return ws, home, ws.tenant.state_dir


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sandbox, Path, Path]:
    """One sandbox for every generated file: each example starts from an empty store."""
    return sandbox_for_generated_files(tmp_path_factory.mktemp("hostile"))


def any_bytes_end_in_plain_words(
    tenant: tuple[Sandbox, Path, Path], data: bytes
) -> tuple[dict, dict]:
    """Check ``data``, then sync it twice from an empty store; the report and the first run."""
    ws, home, state = tenant
    shutil.rmtree(state, ignore_errors=True)
    path = ws.root / "list.csv"
    path.write_bytes(data)
    report = check(ws, path)
    assert report["status"] in ("ok", "void")
    assert bool(report["reason"]) == (report["status"] == "void")
    run = sync_twice(ws, home, data, "subscriber_list.csv", None)
    assert report["status"] == ("ok" if run["status"] == "applied" else "void")
    assert (report["reason"] or "") == (run["reason"] or "").replace(
        "subscriber_list.csv", "list.csv"
    )
    if report["records"] or run["received"]:
        assert (run["received"], run["invalid"], run["duplicates"]) == (
            report["records"],
            report["invalid"],
            report["duplicates"],
        )
    return report, run


@hostile
@given(data=list_files())
def test_any_bytes_end_applied_or_voided_in_plain_words_and_a_resend_is_skipped(
    tenant: tuple[Sandbox, Path, Path], data: bytes
) -> None:
    _, run = any_bytes_end_in_plain_words(tenant, data)
    event(f"{run['status']}: {(run['reason'] or '').split(':')[0][:40]}")
