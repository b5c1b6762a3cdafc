"""What the Python benchmark programs share: numbers with their units,
markdown tables, the goal line under each table, and their frame (arguments,
signals, the header line, the version note)."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import time
import signal
import sys
from typing import Any


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


# ---------------------------------------------------------------- the machine meanwhile
def _own_cpu() -> float:
    """CPU seconds of this program: itself, its live descendants, and the
    children each of them reaped."""
    import psutil

    total = 0.0
    procs = [psutil.Process()]
    try:
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        pass
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


class CpuMeter:
    """What the rest of the machine did during a case: the load average, CPU
    used by processes outside this program (in cores, on average) and the
    VM's steal time."""

    def start(self) -> None:
        import psutil

        self.t0 = time.perf_counter()
        self.sys0 = psutil.cpu_times()
        self.own0 = _own_cpu()

    def note(self) -> str:
        import psutil

        wall = time.perf_counter() - self.t0
        sys1 = psutil.cpu_times()
        own = _own_cpu() - self.own0

        def busy(t: Any) -> float:
            return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

        steal = getattr(sys1, "steal", 0.0) - getattr(self.sys0, "steal", 0.0)
        others = max(0.0, busy(sys1) - busy(self.sys0) - own - steal)
        return (f"load average {os.getloadavg()[0]:.2f}; meanwhile other processes used "
                f"{others / max(wall, 1e-9):.2f} of {os.cpu_count()} cores on average "
                f"(steal {steal / max(wall, 1e-9):.2f})")


# ---------------------------------------------------------------- the programs' frame
def parse_args(doc: str, cases: list[str], quick_help: str, extra: Any = None) -> tuple[argparse.Namespace, list[str]]:
    """--case (repeatable), --runs (default 5, --quick 3), --quick, and what
    `extra(parser)` adds; returns the arguments and the cases chosen, in order."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=cases, help="a case to run (repeatable; default: all)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per side (default 5; --quick: 3)")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    if extra is not None:
        extra(ap)
    a = ap.parse_args()
    if a.runs is None:
        a.runs = 3 if a.quick else 5
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    return a, [c for c in cases if c in (a.case or cases)]


def end_on_signals() -> None:
    """SIGTERM, and SIGINT even if the program started ignoring it (in the
    background of a script), end the run through the same clean-up as Ctrl-C
    in this process; a forked child dies as by default."""
    main_pid = os.getpid()

    def on_term(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_header(quick: bool) -> str:
    """When, where, on what, and the command."""
    return (f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {platform.node()}; "
            f"os.cpu_count() = {os.cpu_count()}; Python {platform.python_version()} "
            f"({platform.system()} {platform.release()}); command: "
            f"`{' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])}`{' (QUICK: a smoke run)' if quick else ''}.")


def troupe_source(versions: str) -> str:
    """Names the commit troupe was built from (scripts/bench-python.sh writes it)."""
    src = os.path.join(sys.prefix, "troupe-source.txt")
    if os.path.exists(src):
        with open(src) as f:
            versions = versions.replace("troupe 0", f"troupe (built from {f.read().strip()}) 0")
    return versions
