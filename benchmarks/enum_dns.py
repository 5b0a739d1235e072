"""ENUM over DNS: our gateway (``p2pnode enum serve``) against NSD, same records, same query mix.

Setup (all on loopback, ports chosen by binding port 0 first):
- a real DHT of a few nodes (in this process, on a background event loop);
  ``COUNT`` numbers published, each countersigned by one verifier;
- ``p2pnode enum serve`` as its own process, trusting that verifier, rate limit
  off, warmed up (every name asked once, so routes are in its cache);
- NSD (C, authoritative) with a static ``e164.arpa`` zone holding the same
  NAPTR records, ``rrl-ratelimit: 0``, ``server-count: 1`` (one process, as ours).
Then dnsperf runs the same query file (90 % numbers with records, 10 % numbers
without: NXDOMAIN) against each for ``--seconds`` (``-l``), one after the other.

Usage: python benchmarks/enum_dns.py [--seconds 10] [--count 100] [--clients 4]
The last line is one JSON object:
{"p2pnode": {"qps", "avg_ms", "lost", "rcodes"}, "nsd": {...}, "ratio_qps": ours/nsd}
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import print_final_json, print_table, ratio

HIT_NUMBER = "+1800555{:04d}"
MISS_NUMBER = "+1888555{:04d}"
ROUTE = "sip:pbx{}@owner.example"


def free_port() -> int:
    """A port free for both UDP and TCP right now (bound to 0 first, then released)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def dotted(number: str) -> str:
    return ".".join(reversed(number.lstrip("+"))) + ".e164.arpa"


