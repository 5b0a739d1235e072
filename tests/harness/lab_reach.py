"""The reach lab: three relay supernodes, two peers per NAT type, links between every type pair.

Why a module: the reach-matrix test and ``benchmarks/connect.py`` build the same
topology and drive the same agents (``tests/harness/lab_peer.py``); the test
asserts the matrix, the benchmark times it.

Topology: three public hosts run ``p2pnode relay`` (STUN + TURN over UDP and TCP,
REST-secret credentials, the lab's TEST-NET-3 allowed as peers). For every NAT
type two peer hosts, each behind its own router ("a" dials, "b" answers), so the
pair (t1, t2) with t1 <= t2 is a link from ``a-t1`` to ``b-t2``: 21 unordered
pairs, 12 peer hosts, one agent process per host serving all its links at once.
Each peer host's ``eth0`` gets ``delay_ms`` each way (NFQUEUE, lab_delay.py), so
peer-to-peer RTT is ``4 * delay_ms`` and peer-to-supernode RTT ``2 * delay_ms``.

The driver is the signalling: it forwards ``signal`` lines from one agent to the
named peer's agent, stamping the sender, after ``signal_delay`` seconds (a model
of the hop through the recipient's home supernode; 0 in the matrix test).
"""

from __future__ import annotations

import heapq
import json
import os
import re
import secrets
import selectors
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from typing import Any

from tests.harness.netns import PUBLIC_NETWORK, Host, Lab, LabError, NatType, read_line

__all__ = [
    "NAT_ORDER",
    "PairResult",
    "ReachLab",
    "all_pairs",
    "expected_direct",
    "format_matrix",
]

NAT_ORDER = (
    NatType.NONE,
    NatType.FULL_CONE,
    NatType.ADDRESS_RESTRICTED,
    NatType.PORT_RESTRICTED,
    NatType.SYMMETRIC,
    NatType.UDP_BLOCKED,
)
SHORT = {
    NatType.NONE: "public",
    NatType.FULL_CONE: "full",
    NatType.ADDRESS_RESTRICTED: "addr",
    NatType.PORT_RESTRICTED: "port",
    NatType.SYMMETRIC: "sym",
    NatType.UDP_BLOCKED: "blocked",
}
RELAYS = 3
AGENT_READY_TIMEOUT = 60.0  # s: 12 agents import aiortc at once on 2 cores
MAX_LINE_BYTES = 256 * 1024


def all_pairs() -> list[tuple[NatType, NatType]]:
    return list(combinations_with_replacement(NAT_ORDER, 2))


def expected_direct(a: NatType, b: NatType) -> bool:
    """The textbook matrix (LAB-NOTES): which pairs have a direct path at all."""
    pair = {a, b}
    if NatType.UDP_BLOCKED in pair:
        return False
    if a is NatType.SYMMETRIC and b is NatType.SYMMETRIC:
        return False
    return pair != {NatType.PORT_RESTRICTED, NatType.SYMMETRIC}


@dataclass(frozen=True)
class PairResult:
    pair: tuple[NatType, NatType]
    opened: bool
    direct: bool | None
    describe: str
    setup_ms: float | None  # offer sent -> data channel open (dialer)
    total_ms: float | None  # dial() -> open, gathering included
    rtt_ms: float | None
    echo: bool
    error: str = ""


