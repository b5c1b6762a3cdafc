"""Formatting shared by the Python benchmark programs: numbers with their
units, markdown tables, and the goal line under each table."""

from __future__ import annotations

import math


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_rate(r: float) -> str:
    if r >= 1e6:
        return f"{r / 1e6:.2f} M/s"
    if r >= 1e4:
        return f"{r / 1e3:.1f} k/s"
    return f"{r:,.0f}/s"


def fmt_ratio(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}×"
    if x >= 10:
        return f"{x:.1f}×"
    return f"{x:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def goal(text: str, value: float | None, target: float, higher_is_better: bool, why: str = "peer skipped") -> str:
    """The goal line: met or not, with the measured ratio."""
    if value is None or math.isnan(value):
        return f"**Goal**: {text}: not measured ({why})."
    met = value >= target if higher_is_better else value <= target
    return f"**Goal**: {text}: measured {fmt_ratio(value)}: **{'met' if met else 'NOT met'}**."
