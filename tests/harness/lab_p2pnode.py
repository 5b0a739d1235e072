"""Run p2pnode's own NAT commands in lab hosts: ``p2pnode stun`` servers, ``p2pnode nat`` clients.

Why a module: the discovery and reachability lab tests start the same servers
and read the same ``--json`` output (docs/nat.md is its contract).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any, TypeVar

from tests.harness.netns import Host, LabError, read_line

__all__ = ["StunServer", "collect_runs", "repeated_nat_runs", "start_stun"]

K = TypeVar("K")
NAT_RUN_TIMEOUT = 30  # s per `p2pnode nat` run (it promises about 10)


class StunServer:
    """A running ``p2pnode stun`` and the addresses it announced (primary first)."""

    def __init__(self, host: Host, proc: subprocess.Popen[str], addresses: list[str]) -> None:
        self.host = host
        self.proc = proc
        self.addresses = addresses

    @property
    def primary(self) -> str:
        return self.addresses[0]

    @property
    def port(self) -> int:
        return int(self.primary.rsplit(":", 1)[1])


def start_stun(host: Host) -> StunServer:
    """``p2pnode stun`` on port 0 of the host's first address (and ``--alt-ip`` its second)."""
    argv = host.python("-m", "p2pnode", "stun", "--listen", f"{host.addresses[0]}:0")
    if len(host.addresses) > 1:
        argv += ["--alt-ip", host.addresses[1]]
    proc = host.popen(argv)
    # "listening IP1:P1 [IP1:P2 IP2:P1 IP2:P2]" once every socket is bound.
    words = read_line(proc, timeout=20).split()
    if not words or words[0] != "listening":
        raise LabError(f"p2pnode stun said {words!r}")
    return StunServer(host, proc, words[1:])


def repeated_nat_runs(host: Host, servers: list[str], runs: int) -> subprocess.Popen[str]:
    """Start ``runs`` ``p2pnode nat --json`` one after another in ``host``; one JSON per line."""
    stun_args = [word for server in servers for word in ("--stun", server)]
    script = (
        "import subprocess, sys\n"
        f"for _ in range({runs}):\n"
        "    out = subprocess.run(\n"
        f"        [sys.executable, '-m', 'p2pnode', 'nat', *{stun_args!r}, '--json'],\n"
        f"        capture_output=True, text=True, timeout={NAT_RUN_TIMEOUT})\n"
        "    sys.stderr.write(out.stderr)\n"
        "    print(out.stdout.strip() or '{}', flush=True)\n"
    )
    return host.popen(host.python("-c", script))


def collect_runs(procs: Mapping[K, subprocess.Popen[str]]) -> dict[K, list[dict[str, Any]]]:
    """Wait for every ``repeated_nat_runs`` process; its JSON objects, in order."""
    results: dict[K, list[dict[str, Any]]] = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=NAT_RUN_TIMEOUT * 6)
        if proc.returncode != 0:
            raise LabError(f"nat runs for {key!r} failed: {err[-2000:]}")
        results[key] = [json.loads(line) for line in out.splitlines() if line.strip()]
    return results
