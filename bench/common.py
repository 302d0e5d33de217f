"""What every benchmark shares: alternating rounds, medians, ratios, one table.

Machines here are shared and noisy, so a figure is only ever a ratio against a
reference measured in the same run, A B A B ..., and the median of each side.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Figure:
    """One benchmark figure: ours against the reference, and the goal for the ratio."""

    name: str
    ours: float
    reference: float
    reference_name: str
    goal: str
    unit: str = "s"

    @property
    def ratio(self) -> float:
        """Ours over the reference: for times lower is better, for speeds higher."""
        return self.ours / self.reference if self.reference else float("inf")

    def row(self) -> str:
        return (
            f"| {self.name} | {self.ours:.2f} {self.unit} | {self.reference_name}: "
            f"{self.reference:.2f} {self.unit} | {self.ratio:.2f}x | {self.goal} |"
        )


def alternate(ours: Callable[[], float], reference: Callable[[], float], rounds: int = 3):
    """Run reference, ours, reference, ours ... and return the two medians."""
    mine, theirs = [], []
    for _ in range(rounds):
        theirs.append(reference())
        mine.append(ours())
    return statistics.median(mine), statistics.median(theirs)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(figures: list[Figure]) -> str:
    head = "| figure | listferry | reference | ratio | goal |\n| --- | --- | --- | --- | --- |"
    return "\n".join([head, *(f.row() for f in figures)])
