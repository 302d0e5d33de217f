"""Full replacement: ``listferry sync`` of a list into a tenant that holds one, end to end.

    python bench/sync_full.py [--rows 1000000] [--rounds 3]

The tenant holds ``rows`` active subscribers; the file keeps 95% of them (10% of all
with changed values), drops 5% and brings 5% new. The reference is the ``sqlite3``
CLI importing the same file into a table with ``email TEXT PRIMARY KEY``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Figure, alternate, table, timed

from listferry.store.database import Store

SEED = 20261130
HEADER = "email,first_name,last_name,segment_code\n"
FIRST = ("Ann", "Bob", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jana")
LAST = ("Smith", "Jones", "Brown", "Novak", "Meyer", "Rossi", "Dubois", "Kowalski")


def person(rng: random.Random, i: int) -> tuple[str, str, str, str]:
    return (
        f"user{i:08d}@example{i % 97}.com",
        rng.choice(FIRST),
        rng.choice(LAST),
        f"S{rng.randrange(1000):03d}",
    )


def build_store(path: Path, rows: int) -> None:
    """A tenant database holding ``rows`` active subscribers."""
    rng = random.Random(SEED)
    with Store(path) as store, store.transaction() as conn:
        conn.executemany(
            "INSERT INTO subscribers (email, first_name, last_name, segment_code, status, "
            "created_at, updated_at, status_changed_at) VALUES (?, ?, ?, ?, 'active', "
            "'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            (person(rng, i) for i in range(rows)),
        )
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()


def write_list(path: Path, rows: int, new: float, removed: float, changed: float) -> int:
    """The CRM's next export: returns the number of data rows written."""
    rng = random.Random(SEED)
    stored = [person(rng, i) for i in range(rows)]
    change = random.Random(SEED + 1)
    written = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        for row in stored:
            if change.random() < removed:
                continue
            if change.random() < changed:
                row = (row[0], row[1], change.choice(LAST) + "-Neu", row[3])
            f.write(",".join(row) + "\n")
            written += 1
        for i in range(rows, rows + int(rows * new)):
            f.write(",".join(person(change, i)) + "\n")
            written += 1
    return written


class Bench:
    """A config with one tenant ``bench``, a stored list to start each run from, a file."""

    def __init__(
        self, work: Path, rows: int, strategy: str, new: float, removed: float, changed: float
    ) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.config = work / "listferry.toml"
        self.base = [sys.executable, "-m", "listferry", "--config", str(self.config)]
        subprocess.run([*self.base, "init"], check=True, capture_output=True)
        subprocess.run(
            [*self.base, "tenant", "add", "bench", "--strategy", strategy, "--count-file", "off"],
            check=True,
            capture_output=True,
        )
        self.home = work / "homes" / "bench"
        self.database = work / "state" / "bench" / "tenant.db"
        self.template = work / "template.db"
        build_store(self.template, rows)
        self.list_file = work / "list.csv"
        self.records = write_list(self.list_file, rows, new, removed, changed)

    def prepare(self) -> None:
        """The tenant as it was before the run, and the file in its home (not timed)."""
        shutil.rmtree(self.database.parent, ignore_errors=True)
        self.database.parent.mkdir(parents=True)
        shutil.copy(self.template, self.database)
        shutil.copy(self.list_file, self.home / "list.csv")

    def sync(self) -> float:
        self.prepare()
        seconds = timed(
            lambda: subprocess.run([*self.base, "sync", "bench"], check=True, capture_output=True)
        )
        with sqlite3.connect(self.database) as conn:
            status = conn.execute("SELECT status FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        assert status == ("applied",), status
        return seconds


def sqlite_import(list_file: Path, work: Path) -> float:
    """The ``sqlite3`` CLI's ``.import`` of the file into an email-PK table."""
    db = work / "import.db"
    db.unlink(missing_ok=True)
    script = (
        "CREATE TABLE subscribers (email TEXT PRIMARY KEY, first_name TEXT, "
        "last_name TEXT, segment_code TEXT);\n"
        f".import --csv --skip 1 {list_file} subscribers\n"
    )
    return timed(lambda: subprocess.run(["sqlite3", str(db)], input=script, text=True, check=True))


def size_name(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1000:g}k"


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not shutil.which("sqlite3"):
        raise SystemExit("no sqlite3 CLI to compare with")
    work = Path(tempfile.mkdtemp(prefix="listferry-bench-sync-"))
    try:
        bench = Bench(work, args.rows, "full", new=0.05, removed=0.05, changed=0.10)
        ours, ref = alternate(bench.sync, lambda: sqlite_import(bench.list_file, work), args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = size_name(args.rows)
    return [Figure(f"sync full {rows} into {rows}", ours, ref, "sqlite3 .import", "≤ 2.0x")]


if __name__ == "__main__":
    print(table(main(sys.argv[1:])))