class Dht:
    """Real DHT nodes on a background loop; publishes the benchmark's records."""

    def __init__(self, nodes: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nodes: list[object] = []
        self.count = nodes

    def call(self, coroutine: object, timeout: float) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    async def start(self) -> str:
        from p2pnode.dht import DhtNode
        from p2pnode.identity import Identity

        seed = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
        await seed.start()
        self.nodes.append(seed)
        for _ in range(self.count - 1):
            node = DhtNode(Identity.generate(), listen=("127.0.0.1", 0), bootstrap=[seed.address])
            await node.start()
            self.nodes.append(node)
        return f"{seed.address[0]}:{seed.address[1]}"

    async def publish(self, count: int) -> str:
        """``count`` verified numbers; returns the verifier's peer id."""
        from p2pnode.directory.lookup import DhtNetwork, Directory
        from p2pnode.directory.naptr import sip_directive
        from p2pnode.directory.verifiers import countersign
        from p2pnode.identity import Identity
        from p2pnode.records import RecordKind

        verifier = Identity.generate()
        directory = Directory(
            DhtNetwork(self.nodes[1]),  # type: ignore[arg-type]
            trusted=frozenset({verifier.public_key}),
            clock=time.time,
        )
        semaphore = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            owner = Identity.generate()
            number = HIT_NUMBER.format(i)
            token = countersign(
                verifier, RecordKind.ENUM_ENTRY, number, owner.public_key, now=time.time()
            )
            async with semaphore:
                await directory.publish_enum(
                    owner, number, [sip_directive(ROUTE.format(i))], add=[token]
                )

        await asyncio.gather(*(one(i) for i in range(count)))
        return verifier.peer_id

    async def stop(self) -> None:
        for node in self.nodes:
            await node.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.call(self.stop(), 20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def nsd_zone(count: int) -> str:
    lines = [
        "$ORIGIN e164.arpa.",
        "$TTL 60",
        "@ IN SOA localhost. hostmaster.invalid. 1 3600 600 86400 30",
        "@ IN NS localhost.",
    ]
    for i in range(count):
        name = dotted(HIT_NUMBER.format(i)) + "."
        lines.append(f'{name} IN NAPTR 100 10 "u" "E2U+sip" "!^.*$!{ROUTE.format(i)}!" .')
    return "\n".join(lines) + "\n"


def start_nsd(workdir: Path, count: int) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    (workdir / "e164.arpa.zone").write_text(nsd_zone(count))
    (workdir / "nsd.conf").write_text(
        f"""server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  zonesdir: "{workdir}"
  database: ""
  pidfile: "{workdir}/nsd.pid"
  xfrdfile: "{workdir}/xfrd.state"
  zonelistfile: "{workdir}/zone.list"
  logfile: "{workdir}/nsd.log"
  username: ""
  chroot: ""
  verbosity: 0
  server-count: 1
  rrl-ratelimit: 0
  hide-version: yes
remote-control:
  control-enable: no
zone:
  name: e164.arpa
  zonefile: e164.arpa.zone
"""
    )
    process = subprocess.Popen(
        [shutil.which("nsd") or "/usr/sbin/nsd", "-d", "-c", str(workdir / "nsd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, port


def start_gateway(workdir: Path, seed: str, verifier: str) -> tuple[subprocess.Popen[str], int]:
    command = [
        sys.executable,
        "-m",
        "p2pnode",
        "enum",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--bootstrap",
        seed,
        "--trust",
        verifier,
        "--rate-limit",
        "0",
        "--home",
        str(workdir),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert process.stdout is not None
    banner = process.stdout.readline()
    match = re.search(r"udp\+tcp [\d.]+:(\d+)", banner)
    if match is None:
        process.kill()
        raise RuntimeError(f"gateway did not start: {banner!r}")
    return process, int(match.group(1))


def wait_answering(port: int, name: str, seconds: float) -> bool:
    import dns.message
    import dns.query

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            response = dns.query.udp(
                dns.message.make_query(name, "NAPTR"), "127.0.0.1", port=port, timeout=1.0
            )
        except (OSError, dns.exception.Timeout):
            time.sleep(0.1)
            continue
        if response.answer:
            return True
        time.sleep(0.1)
    return False


def warm(port: int, names: list[str]) -> int:
    """Ask every name once (routes come from the DHT into the gateway's cache)."""
    import dns.message
    import dns.query

    answered = 0
    for name in names:
        for _ in range(3):
            try:
                dns.query.udp(
                    dns.message.make_query(name, "NAPTR", use_edns=False),
                    "127.0.0.1",
                    port=port,
                    timeout=3.0,
                )
                answered += 1
                break
            except (OSError, dns.exception.Timeout):
                continue
    return answered


def dnsperf(
    port: int, queries: Path, seconds: int, clients: int, edns: bool = False
) -> dict[str, Any]:
    completed = subprocess.run(
        [
            shutil.which("dnsperf") or "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(queries),
            "-l",
            str(seconds),
            "-c",
            str(clients),
            "-q",
            "200",
            "-t",
            "2",
            *(["-D"] if edns else []),  # EDNS0 with the DO bit, as validating resolvers ask
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    out = completed.stdout

    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"dnsperf output without {pattern!r}:\n{out}\n{completed.stderr}")
        return float(match.group(1))

    # "Response codes: NOERROR 658 (90.09%), NXDOMAIN 72 (9.91%)": proves the answers are
    # the right kind (a server answering SERVFAIL fast would otherwise look good).
    codes = re.search(r"Response codes:\s+(.+)", out)
    return {
        "rcodes": {
            code: int(count)
            for code, count in re.findall(r"([A-Z]+) (\d+) \(", codes.group(1) if codes else "")
        },
        "qps": round(number(r"Queries per second:\s+([\d.]+)"), 1),
        "avg_ms": round(number(r"Average Latency \(s\):\s+([\d.]+)") * 1000, 3),
        "lost": int(number(r"Queries lost:\s+(\d+)")),
        "completed": int(number(r"Queries completed:\s+(\d+)")),
    }


def rcodes(figures: dict[str, Any]) -> str:
    """The response codes dnsperf counted, as a table cell (``NOERROR 658, NXDOMAIN 72``)."""
    return ", ".join(f"{code} {count}" for code, count in figures["rcodes"].items()) or "-"


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="dnsperf -l per server")
    parser.add_argument("--count", type=int, default=100, help="numbers with records")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    parser.add_argument("--nodes", type=int, default=5, help="DHT nodes")
    parser.add_argument(
        "--edns",
        action="store_true",
        help="queries with EDNS0 and the DO bit (dnsperf -D), as resolvers send them",
    )
    args = parser.parse_args()
    for tool in ("dnsperf", "nsd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print_final_json({"error": f"{tool} not installed (apt-get install {tool})"})
            return 1

    hits = [dotted(HIT_NUMBER.format(i)) for i in range(args.count)]
    misses = [dotted(MISS_NUMBER.format(i)) for i in range(max(1, args.count // 9))]
    mix = [*hits, *misses]  # ~90 % answers, ~10 % NXDOMAIN
    with tempfile.TemporaryDirectory(prefix="enum-dns-bench-") as tmp:
        workdir = Path(tmp)
        queries = workdir / "queries.txt"
        queries.write_text("".join(f"{name} NAPTR\n" for name in mix))
        (workdir / "nsd").mkdir()
        (workdir / "gw").mkdir()

        dht = Dht(args.nodes)
        gateway: subprocess.Popen[str] | None = None
        nsd: subprocess.Popen[str] | None = None
        try:
            seed = str(dht.call(dht.start(), 30))
            verifier = str(dht.call(dht.publish(args.count), 120))
            gateway, gateway_port = start_gateway(workdir / "gw", seed, verifier)
            if not wait_answering(gateway_port, hits[0], 15):
                raise RuntimeError("the gateway does not answer")
            warmed = warm(gateway_port, mix)
            ours = dnsperf(gateway_port, queries, args.seconds, args.clients, args.edns)
            stop(gateway)
            gateway = None

            nsd, nsd_port = start_nsd(workdir / "nsd", args.count)
            if not wait_answering(nsd_port, hits[0], 15):
                raise RuntimeError("NSD does not answer")
            anchor = dnsperf(nsd_port, queries, args.seconds, args.clients, args.edns)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            print_final_json({"error": str(error)})
            return 1
        finally:
            if gateway is not None:
                stop(gateway)
            if nsd is not None:
                stop(nsd)
            dht.close()

    print(
        f"ENUM NAPTR over UDP, {len(mix)} names ({len(hits)} with records, {len(misses)} "
        f"NXDOMAIN), dnsperf -l {args.seconds} -c {args.clients} -q 200"
        f"{' -D (EDNS0, DO bit)' if args.edns else ' (no EDNS)'}; "
        f"gateway warmed with {warmed} queries"
    )
    print_table(
        ["server", "qps", "avg ms", "lost", "completed", "response codes"],
        [
            [
                "p2pnode enum serve (Python)",
                ours["qps"],
                ours["avg_ms"],
                ours["lost"],
                ours["completed"],
                rcodes(ours),
            ],
            [
                "NSD 4 (C, 1 process)",
                anchor["qps"],
                anchor["avg_ms"],
                anchor["lost"],
                anchor["completed"],
                rcodes(anchor),
            ],
        ],
    )
    share = ratio(ours["qps"], anchor["qps"])
    print(f"ratio (ours / NSD): {share:.2f}x (goal >= 0.3x)" if share else "ratio: -")
    print_final_json(
        {
            "p2pnode": {k: ours[k] for k in ("qps", "avg_ms", "lost", "rcodes")},
            "nsd": {k: anchor[k] for k in ("qps", "avg_ms", "lost", "rcodes")},
            "ratio_qps": round(share, 3) if share else None,
            "edns": args.edns,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
