"""A PeerLink peer for the netns lab, driven over stdin/stdout in JSON lines.

Why a process per lab host: aiortc binds its ICE sockets where it runs, and a
namespace is per process; one agent per host serves every link of that host
concurrently (one event loop), so the 21 pairs of the reach matrix run side by
side with 12 processes. The test process is the signalling: it forwards each
``signal`` line to the named peer's agent, stamping the sender itself (the agent
cannot claim another name), so the delivery is authenticated by construction,
as the sealed envelopes of ``connectivity.signalling`` will be.

    python -m tests.harness.lab_peer NAME SECRET RELAY_IP:PORT [...] [--plain]

Startup: probe every relay (STUN Binding over UDP, else TCP), take the nearest
as home STUN and TURN server, credentials by the relay's REST secret (what its
credentials RPC would hand out). The ``prepare`` op gathers N connections
ahead (TURN allocation included) for incoming offers. ``--plain`` is the benchmark
anchor: plain aiortc, in-band data channel, no early-retransmission tuning.

In:  {"op": "dial", "link": TAG, "peer": NAME} | {"op": "signal", "link": TAG,
      "from": NAME, "payload": B64} | {"op": "prepare", "count": N} | {"op": "quit"}
Out: {"ready": NAME, "plan": ...} | {"prepared": N}
     | {"signal": TAG, "to": NAME, "payload": B64}
     | {"open": TAG, "role": "dial"|"answer", "path": ..., "setup_ms": ...,
        "total_ms": ..., "rtt_ms": ..., "echo": bool} | {"failed": TAG, "error": TEXT}
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import statistics
import sys
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from p2pnode.connectivity.credentials import TurnCredentials
from p2pnode.connectivity.ice_servers import Address, IcePlan, plan_ice_servers
from p2pnode.connectivity.peerlink import (
    LinkConfig,
    PeerLink,
    PeerLinkError,
    PreparedConnection,
    SignalDelivery,
)
from p2pnode.connectivity.relays import stun_probe
from relay.auth import rest_api_password, rest_api_username

__all__ = ["main"]

REALM = "lab"
PROBE_BUDGET = 0.7
ECHO_TIMEOUT = 5.0
PINGS = 3
MAX_RUNTIME = 300.0  # s: the agent exits whatever happens
MAX_LINKS = 256


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class PipeSignalling:
    """One link's ``SignalTransport``: out as a JSON line, in from the driver's lines."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.inbox: asyncio.Queue[SignalDelivery] = asyncio.Queue(16)

    async def send(self, peer: str, payload: bytes) -> None:
        emit({"signal": self.tag, "to": peer, "payload": base64.b64encode(payload).decode()})

    async def receive(self) -> SignalDelivery:
        return await self.inbox.get()


async def choose_plan(name: str, secret: bytes, relays: list[Address]) -> IcePlan:
    """Nearest relay by a STUN probe over UDP; over TCP if no UDP answer comes back."""
    udp = await asyncio.gather(
        *(stun_probe("udp", r, time_budget=PROBE_BUDGET, attempts=3) for r in relays)
    )
    answered = [(rtt, r) for rtt, r in zip(udp, relays, strict=True) if rtt is not None]
    udp_works = bool(answered)
    if not answered:
        tcp = await asyncio.gather(*(stun_probe("tcp", r, time_budget=2.0) for r in relays))
        answered = [(rtt, r) for rtt, r in zip(tcp, relays, strict=True) if rtt is not None]
    if not answered:
        return IcePlan()
    best = min(answered)[1]
    expires = int(time.time()) + 3600
    username = rest_api_username(expires, name)
    credentials = TurnCredentials(username, rest_api_password(secret, username), REALM, expires)
    return plan_ice_servers(
        stun=best,
        turn_udp=best,
        turn_tcp=best,
        credentials=credentials,
        udp_works=udp_works,
        relay_id=f"{best[0]}:{best[1]}",
    )


def plan_json(plan: IcePlan) -> dict[str, Any]:
    return {
        "stun": list(plan.stun) if plan.stun else None,
        "turn": list(plan.turn) if plan.turn else None,
        "turn_transport": plan.turn_transport.value,
    }


def plain_path(pc: RTCPeerConnection) -> dict[str, Any]:
    """The nominated pair of a plain aiortc connection (aioice keeps it privately)."""
    sctp = pc.sctp
    connection = (
        getattr(sctp.transport.transport.iceGatherer, "_connection", None) if sctp else None
    )
    pair = getattr(connection, "_nominated", {}).get(1)
    if pair is None:
        return {}
    local, remote = pair.local_candidate.type, pair.remote_candidate.type
    direct = "relay" not in (local, remote)
    return {"local": local, "remote": remote, "direct": direct, "describe": f"{local}->{remote}"}


