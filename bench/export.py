"""Return file: ``listferry export`` to the ``csv`` template against the ``sqlite3`` CLI.

    python bench/export.py [--subscribers 1000000] [--events-per 2] [--rounds 3]

One tenant store is built with a fixed seed (subscribers, some opted out, and opens
and clicks with topics). The reference is the ``sqlite3`` CLI writing the same columns
as CSV (``.mode csv``, ``.headers on``, ``.once FILE``) from the same database with the
same SQL aggregates. Before each export the record of the last one is cleared, so every
row counts as changed (the worst case for the digests).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Figure, alternate, table

from listferry.config import EXPORT_FIELDS
from listferry.fields import resolve_fields
from listferry.plugins import load_host
from listferry.store.database import Store

SQLITE3 = shutil.which("sqlite3")
TOPICS = ["news", "sale", "travel", "sport", "food", "tech", "music", "books"]


def build_store(database: Path, subscribers: int, events_per: int) -> None:
    """The tenant's store: ``subscribers`` rows and about ``events_per`` events each."""
    rng = random.Random(20261130)
    with Store(database):
        pass
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO subscribers (email, first_name, last_name, segment_code, fields, status, "
        "created_at, updated_at, status_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                f"user{i:07d}@example.com",
                f"First{i % 997}",
                f"Last, {i % 991}",
                f"S{i % 13}",
                "{}",
                "unsubscribed" if i % 50 == 0 else "active",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-02-01T00:00:00Z" if i % 50 == 0 else None,
            )
            for i in range(subscribers)
        ),
    )
    conn.executemany(
        "INSERT INTO optouts (email, at, source) VALUES (?, ?, 'platform')",
        ((f"user{i:07d}@example.com", "2026-03-01T00:00:00Z") for i in range(7, subscribers, 97)),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO events (email, type, at, topic) VALUES (?, ?, ?, ?)",
        (
            (
                f"user{rng.randrange(subscribers):07d}@example.com",
                "open" if rng.random() < 0.7 else "click",
                f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
                rng.choice(TOPICS),
            )
            for _ in range(subscribers * events_per)
        ),
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def reference_sql() -> str:
    """The export's columns and aggregates, as the sqlite3 CLI runs them."""
    host = load_host()
    fields = resolve_fields(host.fields, EXPORT_FIELDS)
    joins = list(dict.fromkeys(join for field in fields.values() for join in field.joins))
    values = ", ".join(f"{field.sql} AS {name}" for name, field in fields.items())
    return (
        f"SELECT {values} FROM subscribers AS s {' '.join(joins)} "
        "WHERE s.status != 'removed' ORDER BY s.email;"
    )


def write_config(work: Path) -> Path:
    config = work / "listferry.toml"
    config.write_text('[listferry]\nstate = "state"\nhomes = "homes"\n\n[tenants.bench]\n')
    return config


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--events-per", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if SQLITE3 is None:
        raise SystemExit("skipped: no sqlite3 CLI")
    work = Path(tempfile.mkdtemp(prefix="listferry-bench-export-"))
    try:
        config = write_config(work)
        database = work / "state" / "bench" / "tenant.db"
        build_store(database, args.subscribers, args.events_per)
        out = work / "out"
        out.mkdir()
        script = work / "reference.sql"
        script.write_text(
            f".mode csv\n.headers on\n.once {work / 'reference.csv'}\n{reference_sql()}\n"
        )
        command = [sys.executable, "-m", "listferry", "--config", str(config)]

        def ours() -> float:
            with sqlite3.connect(database) as conn:
                conn.execute("DELETE FROM exported")
            start = time.perf_counter()
            subprocess.run(
                [*command, "export", "bench", "--to", str(out)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            return time.perf_counter() - start

        def reference() -> float:
            start = time.perf_counter()
            subprocess.run([SQLITE3, str(database)], stdin=script.open(), check=True)
            return time.perf_counter() - start

        mine, theirs = alternate(ours, reference, args.rounds)
        lines = sum(1 for _ in (work / "reference.csv").open("rb"))
        n = args.subscribers
        return [
            Figure(
                f"export {n:,} subscribers, {lines - 1:,} rows (csv)",
                mine,
                theirs,
                "sqlite3 .mode csv",
                "≤ 1.5x",
            ),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(table(main(sys.argv[1:])))
