"""``listferry check`` gives the verdict ``sync`` would give, and writes nothing.

With ``--tenant``: that tenant's dialect, count-file policy, limits, its plan against
the current list and every plan guard. Without: the ``[defaults]`` settings and limits,
against an empty list, and it says that guards comparing with a list were left out.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest
from conftest import csv_text, people

from listferry.sync.check import WITHOUT_TENANT
from listferry.testing import Sandbox

CONTRIB = Path(__file__).parent.parent / "contrib"
SAMPLES = sorted(
    path
    for path in CONTRIB.glob("*/samples/*.csv")
    if not any(word in path.name for word in ("events", "return", "expected"))
)


def pack_dialects(pack: str) -> list[str]:
    found: list = []
    importlib.import_module(f"listferry_{pack}").register_dialects(found.append)
    return [dialect.name for dialect in found]


CASES = [
    (sample, dialect) for sample in SAMPLES for dialect in pack_dialects(sample.parent.parent.name)
]


def tree(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` with the SHA-256 of its bytes.

    SQLite's shared-memory index and an empty write-ahead log, which any reader of a WAL
    database may leave, are not data and are left out.
    """
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and not path.name.endswith(("-shm", ".checked"))
        and not (path.name.endswith("-wal") and not path.stat().st_size)
    }


def test_every_pack_sample_has_a_case() -> None:
    assert len(SAMPLES) >= 8 and len(CASES) >= len(SAMPLES)


@pytest.mark.parametrize(("sample", "dialect"), CASES, ids=[f"{s.name}-{d}" for s, d in CASES])
def test_check_of_a_pack_sample_says_what_sync_then_does(
    tmp_path: Path, sample: Path, dialect: str
) -> None:
    pack = sample.parent.parent.name
    box = Sandbox(tmp_path, plugins=[f"listferry_{pack}"], dialect=dialect)
    checked = box.cli("check", str(sample), "--tenant", "test", "--json")
    verdict = json.loads(checked.stdout)
    box.upload(sample)

    synced = box.cli("sync", "test", "--json")

    (run,) = json.loads(synced.stdout)
    assert verdict["status"] == ("ok" if run["status"] == "applied" else "void"), run
    assert verdict["reason"] == run["reason"]
    assert checked.exit_code == synced.exit_code
    assert verdict["records"] == run["received"] and verdict["invalid"] == run["invalid"]
    if run["status"] == "applied":
        assert {k: verdict["plan"][k] for k in ("added", "updated", "removed")} == {
            k: run[k] for k in ("added", "updated", "removed")
        }


def test_check_for_a_tenant_applies_its_limit_where_the_defaults_would_void(
    ws: Sandbox, tmp_path: Path
) -> None:
    ws.add_tenant("lenient", max_invalid_share=0.5)
    path = tmp_path / "list.csv"
    path.write_text(csv_text([*people(6), ("not-an-address", "X", "Y", "GOLD")]))

    plain = ws.cli("check", str(path), "--json")
    lenient = ws.cli("check", str(path), "--tenant", "lenient", "--json")

    assert plain.exit_code == 1
    assert json.loads(plain.stdout)["reason"] == (
        "too many invalid records: 1 of 7 (14.3%), the limit is 5%"
    )
    assert WITHOUT_TENANT in json.loads(plain.stdout)["warnings"]
    assert lenient.exit_code == 0
    shown = json.loads(lenient.stdout)
    assert (shown["tenant"], shown["status"], shown["plan"]["added"]) == ("lenient", "ok", 6)
    assert WITHOUT_TENANT not in shown["warnings"]


def test_check_without_a_tenant_takes_the_limits_of_defaults(ws: Sandbox, tmp_path: Path) -> None:
    text = ws.config_path.read_text().replace(
        'count_file = "optional"', 'count_file = "optional"\nmax_invalid_share = 0.5'
    )
    ws.config_path.write_text(text)
    path = tmp_path / "list.csv"
    path.write_text(csv_text([*people(6), ("not-an-address", "X", "Y", "GOLD")]))

    result = ws.cli("check", str(path))

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{path}: ok\n")
    assert f"warning: {WITHOUT_TENANT}" in result.output