class Agent:
    def __init__(self, name: str, plan: IcePlan, plain: bool) -> None:
        self.name = name
        self.config = LinkConfig(ice=plan, setup_timeout=20.0)
        self.plain = plain
        self.links: dict[str, PipeSignalling] = {}
        self.spares: list[PreparedConnection] = []
        self.open_links: list[PeerLink] = []
        self.plain_pcs: list[RTCPeerConnection] = []

    async def prepare_spares(self, count: int) -> None:
        """Replace the spare connections by ``count`` freshly gathered ones."""
        old, self.spares = self.spares, []
        for prepared in old:
            await prepared.pc.close()
        if not self.plain and count:
            self.spares = list(
                await asyncio.gather(
                    *(PreparedConnection.create(self.config) for _ in range(count))
                )
            )
        emit({"prepared": len(self.spares)})

    async def dial(self, tag: str, peer: str, transport: PipeSignalling) -> None:
        try:
            if self.plain:
                await self._plain_dial(tag, peer, transport)
                return
            link = await PeerLink.dial(peer, transport, self.config)
            self.open_links.append(link)
            link.send(b"hello " + tag.encode())
            echo = await asyncio.wait_for(link.receive(), ECHO_TIMEOUT)
            rtts = [await link.ping() for _ in range(PINGS)]
            path = link.path()
            emit(
                {
                    "open": tag,
                    "role": "dial",
                    "path": {
                        "local": path.local_kind.value,
                        "remote": path.remote_kind.value,
                        "direct": path.direct,
                        "relay": list(path.relay) if path.relay else None,
                        "turn_transport": path.turn_transport.value
                        if path.turn_transport
                        else None,
                        "describe": path.describe(),
                    },
                    "setup_ms": link.timings.setup_ms,
                    "total_ms": link.timings.total_ms,
                    "rtt_ms": statistics.median(rtts) * 1000.0,
                    "echo": echo == b"hello " + tag.encode(),
                }
            )
            self.open_links.remove(link)
            await link.close()  # rounds of a benchmark must not pile up open links
        except (PeerLinkError, TimeoutError, OSError, ValueError) as error:
            emit({"failed": tag, "error": f"{type(error).__name__}: {error}"})

    async def answer(self, tag: str, transport: PipeSignalling) -> None:
        try:
            delivery = await transport.receive()
            if self.plain:
                await self._plain_answer(delivery, transport)
                return
            prepared = self.spares.pop() if self.spares else None
            link = await PeerLink.answer(delivery, transport, self.config, prepared=prepared)
            self.open_links.append(link)
            path = link.path()
            emit(
                {
                    "open": tag,
                    "role": "answer",
                    "total_ms": link.timings.total_ms,
                    "path": {"direct": path.direct, "describe": path.describe()},
                }
            )
            while True:
                link.send(await link.receive())
        except (PeerLinkError, TimeoutError, OSError, ValueError) as error:
            emit({"failed": tag, "error": f"{type(error).__name__}: {error}"})

    # -- the anchor: plain aiortc, SDP through the same pipe --------------------------------

    def _plain_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.config.ice.rtc_servers()))
        self.plain_pcs.append(pc)
        return pc

    async def _plain_dial(self, tag: str, peer: str, transport: PipeSignalling) -> None:
        pc = self._plain_pc()
        channel = pc.createDataChannel("data")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await pc.setLocalDescription(await pc.createOffer())
        sent = time.monotonic()
        await transport.send(peer, pc.localDescription.sdp.encode())
        answer = await transport.receive()
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer.payload.decode(), type="answer")
        )
        await asyncio.wait_for(opened.wait(), 20.0)
        setup_ms = (time.monotonic() - sent) * 1000.0
        emit({"open": tag, "role": "dial", "setup_ms": setup_ms, "path": plain_path(pc)})

    async def _plain_answer(self, delivery: SignalDelivery, transport: PipeSignalling) -> None:
        pc = self._plain_pc()
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=delivery.payload.decode(), type="offer")
        )
        await pc.setLocalDescription(await pc.createAnswer())
        await transport.send(delivery.sender, pc.localDescription.sdp.encode())

    async def close(self) -> None:
        for link in self.open_links:
            await link.close()
        for prepared in self.spares:
            await prepared.pc.close()
        for pc in self.plain_pcs:
            await pc.close()


async def serve(args: argparse.Namespace) -> None:
    relays = []
    for text in args.relays:
        host, _, port = text.rpartition(":")
        relays.append((host, int(port)))
    plan = await choose_plan(args.name, args.secret.encode(), relays)
    agent = Agent(args.name, plan, args.plain)
    emit({"ready": args.name, "plan": plan_json(plan)})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with asyncio.TaskGroup() as group:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                message = json.loads(line)
                op = message.get("op")
                if op == "quit":
                    break
                if op == "prepare":
                    count = min(int(message.get("count", 0)), MAX_LINKS)
                    group.create_task(agent.prepare_spares(count))
                    continue
                tag = str(message.get("link", ""))
                if op == "dial" and tag not in agent.links and len(agent.links) < MAX_LINKS:
                    outgoing = agent.links[tag] = PipeSignalling(tag)
                    group.create_task(agent.dial(tag, str(message["peer"]), outgoing))
                elif op == "signal":
                    known = agent.links.get(tag)
                    if known is None:
                        if len(agent.links) >= MAX_LINKS:
                            continue
                        known = agent.links[tag] = PipeSignalling(tag)
                        group.create_task(agent.answer(tag, known))
                    payload = base64.b64decode(message["payload"])
                    known.inbox.put_nowait(SignalDelivery(str(message["from"]), payload))
        finally:
            await agent.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lab_peer")
    parser.add_argument("name")
    parser.add_argument("secret")
    parser.add_argument("relays", nargs="+")
    parser.add_argument("--plain", action="store_true")
    args = parser.parse_args(argv)
    log_dir = os.environ.get("P2PNODE_LAB_ICE_LOG")  # debugging: aioice's check log per agent
    if log_dir:
        logging.basicConfig(
            filename=os.path.join(log_dir, f"{args.name}.log"),
            level=logging.INFO,
            format="%(relativeCreated)8.1f %(name)s %(message)s",
        )
        logging.getLogger("aiortc").setLevel(logging.WARNING)

    async def bounded() -> None:
        async with asyncio.timeout(MAX_RUNTIME):
            await serve(args)

    try:
        asyncio.run(bounded())
    except TimeoutError:
        return 1
    except BaseExceptionGroup as group:
        _, rest = group.split(asyncio.CancelledError)
        if rest is not None:
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
