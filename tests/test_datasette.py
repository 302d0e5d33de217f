"""`listferry datasette DIR`: each tenant's store under its own name, tables described."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pytest
from conftest import people

from listferry.testing import Sandbox


def test_the_folder_links_each_store_and_describes_only_real_tables_and_columns(
    ws: Sandbox, tmp_path
) -> None:
    for name in ("acme", "beta"):
        ws.add_tenant(name)
        ws.upload(people(3), tenant=name)
        ws.sync(tenant=name)
    ws.add_tenant("never")  # no store yet: no link
    folder = tmp_path / "ds"
    result = ws.cli("datasette", str(folder))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["acme.db", "beta.db", "metadata.json"]
    meta = json.loads((folder / "metadata.json").read_text())
    with sqlite3.connect(folder / "acme.db") as conn:
        for table, about in meta["databases"]["acme"]["tables"].items():
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            assert columns, f"{table} is not a table of the store"
            assert set(about.get("columns", {})) <= columns, table
            for key in ("sort", "sort_desc"):
                assert about.get(key) is None or about[key] in columns


@pytest.mark.skipif(shutil.which("datasette") is None, reason="datasette is not installed")
def test_datasette_serves_a_tenants_runs_under_its_name(ws: Sandbox, tmp_path) -> None:
    ws.add_tenant("acme")
    ws.upload(people(3))
    ws.sync()
    folder = tmp_path / "ds"
    ws.cli("datasette", str(folder))
    done = subprocess.run(
        [
            "datasette",
            str(folder / "acme.db"),
            "--metadata",
            str(folder / "metadata.json"),
            "--get",
            "/acme/runs.json?_shape=array",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)
    assert (run["status"], run["added"]) == ("applied", 3)
