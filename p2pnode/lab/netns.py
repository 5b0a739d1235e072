"""A NAT laboratory out of Linux network namespaces, veth pairs, a bridge and nftables.

Why: p2pnode's NAT traversal and reachability claims only mean something
against real NATs. This harness builds them from the kernel's own conntrack, in
namespaces that nothing links to the root namespace, so no lab packet can leave
the machine and tests can run while other programs use it.

Topology (see docs/lab.md; tests/harness/netns.py re-exports this module)::

    switch namespace <prefix>s: bridge br0, the "public" segment 203.0.113.0/24
      |-- p<n>: public host (NatType.NONE), 1..k addresses on eth0
      |-- r<n>: router, wan 203.0.113.x --- lan 10.<n>.0.1/24 --- h<n>: private host eth0 10.<n>.0.2

Invariants:
- every namespace name is ``<prefix><role><n>``; the default prefix is
  ``p2p`` + 6 random hex digits, unique per Lab;
- before creating anything a Lab writes ``/run/p2pnode-lab/<prefix>.json``
  (owner pid + start time + namespaces), so a later Lab can remove whatever a
  crashed run left behind (owner dead), and an orphan ``p2p<6hex>...`` namespace
  without a state file is stale by construction;
- teardown is idempotent: kill processes, delete namespaces (which deletes the
  veths), delete the state file; calling it twice is harmless.
"""

# ruff: noqa: S603, S607 - argv lists of our own making; ip/nft/tc are found on PATH on purpose

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from p2pnode.lab.hosts import PROCESS_STOP_GRACE, Host, LabError, read_line
from p2pnode.lab.nat import NatType, loss_ruleset, router_ruleset

__all__ = [
    "LAN_PREFIX",
    "PUBLIC_NETWORK",
    "STATE_DIR",
    "Host",
    "Lab",
    "LabError",
    "NatType",
    "cleanup_stale",
    "list_labs",
    "read_line",
    "remove_lab",
]

PUBLIC_NETWORK = "203.0.113.0/24"  # TEST-NET-3 (RFC 5737): never routed anywhere
PUBLIC_BASE = "203.0.113."
LAN_PREFIX = "10."  # LAN n is 10.<n>.0.0/24, router 10.<n>.0.1, host 10.<n>.0.2
STATE_DIR = Path("/run/p2pnode-lab")
DEFAULT_PREFIX_STEM = "p2p"
MAX_PREFIX_LENGTH = 10  # namespace names stay short: <prefix><role><n>
MAX_LANS = 250
MAX_PUBLIC_ADDRESSES = 250
DEFAULT_BINDING_LIFETIME = 120  # s: Linux's nf_conntrack_udp_timeout_stream default
COMMAND_TIMEOUT = 30.0  # s for any one setup command
DELAY_MODULE = "p2pnode.lab.delay"
_ORPHAN_PATTERN = re.compile(r"^p2p[0-9a-f]{6}[a-z]")


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _run_many(jobs: Iterable[tuple[list[str], str | None]]) -> None:
    """Run independent setup commands side by side (each namespace is its own world)."""
    started: list[tuple[list[str], subprocess.Popen[str], str | None]] = []
    for argv, stdin in jobs:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((argv, proc, stdin))
    errors = []
    for argv, proc, stdin in started:
        _out, err = proc.communicate(stdin, timeout=COMMAND_TIMEOUT)
        if proc.returncode != 0:
            errors.append(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()}")
    if errors:
        raise LabError("; ".join(errors))


def _in_namespace_script(namespace: str, script: str) -> tuple[list[str], str | None]:
    return (["ip", "netns", "exec", namespace, "sh", "-ec", script], None)


def _process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(state: dict[str, Any]) -> bool:
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    return _process_start_time(pid) == state.get("start_time")


