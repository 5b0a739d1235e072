"""SIP gateway throughput against Kamailio and rtpengine, measured in the same run.

Three figures, each beside its anchor:
1. call set-ups per second (INVITE/100/180/200/ACK/BYE, sipp's built-in uac ->
   system -> sipp's built-in uas, closed loop with ``--concurrency`` calls in
   flight): our gateway (a B2BUA that also opens an RTP relay port pair per
   call) vs Kamailio 5.6 as a stateful proxy (tm, one worker), in ``--rounds``
   alternating rounds so both see the same load on the shared box (the ratio is
   the median of the rounds' ratios), with the CPU each system's processes spent
   per call (/proc, Kamailio's whole process tree);
2. REGISTERs with digest per second (sipp answers each 401): our registrar vs
   Kamailio's registrar with ``pv_www_authenticate``;
3. RTP packets relayed per CPU-second (one stream, offered below saturation,
   loss checked): our relay vs rtpengine (userspace forwarding, ``--table=-1``).
   CPU time is read from /proc for the relay's process (all threads).

Both SIP systems run as one process (Kamailio ``children=1``) on loopback.
The box has 2 cores shared with other work: figures are indicative.

Usage: flock /tmp/bench.lock .venv/bin/python benchmarks/sip_gateway.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import print_final_json, print_table, ratio

PASSWORD = "alice-secret-1"  # noqa: S105 (a throwaway benchmark account)
DOMAIN = "bench.test"
GATEWAY_HOST = "127.0.0.2"  # not sipp's 127.0.0.1: a From at our own address must authenticate
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
_SUCCESS = re.compile(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)")

REGISTER_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
From: <sip:alice@bench.test>;tag=[call_number]
To: <sip:alice@bench.test>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:alice@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 300
Content-Length: 0

]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
From: <sip:alice@bench.test>;tag=[call_number]
To: <sip:alice@bench.test>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:alice@[local_ip]:[local_port]>
[authentication]
Max-Forwards: 70
Expires: 300
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every descendant (Kamailio forks its workers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, of in parents.items() if of == parent and child not in tree]
        tree.update(children)
        frontier += children
    total = 0.0
    for member in tree:
        try:
            total += cpu_seconds(member)
        except (OSError, IndexError):
            continue
    return total


# -- workers (child processes) -----------------------------------------------------------


def gateway_worker(home: Path, profile: Path | None = None, loop: str = "asyncio") -> None:
    """The gateway in its own process; with ``profile`` its cProfile stats go there.
    ``loop="uvloop"`` runs it on uvloop (an experiment: not a dependency, not how
    ``p2pnode run`` or ``sip serve`` run it)."""
    from p2pnode.gateways.sip.accounts import AccountStore
    from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
    from p2pnode.gateways.sip.security import GuardConfig

    async def run() -> None:
        store = AccountStore(home / "accounts.sqlite", DOMAIN)
        store.add("alice", PASSWORD, randbytes=os.urandom)
        store.add("service", PASSWORD, randbytes=os.urandom, max_calls=100_000)
        # The benchmark is one source at thousands of requests/s: no density ban.
        config = GatewayConfig(
            DOMAIN,
            host=GATEWAY_HOST,
            guard=GuardConfig(max_requests=10**9),
            max_transactions=500_000,  # ~32 s of finished transactions at full rate
        )
        gateway = SipGateway(config, store)
        await gateway.start()
        assert gateway.address is not None
        print(gateway.address[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await gateway.stop()

    if loop == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        uvloop.run(run())
        return
    if profile is None:
        asyncio.run(run())
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.runcall(asyncio.run, run())
    profiler.dump_stats(profile)


def relay_worker() -> None:
    from p2pnode.gateways.sip.media import MediaRelay, Side

    async def run() -> None:
        relay = MediaRelay("127.0.0.1")
        handle = relay.open()
        source, sink = json.loads(sys.stdin.readline())
        handle.expect(Side.A, (source[0], source[1]))
        handle.expect(Side.B, (sink[0], sink[1]))
        print(handle.port(Side.A), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        print(relay.statistics().forwarded, flush=True)

    asyncio.run(run())


# -- SIP measurements ---------------------------------------------------------------------


def sipp(args: list[str], cwd: Path, timeout: float = 120.0) -> tuple[int, float]:
    """Run a sipp client; (successful calls, wall seconds)."""
    start = time.perf_counter()
    result = subprocess.run(
        ["timeout", str(int(timeout)), "sipp", *args, "-nostdin", "-i", "127.0.0.1",
         "-p", str(free_port()), "-timeout", str(int(timeout - 5)), "-buff_size", "4194304"],
        cwd=cwd, capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    found = _SUCCESS.search(result.stdout)
    return (int(found.group(1)) if found else 0), elapsed


def cps_through(
    target: tuple[str, int], uas_port: int, calls: int, concurrency: int, tmp: Path
) -> float | None:
    args = ["-sn", "uac", f"{target[0]}:{target[1]}", "-s", "service", "-m", str(calls),
            "-r", "100000", "-l", str(concurrency), "-mp", str(free_port())]  # fmt: skip
    done, elapsed = sipp(args, tmp)
    if done < calls:
        print(f"warning: {calls - done} of {calls} calls failed", file=sys.stderr)
    return done / elapsed if done else None


@dataclass(frozen=True)
class CpsMeasure:
    cps: float | None
    cpu_ms_per_call: float | None


@dataclass(frozen=True)
class CpsRound:
    ours: CpsMeasure
    theirs: CpsMeasure | None


def cps_round(
    pid: int, target: tuple[str, int], uas_port: int, args: argparse.Namespace, tmp: Path
) -> CpsMeasure:
    """One closed-loop sipp run through ``target``, with the CPU its process tree spent."""
    uas = start_uas(uas_port, args.calls, tmp)
    before = tree_cpu_seconds(pid)
    cps = cps_through(target, uas_port, args.calls, args.concurrency, tmp)
    spent = tree_cpu_seconds(pid) - before
    stop(uas)
    return CpsMeasure(cps, spent / args.calls * 1000 if cps else None)


def median(values: list[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    return statistics.median(present) if present else None


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a sipp UAS that may still wait for calls that failed upstream."""
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(timeout=10)


