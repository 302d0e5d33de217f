"""Lists that arrive gzipped or zipped are read as they are, never unpacked to disk."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest
from conftest import csv_text, people

from listferry.testing import Sandbox


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_a_gzipped_list_and_its_count_file_sync_like_the_plain_one(ws: Sandbox) -> None:
    ws.add_tenant("acme", count_file="required")
    plain = csv_text(people(2000)).encode("cp1252")
    ws.upload(gzip.compress(plain), name="members.csv.gz", count=None)
    (ws.home / "members_count.txt").write_text("2000\n")
    (run,) = ws.sync_all()
    assert (run.status, run.added, run.file) == ("applied", 2000, "members.csv.gz"), run.reason
    work = ws.tenant.state_dir / "work"
    assert not work.exists() or not any(p.suffix == ".csv" for p in work.rglob("*"))


def test_a_zipped_list_with_one_file_is_read_and_macos_extras_are_ignored(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    data = zipped(
        {
            "export/members.csv": csv_text(people(30)).encode(),
            "__MACOSX/export/._members.csv": b"\x00\x05\x16\x07",
            "export/.DS_Store": b"\x00",
        }
    )
    ws.upload(data, name="members.csv.zip")
    (run,) = ws.sync_all()
    assert (run.status, run.added) == ("applied", 30), run.reason


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("a.csv.gz", b"email\nx@y.org\n", "not a gzip file"),
        ("b.csv.gz", gzip.compress(csv_text(people(500)).encode())[:300], "gzip data is damaged"),
        ("c.csv.zip", zipped({"a.csv": b"email\n", "b.csv": b"email\n"}), "exactly one file"),
        ("d.csv.zip", b"PK\x03\x04 not really", "not a zip file"),
        ("e.csv.zip", zipped({}), "holds 0"),
    ],
)
def test_a_damaged_or_ambiguous_archive_is_voided_and_the_list_stands(
    ws: Sandbox, name: str, data: bytes, reason: str
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(3))
    ws.sync()
    ws.upload(data, name=name)
    (run,) = ws.sync_all()
    assert run.status == "voided" and reason in run.reason, run.reason
    assert len(ws.subscribers("active")) == 3


def test_check_reads_a_gzipped_list(ws: Sandbox, tmp_path) -> None:
    path = tmp_path / "list.csv.gz"
    path.write_bytes(gzip.compress(b"E-Mail;Vorname\r\nada@example.org;Ada\r\n"))
    result = ws.cli("check", str(path))
    assert result.exit_code == 0, result.output
    assert "1 records" in result.output and "delimiter ';'" in result.output