def test_a_file_with_every_address_invalid_is_void_for_check_as_for_sync(
    ws: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "list.csv"
    path.write_text("email\nnobody\nsomebody\n")

    result = ws.cli("check", str(path), "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["reason"] == (
        "too many invalid records: 2 of 2 (100.0%), the limit is 5%"
    )


def test_check_for_a_tenant_plans_against_its_list_and_writes_nothing(
    ws: Sandbox, tmp_path: Path
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(10))
    ws.sync()
    before = tree(ws.root / "state", ws.root / "homes")
    path = tmp_path / "shorter.csv"
    path.write_text(csv_text(people(4)))

    result = ws.cli("check", str(path), "--tenant", "acme", "--json")

    assert result.exit_code == 1
    shown = json.loads(result.stdout)
    assert shown["reason"] == (
        "shrink guard: the file would remove 6 of 10 active subscribers (60.0%), more than "
        "the limit of 50%"
    )
    assert shown["hint"] == "to apply it anyway: listferry sync acme --force"
    assert tree(ws.root / "state", ws.root / "homes") == before  # no store change, no report
    ws.upload(people(4))
    (run,) = ws.sync_all()
    assert (run.status, run.reason) == ("voided", shown["reason"])


def test_check_for_a_tenant_shows_the_plan_and_a_repeat(ws: Sandbox, tmp_path: Path) -> None:
    ws.add_tenant("acme", strategy="incremental")
    applied = ws.upload(people(3)).read_bytes()
    ws.sync()
    path = tmp_path / "list.csv"
    path.write_text(csv_text([*people(2), *people(2, start=7)]))

    shown = json.loads(ws.cli("check", str(path), "--tenant", "acme", "--json").stdout)

    plan = {k: shown["plan"][k] for k in ("added", "updated", "unchanged", "removed")}
    assert plan == {"added": 2, "updated": 0, "unchanged": 2, "removed": 0}
    path.write_bytes(applied)
    again = ws.cli("check", str(path), "--tenant", "acme")
    assert again.exit_code == 0
    assert again.output.startswith(
        f"{path}: skip: the same content as the last applied file (run 1) (as tenant acme's sync)"
    )


def test_check_for_a_tenant_that_requires_a_count_file(ws: Sandbox, tmp_path: Path) -> None:
    ws.add_tenant("acme", count_file="required")
    path = tmp_path / "list.csv"
    path.write_text(csv_text(people(3)))

    shown = json.loads(ws.cli("check", str(path), "--tenant", "acme", "--json").stdout)

    assert shown["reason"] == "count file list_count.txt is missing, and this tenant requires one"
    assert "sync leaves the list waiting up to 2h for its count file" in shown["warnings"][0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "Error: missing.csv: no such file\n"),
        (["list.csv", "--count-file", "nope.txt"], "Error: nope.txt: no such file\n"),
        (["folder"], "Error: folder: a folder, not a file\n"),
        (["list.csv", "--tenant", "nobody"], None),
        (["list.csv", "--dialect", "nope"], "Error: unknown dialect 'nope' (known: default)\n"),
    ],
)
def test_check_of_a_file_it_cannot_read_is_one_line_and_exit_2(
    ws: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.csv").write_text(csv_text(people(1)))
    (tmp_path / "folder").mkdir()

    result = ws.cli("check", *args)

    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and "Usage" not in result.stderr
    if message:
        assert result.stderr == message


def test_the_documented_check_json_is_what_check_prints(ws: Sandbox, tmp_path: Path) -> None:
    import re

    text = (Path(__file__).parent.parent / "docs" / "operator.md").read_text()
    block = text.split("A dry run, as `check FILE --tenant NAME --json` prints it")[1]
    documented = json.loads(re.search(r"```json\n(.*?)```", block, re.S)[1])
    ws.add_tenant("acme")
    path = tmp_path / "export.csv"
    path.write_text(
        "E-mail,Vorname,Do Not Email\nada@example.org,Ada,no\nbob@example.org,Bob,yes\n"
        "cy@example.org,Cy,no\n"
    )

    printed = json.loads(ws.cli("check", str(path), "--tenant", "acme", "--json").stdout)

    assert printed == {**documented, "file": str(path)}


@pytest.mark.parametrize(
    ("count", "reason"),
    [
        (None, "count file list_count.txt is missing, and this tenant requires one"),
        ("many", "count file list_count.txt must hold one whole number, it holds 'many'"),
    ],
)
def test_a_list_voided_for_its_count_file_is_still_counted_by_check_and_sync(
    ws: Sandbox, tmp_path: Path, count: str | None, reason: str
) -> None:
    ws.add_tenant("acme", count_file="required", count_file_wait="")
    path = tmp_path / "list.csv"
    path.write_text(csv_text(people(3)))
    if count is not None:
        (tmp_path / "list_count.txt").write_text(count)

    checked = ws.cli("check", str(path), "--tenant", "acme", "--json")
    text = ws.cli("check", str(path), "--tenant", "acme").output
    ws.upload(people(3), name="list.csv", count=count)
    (run,) = ws.sync_all()

    verdict = json.loads(checked.stdout)
    assert (verdict["status"], verdict["reason"], verdict["records"]) == ("void", reason, 3)
    assert "\n  3 records, 0 invalid, 0 duplicates; utf-8, delimiter ','\n" in text
    assert (run.status, run.reason, run.received) == ("voided", reason, 3)
    assert "\nRecords received: 3\n" in (ws.home / "list.result.txt").read_text()


def test_check_without_a_tenant_says_the_defaults_require_the_count_file(
    ws: Sandbox, tmp_path: Path
) -> None:
    text = ws.config_path.read_text().replace('count_file = "optional"', 'count_file = "required"')
    ws.config_path.write_text(text)
    path = tmp_path / "list.csv"
    path.write_text(csv_text(people(3)))

    verdict = json.loads(ws.cli("check", str(path), "--json").stdout)

    assert verdict["reason"] == (
        "count file list_count.txt is missing, and the [defaults] require one"
    )


def test_a_file_voided_at_its_header_says_its_records_were_not_read(
    ws: Sandbox, tmp_path: Path
) -> None:
    ws.add_tenant("acme")
    path = tmp_path / "subscriber_list.csv"
    path.write_text("name,city\nAda,London\nBob,Leeds\n")

    text = ws.cli("check", str(path), "--tenant", "acme").output
    ws.upload(path.read_text())
    (run,) = ws.sync_all()

    assert "\n  records not read: the file is void before them; utf-8, delimiter ','\n" in text
    assert run.status == "voided" and run.reason.startswith("missing column: email")
    report = (ws.home / "subscriber_list.result.txt").read_text()
    assert "\nRecords received: not read\n" in report and "added 0" not in report


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("data.txt", "it does not match tenant acme's pattern '*.csv'"),
        (
            ".hidden.csv",
            "a hidden name, or a client's temporary ending (.part, .tmp ...), is an "
            "upload still under way",
        ),
        (
            "x.csv.part",
            "a hidden name, or a client's temporary ending (.part, .tmp ...), is an "
            "upload still under way",
        ),
        ("x_count.txt", "it is the name of a count file"),
        ("x.result.txt", "it is the name of a result report"),
    ],
)
def test_check_of_a_name_the_sync_never_takes_warns_and_keeps_the_content_verdict(
    ws: Sandbox, tmp_path: Path, name: str, why: str
) -> None:
    ws.add_tenant("acme")
    path = tmp_path / name
    path.write_text(csv_text(people(2)))

    verdict = json.loads(ws.cli("check", str(path), "--tenant", "acme", "--json").stdout)

    assert verdict["status"] == "ok"
    assert f"sync would not take a file named {name!r} from the home: {why}" in verdict["warnings"]


def test_check_of_a_name_the_sync_takes_has_no_such_warning(ws: Sandbox, tmp_path: Path) -> None:
    ws.add_tenant("acme")
    path = tmp_path / "EXPORT.CSV"
    path.write_text(csv_text(people(2)))
    verdict = json.loads(ws.cli("check", str(path), "--tenant", "acme", "--json").stdout)
    assert not [w for w in verdict["warnings"] if "would not take" in w]
