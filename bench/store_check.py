"""The cost of checking a tenant store at open, for a store of ``--rows`` subscribers.

    python bench/store_check.py [--rows 1000000] [--rounds 3]

Prints the median seconds of: opening a store as listferry left it (no check), opening
one whose file changed (``PRAGMA quick_check``), and ``PRAGMA integrity_check`` for
comparison. The store is built once in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from listferry.store.database import Store

FILL = (
    "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1) "
    "INSERT INTO subscribers (email, first_name, last_name, segment_code, status, "
    "created_at, updated_at, status_changed_at) SELECT 'p' || i || '@example.org', "
    "'First' || i, 'Last' || i, 'GOLD', 'active', '2026-01-01T00:00:00Z', "
    "'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z' FROM n"
)


def median_seconds(action, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "tenant.db"
        with Store(db) as store, store.transaction() as conn:
            conn.execute(FILL, (args.rows,))

        def unchanged() -> None:
            Store(db).close()

        def changed() -> None:
            st = db.stat()
            os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
            Store(db).close()

        def integrity() -> None:
            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA integrity_check").fetchall()

        figures = {
            "open, unchanged since listferry closed it": median_seconds(unchanged, args.rounds),
            "open, file changed (quick_check)": median_seconds(changed, args.rounds),
            "PRAGMA integrity_check, for comparison": median_seconds(integrity, args.rounds),
        }
        print(f"{args.rows} subscribers, {db.stat().st_size / 1e6:.0f} MB")
        for name, seconds in figures.items():
            print(f"{name:<42} {seconds:.4f} s")


if __name__ == "__main__":
    main()