@dataclass
class _Agent:
    name: str
    host: Host
    proc: subprocess.Popen[str]
    log: Any = None
    plan: dict[str, Any] = field(default_factory=dict)

    def stderr_tail(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        text: str = self.log.read()
        return text[-3000:]


class ReachLab:
    """Build once per module; ``run(pairs)`` (fresh agents) or ``start_agents`` + ``dial``
    as often as needed, then ``stop_agents`` (the Lab's exit kills leftovers anyway)."""

    def __init__(self, lab: Lab, *, delay_ms: float = 0.0) -> None:
        self.lab = lab
        self.secret = secrets.token_hex(16)
        self.relays: list[str] = []
        self.relay_hosts = [lab.public_host(f"relay{i}") for i in range(RELAYS)]
        self.hosts: dict[str, Host] = {}
        self.last_errors: dict[str, str] = {}  # each agent's stderr tail after a run
        self.agents: dict[str, _Agent] = {}
        self.plans: dict[str, dict[str, Any]] = {}  # each agent's ICE servers, as it reported
        # Whether the answering side's nominated pair is direct, per pair (last dial round).
        self.answer_direct: dict[tuple[NatType, NatType], bool | None] = {}
        self.plain = False
        self._buffers: dict[str, bytes] = {}
        self._links = 0
        for side in ("a", "b"):
            for nat in NAT_ORDER:
                name = f"{side}-{SHORT[nat]}"
                self.hosts[name] = lab.private_host(name, nat)
        for relay in self.relay_hosts:
            proc = relay.popen(
                relay.python(
                    "-m", "p2pnode", "relay", "--listen", f"{relay.addresses[0]}:0",
                    "--realm", "lab", "--secret", self.secret,
                    "--allow-peer", PUBLIC_NETWORK, "--max-per-ip", "200",
                    "--max-per-user", "200",
                )
            )  # fmt: skip
            try:
                banner = read_line(proc, timeout=30)
            except LabError:
                proc.kill()
                _out, err = proc.communicate(timeout=5)
                raise LabError(f"p2pnode relay did not start: {err[-2000:]}") from None
            match = re.search(rf"udp {re.escape(relay.addresses[0])}:(\d+)", banner)
            if not match:
                raise LabError(f"relay banner: {banner}")
            self.relays.append(f"{relay.addresses[0]}:{match.group(1)}")
        if delay_ms:
            for host in self.hosts.values():
                lab.set_delay(host, delay_ms)

    def start_agents(self, *, plain: bool = False) -> None:
        """One agent per peer host (12 processes importing aiortc at once: a few seconds)."""
        self.stop_agents()
        self._buffers = {}
        for name, host in self.hosts.items():
            argv = host.python("-m", "tests.harness.lab_peer", name, self.secret, *self.relays)
            if plain:
                argv.append("--plain")
            # stderr to a file: a chatty agent must never block on a full pipe.
            log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop_agents)
            proc = host.popen(argv, stdin=subprocess.PIPE, stderr=log)
            self.agents[name] = _Agent(name, host, proc, log=log)
            self._buffers[name] = b""
        self.plain = plain
        waiting = set(self.agents)
        deadline = time.monotonic() + AGENT_READY_TIMEOUT
        while waiting and time.monotonic() < deadline:
            for name, message in self._messages(deadline - time.monotonic()):
                if "ready" in message:
                    self.agents[name].plan = self.plans[name] = message["plan"]
                    waiting.discard(name)
        if waiting:
            tails = {name: self.agents[name].stderr_tail() for name in waiting}
            raise LabError(f"agents not ready: {tails}")

    def stop_agents(self) -> None:
        for agent in self.agents.values():
            self._write(agent, {"op": "quit"})
        for agent in self.agents.values():
            try:
                agent.proc.wait(10)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait(5)
            for stream in (agent.proc.stdin, agent.proc.stdout):
                if stream is not None:
                    stream.close()
            self.last_errors[agent.name] = agent.stderr_tail()
            agent.log.close()
        self.agents.clear()

    def run(
        self,
        pairs: list[tuple[NatType, NatType]],
        *,
        signal_delay: float = 0.0,
        plain: bool = False,
        timeout: float = 60.0,
    ) -> dict[tuple[NatType, NatType], PairResult]:
        """Start agents, dial every pair at once, stop the agents."""
        self.start_agents(plain=plain)
        try:
            return self.dial(pairs, signal_delay=signal_delay, timeout=timeout)
        finally:
            self.stop_agents()

    def dial(
        self,
        pairs: list[tuple[NatType, NatType]],
        *,
        signal_delay: float = 0.0,
        timeout: float = 60.0,
        prepare: bool = True,
    ) -> dict[tuple[NatType, NatType], PairResult]:
        """Dial every pair at once, route the signals, collect the dialers' reports.

        With ``prepare`` (PeerLink agents only), every answering agent first
        gathers one connection per link it will answer (TURN allocation
        included), as a peer keeps spare connections ready for incoming offers.
        """
        if prepare and not self.plain:
            self._prepare(pairs, timeout)
        links: dict[str, tuple[NatType, NatType]] = {}
        for a, b in pairs:
            self._links += 1
            link = f"l{self._links}"
            links[link] = (a, b)
            dialer = self.agents[f"a-{SHORT[a]}"]
            self._write(dialer, {"op": "dial", "link": link, "peer": f"b-{SHORT[b]}"})
        results = self._route(links, signal_delay, timeout)
        for pair in links.values():
            if pair not in results:
                results[pair] = PairResult(
                    pair, False, None, "", None, None, None, False, "timeout"
                )
        return results

    def _prepare(self, pairs: list[tuple[NatType, NatType]], timeout: float) -> None:
        incoming: dict[str, int] = {}
        for _a, b in pairs:
            incoming[f"b-{SHORT[b]}"] = incoming.get(f"b-{SHORT[b]}", 0) + 1
        for name, count in incoming.items():
            self._write(self.agents[name], {"op": "prepare", "count": count})
        waiting = set(incoming)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for name, message in self._messages(deadline - time.monotonic()):
                if "prepared" in message:
                    waiting.discard(name)
        if waiting:
            raise LabError(f"agents did not prepare: {sorted(waiting)}")

    @staticmethod
    def _write(agent: _Agent, message: dict[str, Any]) -> None:
        if agent.proc.stdin is None or agent.proc.poll() is not None:
            return
        try:
            agent.proc.stdin.write(json.dumps(message) + "\n")
            agent.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def _messages(self, wait: float) -> list[tuple[str, dict[str, Any]]]:
        """Whole JSON lines any agent wrote within ``wait`` s (partial lines stay buffered)."""
        out: list[tuple[str, dict[str, Any]]] = []
        with selectors.DefaultSelector() as selector:
            for name, agent in self.agents.items():
                if agent.proc.stdout is not None and not agent.proc.stdout.closed:
                    selector.register(agent.proc.stdout.fileno(), selectors.EVENT_READ, name)
            for key, _events in selector.select(max(0.0, wait)):
                name = key.data
                chunk = _read_available(key.fd)
                if not chunk:
                    continue
                self._buffers[name] += chunk
                if len(self._buffers[name]) > MAX_LINE_BYTES:
                    raise LabError(f"{name} wrote an over-long line")
                *lines, self._buffers[name] = self._buffers[name].split(b"\n")
                out.extend((name, json.loads(line)) for line in lines if line.strip())
        return out

    def _route(
        self,
        links: dict[str, tuple[NatType, NatType]],
        signal_delay: float,
        timeout: float,
    ) -> dict[tuple[NatType, NatType], PairResult]:
        results: dict[tuple[NatType, NatType], PairResult] = {}
        answered = self.answer_direct = {}
        deadline = time.monotonic() + timeout
        pending: list[tuple[float, int, str, dict[str, Any]]] = []
        sequence = 0
        while len(results) < len(links) and time.monotonic() < deadline:
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                _at, _seq, target, forwarded = heapq.heappop(pending)
                self._write(self.agents[target], forwarded)
            wait = deadline - now
            if pending:
                wait = min(wait, max(0.0, pending[0][0] - now))
            for name, message in self._messages(wait):
                if "signal" in message:
                    target = str(message["to"])
                    if target not in self.agents:
                        continue
                    forwarded = {
                        "op": "signal",
                        "link": message["signal"],
                        "from": name,  # stamped here: the agent cannot forge it
                        "payload": message["payload"],
                    }
                    sequence += 1
                    release = time.monotonic() + signal_delay
                    heapq.heappush(pending, (release, sequence, target, forwarded))
                elif "open" in message and message.get("role") == "answer":
                    if message["open"] in links:
                        path = message.get("path") or {}
                        answered[links[message["open"]]] = path.get("direct")
                elif "open" in message and message.get("role") == "dial":
                    if message["open"] not in links:
                        continue
                    pair = links[message["open"]]
                    path = message.get("path") or {}
                    results[pair] = PairResult(
                        pair,
                        True,
                        path.get("direct"),
                        path.get("describe", ""),
                        message.get("setup_ms"),
                        message.get("total_ms"),
                        message.get("rtt_ms"),
                        bool(message.get("echo", True)),
                    )
                elif "failed" in message and message["failed"] in links:
                    if not name.startswith("a-"):
                        continue  # the dialer reports its own failure too
                    pair = links[message["failed"]]
                    results[pair] = PairResult(
                        pair, False, None, "", None, None, None, False, message["error"]
                    )
        return results


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def format_matrix(results: dict[tuple[NatType, NatType], PairResult]) -> str:
    """Rows and columns by NAT type; each cell 'D 123' (direct, set-up ms) or 'R 456'."""
    width = 12
    lines = ["".ljust(9) + "".join(SHORT[n].rjust(width) for n in NAT_ORDER)]
    for row in NAT_ORDER:
        cells = []
        for column in NAT_ORDER:
            pair = (
                (row, column) if NAT_ORDER.index(row) <= NAT_ORDER.index(column) else (column, row)
            )
            result = results.get(pair)
            if result is None:
                cells.append("-".rjust(width))
            elif not result.opened:
                cells.append("FAIL".rjust(width))
            else:
                kind = "D" if result.direct else "R"
                cells.append(f"{kind} {result.setup_ms or 0:.0f}ms".rjust(width))
        lines.append(SHORT[row].ljust(9) + "".join(cells))
    lines.append(
        "D = direct (host/srflx/prflx both ends), R = relayed; ms = offer sent -> channel open"
    )
    return "\n".join(lines)