def _namespaces_now() -> list[str]:
    result = subprocess.run(
        ["ip", "netns", "list"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _delete_namespaces(namespaces: Iterable[str]) -> None:
    """Kill every process inside, then delete; missing namespaces are fine (idempotent)."""
    existing = set(_namespaces_now())
    targets = [ns for ns in namespaces if ns in existing]
    for namespace in targets:
        pids = subprocess.run(
            ["ip", "netns", "pids", namespace],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
    if targets:
        batch = "".join(f"netns del {ns}\n" for ns in targets)
        subprocess.run(
            ["ip", "-force", "-batch", "-"],
            input=batch,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def list_labs() -> list[dict[str, Any]]:
    """Every lab state file (with ``alive``: owner running or lab made persistent)."""
    labs = []
    for path in sorted(STATE_DIR.glob("*.json")):
        state = _read_state(path)
        if state is None:
            continue
        state["alive"] = bool(state.get("persistent")) or _owner_alive(state)
        labs.append(state)
    return labs


def remove_lab(prefix: str) -> None:
    """Tear down a lab by prefix from its state file plus any namespace with that prefix."""
    path = STATE_DIR / f"{prefix}.json"
    state = _read_state(path) or {}
    recorded = [ns for ns in state.get("namespaces", []) if isinstance(ns, str)]
    by_name = [ns for ns in _namespaces_now() if ns.startswith(prefix)]
    _delete_namespaces([*recorded, *by_name])
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def cleanup_stale() -> list[str]:
    """Remove labs whose owner died (crashed runs) and orphan ``p2p<6hex>`` namespaces.

    Returns the prefixes removed. Persistent labs (``scripts/lab up``) and labs
    of live owners (other test runs at the same time) are left alone.
    """
    removed = []
    known = set()
    for path in sorted(STATE_DIR.glob("*.json")):
        state = _read_state(path)
        prefix = path.stem
        known.add(prefix)
        if state is not None and (state.get("persistent") or _owner_alive(state)):
            continue
        remove_lab(prefix)
        removed.append(prefix)
    orphans: dict[str, list[str]] = {}
    for namespace in _namespaces_now():
        if _ORPHAN_PATTERN.match(namespace) and namespace[:9] not in known:
            orphans.setdefault(namespace[:9], []).append(namespace)
    for prefix, namespaces in orphans.items():
        _delete_namespaces(namespaces)
        removed.append(prefix)
    return removed


class Lab:
    """A topology of namespaces; a context manager whose exit removes all of it."""

    def __init__(
        self, prefix: str | None = None, *, persistent: bool = False, clean_stale: bool = True
    ) -> None:
        if prefix is None:
            prefix = DEFAULT_PREFIX_STEM + secrets.token_hex(3)
        if not re.fullmatch(r"[a-z][a-z0-9]*", prefix) or len(prefix) > MAX_PREFIX_LENGTH:
            raise ValueError(f"lab prefix {prefix!r}: lowercase letters/digits, <= 10 chars")
        self.prefix = prefix
        self.persistent = persistent
        self.hosts: dict[str, Host] = {}
        self.switch = f"{prefix}s"
        self._clean_stale = clean_stale
        self._namespaces: list[str] = []
        self._next_public = 2  # 203.0.113.1 is left for a future "gateway"
        self._next_lan = 1
        self._next_port = 1
        self._started = False
        self._closed = False
        self._delays: dict[str, subprocess.Popen[str]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return STATE_DIR / f"{self.prefix}.json"

    def start(self) -> Lab:
        """Clean leftovers of crashed runs, record ownership, build the switch."""
        if self._started:
            return self
        if self._clean_stale:
            cleanup_stale()
        if self.state_path.exists():
            raise LabError(f"a lab with prefix {self.prefix!r} exists ({self.state_path})")
        self._started = True
        self._namespaces.append(self.switch)
        self._save_state()
        _run(["ip", "netns", "add", self.switch])
        _run(
            ["ip", "-n", self.switch, "-batch", "-"],
            "link set lo up\nlink add br0 type bridge\nlink set br0 up\n",
        )
        return self

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Idempotent teardown: processes, namespaces (and with them the veths), state file."""
        for host in self.hosts.values():
            host.stop_processes()
        if self._started and not self._closed:
            remove_lab(self.prefix)
        self._closed = True

    def _save_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "prefix": self.prefix,
            "pid": os.getpid(),
            "start_time": _process_start_time(os.getpid()),
            "persistent": self.persistent,
            "namespaces": self._namespaces,
            "hosts": {
                name: {
                    "namespace": host.namespace,
                    "addresses": host.addresses,
                    "public_address": host.public_address,
                    "nat": host.nat.name,
                    "router_namespace": host.router_namespace,
                }
                for name, host in self.hosts.items()
            },
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    def _claim(self, name: str, namespaces: list[str]) -> None:
        if not self._started or self._closed:
            raise LabError("use the Lab as a context manager (or call start())")
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists already")
        self._namespaces.extend(namespaces)
        self._save_state()  # before creating: a crash now still leaves a record

    def _public_addresses(self, count: int) -> list[str]:
        if self._next_public + count > MAX_PUBLIC_ADDRESSES:
            raise LabError("public segment is full")
        first = self._next_public
        self._next_public += count
        return [f"{PUBLIC_BASE}{first + i}" for i in range(count)]

    # -- building --------------------------------------------------------------------------

    def public_host(self, name: str, addresses: int = 1) -> Host:
        """A host on the public segment with ``addresses`` IPs on its ``eth0``."""
        if addresses < 1:
            raise ValueError("a public host needs at least one address")
        index = self._next_port
        namespace = f"{self.prefix}p{index}"
        port = f"p{index}"
        self._claim(name, [namespace])
        self._next_port += 1
        ips = self._public_addresses(addresses)
        _run(
            ["ip", "-batch", "-"],
            f"netns add {namespace}\n"
            f"link add name {port} netns {self.switch} "
            f"type veth peer name eth0 netns {namespace}\n",
        )
        host_lines = "".join(f"addr add {ip}/24 dev eth0\n" for ip in ips)
        _run_many(
            [
                (
                    ["ip", "-n", self.switch, "-batch", "-"],
                    f"link set {port} master br0\nlink set {port} up\n",
                ),
                (
                    ["ip", "-n", namespace, "-batch", "-"],
                    f"link set lo up\n{host_lines}link set eth0 up\n",
                ),
            ]
        )
        host = Host(
            name=name,
            namespace=namespace,
            addresses=ips,
            public_address=ips[0],
            peer_namespace=self.switch,
            peer_device=port,
        )
        self.hosts[name] = host
        self._save_state()
        return host

    def private_host(self, name: str, nat: NatType, *, binding_lifetime: int | None = None) -> Host:
        """A host on its own LAN 10.<n>.0.0/24 behind its own router of type ``nat``.

        ``binding_lifetime`` (s) sets the router's conntrack UDP timeouts and the
        cone map timeout: how long an idle NAT binding lives. ``NatType.NONE``
        gives a public host.
        """
        if nat is NatType.NONE:
            return self.public_host(name)
        if self._next_lan > MAX_LANS:
            raise LabError("no LAN numbers left")
        index = self._next_lan
        router = f"{self.prefix}r{index}"
        namespace = f"{self.prefix}h{index}"
        port = f"r{index}"
        self._claim(name, [router, namespace])
        self._next_lan += 1
        (wan,) = self._public_addresses(1)
        lan_router, lan_host = f"{LAN_PREFIX}{index}.0.1", f"{LAN_PREFIX}{index}.0.2"
        lifetime = binding_lifetime or DEFAULT_BINDING_LIFETIME
        if lifetime < 1:
            raise ValueError("binding lifetime must be at least 1 s")
        _run(
            ["ip", "-batch", "-"],
            f"netns add {router}\nnetns add {namespace}\n"
            f"link add name {port} netns {self.switch} type veth peer name wan netns {router}\n"
            f"link add name lan netns {router} type veth peer name eth0 netns {namespace}\n",
        )
        timeouts = ""
        if binding_lifetime is not None:
            timeouts = (
                f"echo {lifetime} > /proc/sys/net/netfilter/nf_conntrack_udp_timeout\n"
                f"echo {lifetime} > /proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream\n"
            )
        router_script = (
            "ip -batch - <<'EOF'\n"
            "link set lo up\n"
            f"addr add {wan}/24 dev wan\nlink set wan up\n"
            f"addr add {lan_router}/24 dev lan\nlink set lan up\n"
            "EOF\n"
            "echo 1 > /proc/sys/net/ipv4/ip_forward\n"
            "nft -f - <<'EOF'\n"
            f"{router_ruleset(nat, lifetime)}"
            "EOF\n"
            f"{timeouts}"
        )
        _run_many(
            [
                (
                    ["ip", "-n", self.switch, "-batch", "-"],
                    f"link set {port} master br0\nlink set {port} up\n",
                ),
                _in_namespace_script(router, router_script),
                (
                    ["ip", "-n", namespace, "-batch", "-"],
                    f"link set lo up\naddr add {lan_host}/24 dev eth0\nlink set eth0 up\n"
                    f"route add default via {lan_router}\n",
                ),
            ]
        )
        host = Host(
            name=name,
            namespace=namespace,
            addresses=[lan_host],
            public_address=wan,
            nat=nat,
            router_namespace=router,
            peer_namespace=router,
            peer_device="lan",
        )
        self.hosts[name] = host
        self._save_state()
        return host

    # -- impairments -----------------------------------------------------------------------

    def set_loss(self, host: Host, percent: float, *, both_directions: bool = True) -> None:
        """Random loss on the host's link, ingress side (nft numgen on the netdev hook).

        ``percent`` applies to packets arriving at the host; with
        ``both_directions`` also (independently) to packets the host sends, dropped
        at the ingress of the link's other end. 0 removes the loss.
        """
        jobs = [
            (
                ["ip", "netns", "exec", host.namespace, "nft", "-f", "-"],
                loss_ruleset("eth0", percent),
            )
        ]
        if both_directions:
            jobs.append(
                (
                    ["ip", "netns", "exec", host.peer_namespace, "nft", "-f", "-"],
                    loss_ruleset(host.peer_device, percent),
                )
            )
        _run_many(jobs)

    def set_rate(self, host: Host, kbit: int | None) -> None:
        """Token-bucket rate limit (tbf) on both ends of the host's link; None removes it."""
        jobs: list[tuple[list[str], str]] = []
        for namespace, device in (
            (host.namespace, "eth0"),
            (host.peer_namespace, host.peer_device),
        ):
            if kbit is None:
                # `-force`: removing a qdisc that is not there is not an error.
                argv = ["tc", "-force", "-n", namespace, "-batch", "-"]
                line = f"qdisc del dev {device} root\n"
            else:
                argv = ["tc", "-n", namespace, "-batch", "-"]
                line = (
                    f"qdisc replace dev {device} root tbf rate {kbit}kbit "
                    "burst 32kb latency 400ms\n"
                )
            jobs.append((argv, line))
        if kbit is None:
            for argv, line in jobs:
                subprocess.run(
                    argv,
                    input=line,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=COMMAND_TIMEOUT,
                )
            return
        _run_many(jobs)

    def set_firewall(self, host: Host, enabled: bool = True) -> None:
        """A stateful firewall on the host itself: replies come in, unsolicited packets do not.

        A public address behind a filtering firewall: no NAT, but not reachable
        either (``NatClass.FIREWALLED``). ``enabled=False`` removes it.
        """
        text = "table inet lab_firewall {}\ndelete table inet lab_firewall\n"
        if enabled:
            text += (
                "table inet lab_firewall {\n"
                "    chain input {\n"
                "        type filter hook input priority filter; policy accept;\n"
                '        iifname != "eth0" accept\n'
                "        ct state established,related accept\n"
                "        counter drop\n"
                "    }\n"
                "}\n"
            )
        _run(["ip", "netns", "exec", host.namespace, "nft", "-f", "-"], text)

    def set_delay(
        self, host: Host, delay_ms: float, jitter_ms: float = 0.0, *, seed: int | None = None
    ) -> None:
        """Delay (and jitter) every packet on the host's ``eth0``, each direction, via NFQUEUE.

        The one-way delay is ``delay_ms`` +- uniform ``jitter_ms`` in each
        direction (so a round trip through this host's link gains twice the
        delay). A pure-Python verdict program (tests/harness/lab_delay.py) runs
        in the host's namespace; meant for signalling-sized traffic. 0 removes it.
        """
        if delay_ms < 0 or jitter_ms < 0 or jitter_ms > delay_ms:
            raise ValueError("need 0 <= jitter_ms <= delay_ms")
        previous = self._delays.pop(host.name, None)
        if previous is not None:
            previous.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                previous.wait(PROCESS_STOP_GRACE)
        rules = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        if delay_ms > 0:
            proc = host.popen(
                host.python("-m", DELAY_MODULE, "0", str(delay_ms), str(jitter_ms), str(seed or 0))
            )
            if read_line(proc) != "ready":
                raise LabError(f"delay program in {host.namespace} did not start")
            self._delays[host.name] = proc
            # --queue-bypass: should the program die, packets flow undelayed, never stuck.
            rules += (
                "-A PREROUTING -i eth0 -j NFQUEUE --queue-num 0 --queue-bypass\n"
                "-A OUTPUT -o eth0 -j NFQUEUE --queue-num 0 --queue-bypass\n"
            )
        rules += "COMMIT\n"
        _run(["ip", "netns", "exec", host.namespace, "iptables-restore"], rules)

    def namespaces(self) -> list[str]:
        """Every namespace this lab created (switch first)."""
        return list(self._namespaces)
