"""Incremental: ``listferry sync`` of 1.05M rows into a tenant holding 1M, end to end.

    python bench/sync_incremental.py [--rows 1000000] [--rounds 3]

The file holds every stored address (10% with changed values) and 5% new ones; the
strategy is ``incremental``. The reference is bare Python: ``csv.reader`` and one
``executemany`` UPSERT of the same rows into the same store, in one transaction.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Figure, alternate, table, timed
from sync_full import Bench, size_name


def bare_upsert(bench: Bench) -> float:
    """What a script of a dozen lines does: read the file, upsert every row, commit."""
    bench.prepare()
    script = (
        "import csv, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('PRAGMA journal_mode=WAL')\n"
        "conn.execute('PRAGMA synchronous=FULL')\n"
        "with open(sys.argv[2], newline='', encoding='utf-8') as f:\n"
        "    rows = csv.reader(f)\n"
        "    next(rows)\n"
        "    conn.execute('BEGIN')\n"
        "    conn.executemany(\n"
        "        'INSERT INTO subscribers (email, first_name, last_name, segment_code, '\n"
        "        'status, created_at, updated_at, status_changed_at) '\n"
        "        \"VALUES (?, ?, ?, ?, 'active', '2026-11-30', '2026-11-30', '2026-11-30') \"\n"
        "        'ON CONFLICT (email) DO UPDATE SET first_name = excluded.first_name, '\n"
        "        'last_name = excluded.last_name, segment_code = excluded.segment_code, '\n"
        "        'updated_at = excluded.updated_at', rows)\n"
        "    conn.execute('COMMIT')\n"
    )
    return timed(
        lambda: subprocess.run(
            [sys.executable, "-c", script, str(bench.database), str(bench.list_file)], check=True
        )
    )


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="listferry-bench-incremental-"))
    try:
        bench = Bench(work, args.rows, "incremental", new=0.05, removed=0.0, changed=0.10)
        ours, ref = alternate(bench.sync, lambda: bare_upsert(bench), args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = size_name(args.rows)
    name = f"sync incremental {size_name(int(args.rows * 1.05))} into {rows}"
    return [Figure(name, ours, ref, "csv.reader + executemany UPSERT", "≤ 1.5x")]


if __name__ == "__main__":
    print(table(main(sys.argv[1:])))
