"""Memory: peak RSS of a full replacement of a large list against a small one.

    python bench/memory.py [--full] [--rounds 3]

Each sync runs as its own process (the same churn as ``sync_full.py``); its peak RSS
is read with ``getrusage`` once it has ended. The large run is 1M rows (5M with
``--full``), the small one 100k; streaming keeps the two close.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Figure, alternate, table
from sync_full import Bench, size_name

#: Runs the command it is given and prints the child's peak RSS in kilobytes.
MEASURE = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_rss_mb(bench: Bench) -> float:
    bench.prepare()
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *bench.base, "sync", "bench"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout) / 1024


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5M rows instead of 1M")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    large_rows, small_rows = (5_000_000 if args.full else 1_000_000), 100_000
    work = Path(tempfile.mkdtemp(prefix="listferry-bench-memory-"))
    try:
        large = Bench(work / "large", large_rows, "full", new=0.05, removed=0.05, changed=0.10)
        small = Bench(work / "small", small_rows, "full", new=0.05, removed=0.05, changed=0.10)
        ours, ref = alternate(lambda: peak_rss_mb(large), lambda: peak_rss_mb(small), args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = f"peak RSS, full sync of {size_name(large_rows)}"
    return [Figure(name, ours, ref, f"the same of {size_name(small_rows)}", "≤ 1.25x", "MB")]


if __name__ == "__main__":
    print(table(main(sys.argv[1:])))