def start_uas(port: int, calls: int, tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["timeout", "300", "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin",
         "-m", str(calls), "-buff_size", "4194304", "-mp", str(free_port())],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def registers_through(
    target: tuple[str, int], count: int, concurrency: int, tmp: Path
) -> float | None:
    scenario = tmp / "register.xml"
    scenario.write_text(REGISTER_SCENARIO)
    args = ["-sf", str(scenario), f"{target[0]}:{target[1]}", "-m", str(count), "-r", "100000",
            "-l", str(concurrency), "-au", "alice", "-ap", PASSWORD]  # fmt: skip
    done, elapsed = sipp(args, tmp)
    return done / elapsed if done else None


def kamailio(config: str, tmp: Path) -> subprocess.Popen[bytes]:
    path = tmp / f"kamailio-{time.monotonic_ns()}.cfg"
    path.write_text(config)
    process = subprocess.Popen(
        ["kamailio", "-f", str(path), "-DD", "-E", "-m", "256", "-M", "16", "-Y", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    if process.poll() is not None:
        raise RuntimeError("kamailio did not start")
    return process


def kamailio_head(port: int, modules: tuple[str, ...]) -> str:
    loads = "\n".join(f'loadmodule "{m}.so"' for m in modules)
    return (
        textwrap.dedent(
            f"""\
        #!KAMAILIO
        debug=1
        log_stderror=yes
        children=1
        auto_aliases=no
        listen=udp:127.0.0.1:{port}
        mpath="{KAMAILIO_MODULES}"
        dns=no
        rev_dns=no
        """
        )
        + loads
        + "\n"
    )


def proxy_config(port: int, uas_port: int) -> str:
    return kamailio_head(port, ("tm", "sl", "pv", "maxfwd")) + textwrap.dedent(
        f"""\
        request_route {{
            if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
            $du = "sip:127.0.0.1:{uas_port}";
            if (!t_relay()) {{ sl_reply_error(); }}
        }}
        """
    )


def registrar_config(port: int) -> str:
    modules = ("sl", "pv", "textops", "auth", "usrloc", "registrar", "maxfwd")
    return kamailio_head(port, modules) + textwrap.dedent(
        f"""\
        modparam("usrloc", "db_mode", 0)
        request_route {{
            if (is_method("REGISTER")) {{
                if (!pv_www_authenticate("$td", "{PASSWORD}", "0")) {{
                    www_challenge("$td", "0");
                    exit;
                }}
                if (!save("location")) {{ sl_reply_error(); }}
                exit;
            }}
            sl_send_reply("404", "Not Found");
        }}
        """
    )


def register_uas_contact(gateway: tuple[str, int], uas_port: int) -> None:
    from p2pnode.gateways.sip.useragent import SipUserAgent

    async def run() -> None:
        ua = SipUserAgent("service", PASSWORD, DOMAIN, gateway)
        await ua.start()
        try:
            await ua.register(expires=3600, contact=f"<sip:service@127.0.0.1:{uas_port}>")
        finally:
            await ua.close()

    asyncio.run(run())


# -- RTP measurements ----------------------------------------------------------------------


def blast(
    destination: tuple[str, int],
    sender: socket.socket,
    sink: socket.socket,
    packets: int,
    rate: float,
) -> int:
    """Send ``packets`` 172-byte RTP packets at ``rate``/s; return how many the sink got."""
    received = [0]
    stop = threading.Event()

    def drain() -> None:
        sink.settimeout(0.2)
        while not stop.is_set():
            try:
                sink.recv(2048)
                received[0] += 1
            except TimeoutError:
                continue

    thread = threading.Thread(target=drain)
    thread.start()
    payload = bytes(160)
    start = time.perf_counter()
    batch = max(1, int(rate / 1000))
    for index in range(packets):
        header = bytes([0x80, 0]) + (index & 0xFFFF).to_bytes(2, "big")
        sender.sendto(
            header + (index * 160).to_bytes(4, "big") + b"\x00\x00\x00\x01" + payload, destination
        )
        if index % batch == 0:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    time.sleep(0.5)
    stop.set()
    thread.join()
    return received[0]


def sockets() -> tuple[socket.socket, socket.socket]:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return sender, sink


def pps_ours(packets: int, rate: float) -> tuple[float | None, float]:
    sender, sink = sockets()
    worker = subprocess.Popen(
        [sys.executable, __file__, "--worker", "relay"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(json.dumps([sender.getsockname(), sink.getsockname()]) + "\n")
    worker.stdin.flush()
    port = int(worker.stdout.readline())
    before = cpu_seconds(worker.pid)
    got = blast(("127.0.0.1", port), sender, sink, packets, rate)
    used = cpu_seconds(worker.pid) - before
    worker.stdin.close()
    worker.wait(timeout=10)
    return (got / used if used > 0 else None), 1 - got / packets


def bencode(value: object) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return str(len(value)).encode() + b":" + value
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(type(value))


def ng(port: int, command: dict[str, str]) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        cookie = os.urandom(6).hex().encode()  # rtpengine drops a repeated cookie as a duplicate
        sock.sendto(cookie + b" " + bencode(command), ("127.0.0.1", port))
        data = sock.recv(65535).decode(errors="replace")
    return data


def sdp_for(address: tuple[str, int]) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {address[0]}\r\ns=-\r\nc=IN IP4 {address[0]}\r\nt=0 0\r\n"
            f"m=audio {address[1]} RTP/AVP 0\r\na=sendrecv\r\n")  # fmt: skip


def pps_rtpengine(packets: int, rate: float, tmp: Path) -> tuple[float | None, float]:
    if shutil.which("rtpengine") is None:
        return None, 1.0
    ng_port = free_port()
    base = free_port() & ~1
    process = subprocess.Popen(
        ["rtpengine", "--foreground", "--log-stderr", "--table=-1", "--interface=127.0.0.1",
         f"--listen-ng=127.0.0.1:{ng_port}", f"--port-min={base}", f"--port-max={base + 40}",
         "--num-threads=1", f"--pidfile={tmp / 'rtpengine.pid'}", "--log-level=3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        sender, sink = sockets()
        ng(ng_port, {"command": "offer", "call-id": "bench", "from-tag": "a",
                     "sdp": sdp_for(sender.getsockname())})  # fmt: skip
        answer = ng(ng_port, {"command": "answer", "call-id": "bench", "from-tag": "a",
                              "to-tag": "b", "sdp": sdp_for(sink.getsockname())})  # fmt: skip
        found = re.search(r"m=audio (\d+)", answer)
        if found is None:
            return None, 1.0
        before = cpu_seconds(process.pid)
        got = blast(("127.0.0.1", int(found.group(1))), sender, sink, packets, rate)
        used = cpu_seconds(process.pid) - before
        return (got / used if used > 0 else None), 1 - got / packets
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=("gateway", "relay"))
    parser.add_argument("--home", type=Path)
    parser.add_argument("--calls", type=int, default=1000, help="calls per round and system")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--registers", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--packets", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=20_000.0)
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the gateway's event loop (uvloop: an experiment, needs the package)",
    )
    parser.add_argument(
        "--profile", type=Path, help="write the gateway process's cProfile stats to this file"
    )
    args = parser.parse_args()
    if args.worker == "gateway":
        gateway_worker(args.home, args.profile, args.loop)
        return
    if args.worker == "relay":
        relay_worker()
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        profiling = [] if args.profile is None else ["--profile", str(args.profile)]
        profiling += ["--loop", args.loop]
        gateway = subprocess.Popen(
            [sys.executable, __file__, "--worker", "gateway", "--home", str(tmp), *profiling],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert gateway.stdout is not None and gateway.stdin is not None
        target = (GATEWAY_HOST, int(gateway.stdout.readline()))
        uas_port = free_port()
        register_uas_contact(target, uas_port)
        have_kamailio = bool(shutil.which("kamailio") and shutil.which("sipp"))
        kam_port, kam_uas_port = free_port(), free_port()
        proxy = kamailio(proxy_config(kam_port, kam_uas_port), tmp) if have_kamailio else None
        # Rounds alternate gateway and Kamailio, so both see the same load on this
        # shared box; the ratio is the median of the rounds' own ratios.
        rounds: list[CpsRound] = []
        for _ in range(args.rounds):
            ours = cps_round(gateway.pid, target, uas_port, args, tmp)
            theirs = None
            if proxy is not None:
                theirs = cps_round(proxy.pid, ("127.0.0.1", kam_port), kam_uas_port, args, tmp)
            rounds.append(CpsRound(ours, theirs))
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        registers = registers_through(target, args.registers, args.concurrency, tmp)
        gateway.stdin.close()
        gateway.wait(timeout=10)

        kam_registers = None
        if have_kamailio:
            port = free_port()
            registrar = kamailio(registrar_config(port), tmp)
            kam_registers = registers_through(
                ("127.0.0.1", port), args.registers * 2, args.concurrency, tmp
            )
            registrar.terminate()
            registrar.wait(timeout=10)

        ours_pps, ours_loss = pps_ours(args.packets, args.rate)
        engine_pps, engine_loss = pps_rtpengine(args.packets, args.rate, tmp)

    cps = median([r.ours.cps for r in rounds])
    kam_cps = median([r.theirs.cps for r in rounds if r.theirs is not None])
    cpu_ms = median([r.ours.cpu_ms_per_call for r in rounds])
    kam_cpu_ms = median([r.theirs.cpu_ms_per_call for r in rounds if r.theirs is not None])
    round_ratios = [ratio(r.ours.cps, r.theirs.cps if r.theirs else None) for r in rounds]
    cps_ratio = median(round_ratios)
    print_table(
        ["round", "gateway cps", "kamailio cps", "ratio", "gateway CPU ms/call",
         "kamailio CPU ms/call"],
        [[n + 1, r.ours.cps, r.theirs.cps if r.theirs else None, round_ratios[n],
          r.ours.cpu_ms_per_call, r.theirs.cpu_ms_per_call if r.theirs else None]
         for n, r in enumerate(rounds)],
    )  # fmt: skip
    print()
    print_table(
        ["figure", "p2pnode gateway", "anchor", "anchor system", "ratio"],
        [
            ["call set-ups/s (median of rounds)", cps, kam_cps, "kamailio tm proxy", cps_ratio],
            ["CPU ms per call set-up", cpu_ms, kam_cpu_ms, "kamailio (all processes)",
             ratio(cpu_ms, kam_cpu_ms)],
            ["REGISTER+digest/s", registers, kam_registers, "kamailio registrar",
             ratio(registers, kam_registers)],
            ["RTP pkts per CPU-s", ours_pps, engine_pps, "rtpengine userspace",
             ratio(ours_pps, engine_pps)],
            ["RTP loss at offered rate", ours_loss, engine_loss, f"{args.rate:.0f} pkt/s", None],
        ],
    )  # fmt: skip
    print("indicative: 2 shared cores; both SIP systems single-process; loopback")
    print_final_json(
        {
            "cps": cps,
            "kamailio_cps": kam_cps,
            "ratio_cps_vs_kamailio": cps_ratio,
            "cps_rounds": [r.ours.cps for r in rounds],
            "kamailio_cps_rounds": [r.theirs.cps if r.theirs else None for r in rounds],
            "cpu_ms_per_call": cpu_ms,
            "kamailio_cpu_ms_per_call": kam_cpu_ms,
            "ratio_cpu_per_call_vs_kamailio": ratio(cpu_ms, kam_cpu_ms),
            "registers_per_s": registers,
            "kamailio_registers_per_s": kam_registers,
            "ratio_registers_vs_kamailio": ratio(registers, kam_registers),
            "rtp_pps_per_core": ours_pps,
            "rtpengine_pps_per_core": engine_pps,
            "ratio_rtp_vs_rtpengine": ratio(ours_pps, engine_pps),
            "rtp_loss": ours_loss,
            "rtpengine_loss": engine_loss,
            "calls": args.calls,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "rtp_offered_pps": args.rate,
            "gateway_loop": args.loop,
        }
    )


if __name__ == "__main__":
    main()
