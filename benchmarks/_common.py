"""Small helpers shared by the benchmark scripts: statistics, memory, datagrams, output.

Every benchmark prints a readable table and then, as its LAST line, one JSON
object (``print_final_json``), so scripts and CI can parse the result without
scraping the table. Measurements run in child processes (``run_worker``) so a
crash or a hang in one system under test cannot take the others' figures with
it, and so memory per node is that system's alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "WorkerOutcome",
    "can_isolate_network",
    "format_cell",
    "isolated_command",
    "percentile",
    "print_final_json",
    "print_table",
    "ratio",
    "rss_mb",
    "run_worker",
    "udp_datagrams_sent",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(ours: float | None, anchor: float | None) -> float | None:
    """ours / anchor, None when either is missing or the anchor is zero."""
    if ours is None or anchor is None or anchor == 0:
        return None
    return ours / anchor


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def udp_datagrams_sent() -> int | None:
    """The kernel's UDP OutDatagrams counter of this network namespace (None if unreadable).

    Exact for one process only when that process has the namespace to itself
    (see ``isolated_command``).
    """
    try:
        with open("/proc/net/snmp", encoding="ascii") as snmp:
            rows = [line.split() for line in snmp if line.startswith("Udp:")]
    except OSError:
        return None
    if len(rows) < 2:
        return None
    fields = dict(zip(rows[0][1:], rows[1][1:], strict=False))
    value = fields.get("OutDatagrams")
    return int(value) if value is not None and value.isdigit() else None


def can_isolate_network() -> bool:
    """True when a child can get a private network namespace (root, unshare and ip)."""
    return (
        sys.platform == "linux"
        and os.geteuid() == 0
        and shutil.which("unshare") is not None
        and shutil.which("ip") is not None
    )


def isolated_command(command: Sequence[str]) -> list[str]:
    """Wrap ``command`` to run in a fresh network namespace with only loopback up.

    The child's datagrams are then the only ones the namespace's kernel counters
    see, and nothing it sends can reach another program on this machine.
    ``exec`` keeps the measured process the one whose pid the caller holds.
    """
    script = 'ip link set lo up && exec "$0" "$@"'
    return ["unshare", "--net", "sh", "-c", script, *command]


@dataclass(frozen=True)
class WorkerOutcome:
    """What a worker child left: its last-line JSON object, or why there is none."""

    result: dict[str, object] | None
    error: str | None
    seconds: float


def run_worker(command: Sequence[str], timeout: float) -> WorkerOutcome:
    """Run a worker child (stderr passed through), parse the JSON object on its last stdout line.

    The child is killed after ``timeout`` seconds; a timeout, a crash or a
    missing/garbled last line becomes ``error``. A child that prints
    ``{"error": "..."}`` reports its own failure that way.
    """
    import time

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if part
    )
    started = time.monotonic()
    try:
        completed = subprocess.run(
            list(command),
            stdout=subprocess.PIPE,
            stderr=None,
            timeout=timeout,
            check=False,
            env=env,
            text=True,
        )
    except subprocess.TimeoutExpired:
        return WorkerOutcome(None, f"timed out after {timeout:.0f} s", time.monotonic() - started)
    seconds = time.monotonic() - started
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    parsed: object = None
    if lines:
        try:
            parsed = json.loads(lines[-1])
        except ValueError:
            parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, str):
            return WorkerOutcome(None, error, seconds)
        if completed.returncode == 0:
            return WorkerOutcome({str(k): v for k, v in parsed.items()}, None, seconds)
    return WorkerOutcome(
        None, f"worker exited with code {completed.returncode} and no result", seconds
    )


def format_cell(value: object, digits: int = 2) -> str:
    """A table cell: floats rounded, None as '-', fractions of 1 kept readable."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table on stdout (first column left-aligned, the rest right)."""
    cells = [list(headers)] + [[format_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for number, row in enumerate(cells):
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        print("  ".join(parts))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def print_final_json(result: dict[str, object]) -> None:
    """The benchmark's LAST line: one JSON object, nothing after it."""
    sys.stdout.flush()
    print(json.dumps(result, separators=(", ", ": ")), flush=True)
