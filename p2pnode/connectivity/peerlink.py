"""PeerLink: an aiortc connection between two identities, signalled end to end.

Why: every call, chat session and file transfer between two peers runs over
one WebRTC connection: ICE finds the path (direct host / server-reflexive /
peer-reflexive wherever the NAT pair allows, else relayed through one of our
supernodes' TURN servers), DTLS secures it, SCTP carries a reliable, ordered
data channel, and the calls layer adds media tracks to the same connection.

Trust: the offer and the answer travel through an injected ``SignalTransport``
that authenticates the sender (the sealed signalling envelopes of
``connectivity.signalling``: signed by the sender's identity, confidential to
the recipient). The SDP inside carries the DTLS certificate fingerprint, so the
fingerprint is bound to the sender's identity; aiortc checks the peer's
certificate against it during the handshake, and ``PeerLink`` checks it again
once open (``verify_remote_fingerprint``) so neither a supernode carrying the
signalling nor a relay carrying the packets can sit in the middle.

Shape:
- ``link_signal``: the signalling payload (re-exported here);
- ``PeerLink.dial(peer, transport, config)`` / ``PeerLink.answer(delivery, ...)``;
  ``prepare`` hooks let callers add tracks before the offer/answer;
  ``PreparedConnection`` gathers ahead of time (TURN allocation included), so an
  incoming offer is answered without waiting for the relay;
- ICE restart: aiortc has none, so a restart is a new ``PeerLink`` (a new
  RTCPeerConnection and link id) over the same signalling.

Invariants:
- ``iceServers`` is always the explicit list of an ``IcePlan`` (never aiortc's
  public default); one bundled ICE transport per link (``max-bundle``), so one
  TURN allocation per link;
- every wait is bounded by ``LinkConfig.setup_timeout``; a failed set-up closes
  the RTCPeerConnection before raising ``PeerLinkError``;
- signals from another sender or for another link are dropped and counted,
  never raised.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from cryptography.hazmat.primitives.serialization import Encoding

from p2pnode.connectivity import ice_tuning
from p2pnode.connectivity.ice_servers import Address, IcePlan, TurnTransport
from p2pnode.connectivity.link_signal import (
    LINK_ID_BYTES,
    MAX_SDP_BYTES,
    MAX_SIGNAL_BYTES,
    SignalDecodeError,
    SignalDelivery,
    SignalKind,
    SignalMessage,
    SignalTransport,
    decode_signal,
    encode_signal,
)

__all__ = [
    "CONTROL_CHANNEL_ID",
    "DATA_CHANNEL_ID",
    "LINK_ID_BYTES",
    "MAX_SDP_BYTES",
    "MAX_SIGNAL_BYTES",
    "CandidateKind",
    "LinkConfig",
    "LinkPath",
    "LinkTimings",
    "PeerLink",
    "PeerLinkError",
    "PreparedConnection",
    "SignalDecodeError",
    "SignalDelivery",
    "SignalKind",
    "SignalMessage",
    "SignalTransport",
    "decode_signal",
    "encode_signal",
    "sdp_fingerprints",
]

DATA_CHANNEL_ID = 0  # the application's reliable, ordered channel
CONTROL_CHANNEL_ID = 1  # link-level pings (RTT)
DEFAULT_SETUP_TIMEOUT = 20.0  # s: TURN over TCP through a symmetric NAT included
PING_TIMEOUT = 5.0
DEFAULT_RELAY_HOLD = 0.2  # s; see ice_tuning.hold_relayed_checks
MAX_PENDING_PINGS = 16
# Received messages not yet read (aiortc accepts up to 256 KiB each: <= 32 MiB held);
# beyond it they are dropped and counted ("inbox-full"): read faster or use backpressure.
MAX_INBOX_MESSAGES = 128
PING_BYTES = 9  # kind (1) + nonce (8)
_PING, _PONG = 1, 2


class PeerLinkError(Exception):
    """The link could not be set up or was not what the signalling promised."""


class CandidateKind(enum.Enum):
    HOST = "host"
    SRFLX = "srflx"
    PRFLX = "prflx"
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class LinkPath:
    """Which candidate pair ICE nominated, and what that means for the user."""

    local_kind: CandidateKind
    remote_kind: CandidateKind
    local_address: Address
    remote_address: Address
    relay: Address | None  # the TURN server (ours) or the peer's relayed address
    relay_id: str  # our relay's peer id when we relay, "" otherwise
    turn_transport: TurnTransport | None  # how we reach our relay, None if we do not

    @property
    def direct(self) -> bool:
        """No relay on the path (host, srflx or prflx on both ends)."""
        return CandidateKind.RELAY not in (self.local_kind, self.remote_kind)

    def describe(self) -> str:
        if self.direct:
            return f"direct {self.local_kind.value}->{self.remote_kind.value}"
        if self.local_kind is CandidateKind.RELAY:
            transport = self.turn_transport.value if self.turn_transport else "udp"
            via = self.relay_id or (f"{self.relay[0]}:{self.relay[1]}" if self.relay else "?")
            return f"relayed via {via} ({transport}, ours)"
        host = self.remote_address[0]
        return f"relayed via {host} (theirs)"


@dataclass(frozen=True, slots=True)
class LinkTimings:
    """Monotonic seconds: when the offer left / the answer came, when the channel opened."""

    started: float  # dial() or answer() called
    offer_sent: float
    opened: float

    @property
    def setup_ms(self) -> float:
        """First offer sent -> data channel open (the benchmark's figure)."""
        return (self.opened - self.offer_sent) * 1000.0

    @property
    def total_ms(self) -> float:
        """Call -> open, gathering included."""
        return (self.opened - self.started) * 1000.0


@dataclass(frozen=True, slots=True)
class LinkConfig:
    ice: IcePlan = field(default_factory=IcePlan)
    setup_timeout: float = DEFAULT_SETUP_TIMEOUT
    relay_only: bool = False  # tests and privacy: never reveal host/srflx addresses
    early_check_retransmit: bool = True  # ice_tuning: no 500 ms stall on In-Progress pairs
    relay_hold: float = DEFAULT_RELAY_HOLD  # ice_tuning: a direct pair gets this head start


Prepare = Callable[[RTCPeerConnection], None]


_FINGERPRINT = re.compile(r"^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$", re.MULTILINE)


def sdp_fingerprints(sdp: str) -> tuple[tuple[str, str], ...]:
    """Every ``a=fingerprint`` (RFC 8122 §5) in an SDP: (algorithm lower, HEX:UPPER)."""
    return tuple((alg.lower(), value.upper()) for alg, value in _FINGERPRINT.findall(sdp))


def _certificate_fingerprint(der: bytes, algorithm: str) -> str:
    digest = hashlib.new(algorithm.replace("-", ""), der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class PreparedConnection:
    """An RTCPeerConnection with its channels made and candidates gathered ahead of time.

    Gathering includes the TURN allocation and the STUN binding (a few RTTs to
    the supernodes); done before the offer arrives, the answer leaves at once.
    Tracks added later by ``prepare`` hooks bundle onto the same ICE transport.
    Use within a few minutes (NAT bindings; aioice refreshes the allocation).
    """

    def __init__(self, config: LinkConfig) -> None:
        if config.early_check_retransmit:
            ice_tuning.install()
        self.config = config
        policy = RTCIceTransportPolicy.RELAY if config.relay_only else RTCIceTransportPolicy.ALL
        self.pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=config.ice.rtc_servers(),
                iceTransportPolicy=policy,
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            )
        )
        self.data = self.pc.createDataChannel(
            "data", negotiated=True, id=DATA_CHANNEL_ID, ordered=True
        )
        self.control = self.pc.createDataChannel(
            "p2pnode-control", negotiated=True, id=CONTROL_CHANNEL_ID, ordered=True
        )
        self.gathered = False
        # Registered now, not when the link is returned: the peer may send the moment
        # its side opens, before our open event has been handled.
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=MAX_INBOX_MESSAGES)
        self.pings: dict[bytes, asyncio.Future[float]] = {}
        self.drops: Counter[str] = Counter()
        self.control.on("message", self._on_control)
        self.data.on("message", self._on_data)
        # The SCTP transport owns the link's only ICE/DTLS transport and every
        # transceiver bundles onto it (max-bundle). aiortc 1.16's BUNDLE handling
        # would otherwise "replace" it by itself when an m=audio line comes first,
        # and stop it: the link then never opens (seen with a track added to a link).
        sctp = self.pc.sctp
        if sctp is not None:
            sctp._bundled = True
        if config.early_check_retransmit:
            ice_tuning.hold_relayed_checks(_ice_connection(self.pc), config.relay_hold)

    async def gather(self) -> None:
        """Gather now (idempotent: aiortc's own gathering skips a completed gatherer)."""
        sctp = self.pc.sctp
        if sctp is None:
            raise PeerLinkError("no SCTP transport")
        async with asyncio.timeout(self.config.setup_timeout):
            await sctp.transport.transport.iceGatherer.gather()
        self.gathered = True

    @classmethod
    async def create(cls, config: LinkConfig) -> PreparedConnection:
        prepared = cls(config)
        try:
            await prepared.gather()
        except BaseException:
            await prepared.pc.close()
            raise
        return prepared

    def _on_control(self, message: object) -> None:
        if not isinstance(message, bytes) or len(message) != PING_BYTES:
            self.drops["control-malformed"] += 1
            return
        kind, nonce = message[0], message[1:]
        if kind == _PING:
            self.control.send(bytes([_PONG]) + nonce)
        elif kind == _PONG:
            future = self.pings.get(nonce)
            if future is not None and not future.done():
                future.set_result(time.monotonic())
        else:
            self.drops["control-unknown"] += 1

    def _on_data(self, message: object) -> None:
        if not isinstance(message, bytes):
            message = str(message).encode("utf-8")
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.drops["inbox-full"] += 1


class PeerLink:
    """An open link: the data channel, the path ICE chose, its set-up time and RTT."""

    def __init__(
        self,
        peer: str,
        link_id: bytes,
        prepared: PreparedConnection,
        remote_sdp: str,
        timings: LinkTimings,
    ) -> None:
        self.peer = peer
        self.link_id = link_id
        self.pc = prepared.pc
        self.data: RTCDataChannel = prepared.data
        self.config = prepared.config
        self.timings = timings
        self.remote_sdp = remote_sdp
        self._control = prepared.control
        self._pings = prepared.pings
        self._inbox = prepared.inbox
        self.drops = prepared.drops

    # -- set-up ------------------------------------------------------------------------------

    @classmethod
    async def dial(
        cls,
        peer: str,
        transport: SignalTransport,
        config: LinkConfig,
        *,
        prepare: Prepare | None = None,
        prepared: PreparedConnection | None = None,
    ) -> PeerLink:
        """Offer a link to ``peer`` and wait until its data channel is open."""
        started = time.monotonic()
        prepared = prepared or PreparedConnection(config)
        link_id = os.urandom(LINK_ID_BYTES)
        try:
            async with asyncio.timeout(config.setup_timeout):
                if prepare is not None:
                    prepare(prepared.pc)
                await prepared.pc.setLocalDescription(await prepared.pc.createOffer())
                offer = SignalMessage(SignalKind.OFFER, link_id, prepared.pc.localDescription.sdp)
                offer_sent = time.monotonic()
                await transport.send(peer, encode_signal(offer))
                drops: Counter[str] = Counter()
                answer = await _wait_signal(transport, peer, link_id, SignalKind.ANSWER, drops)
                await prepared.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=answer.sdp, type="answer")
                )
                await _wait_open(prepared)
        except BaseException as error:
            await prepared.pc.close()
            if isinstance(error, TimeoutError):
                raise PeerLinkError("link set-up timed out") from None
            raise
        link = cls(
            peer, link_id, prepared, answer.sdp, LinkTimings(started, offer_sent, time.monotonic())
        )
        link.drops.update(drops)
        await link._verify_or_close()
        return link

    @classmethod
    async def answer(
        cls,
        delivery: SignalDelivery,
        transport: SignalTransport,
        config: LinkConfig,
        *,
        prepare: Prepare | None = None,
        prepared: PreparedConnection | None = None,
    ) -> PeerLink:
        """Answer the offer in ``delivery`` and wait until the data channel is open.

        ``SignalDecodeError`` if the payload is no offer (the caller counts it).
        """
        started = time.monotonic()
        offer = decode_signal(delivery.payload)
        if offer.kind is not SignalKind.OFFER:
            raise SignalDecodeError("not an offer")
        prepared = prepared or PreparedConnection(config)
        try:
            async with asyncio.timeout(config.setup_timeout):
                await prepared.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=offer.sdp, type="offer")
                )
                if prepare is not None:
                    prepare(prepared.pc)
                await prepared.pc.setLocalDescription(await prepared.pc.createAnswer())
                answer = SignalMessage(
                    SignalKind.ANSWER, offer.link_id, prepared.pc.localDescription.sdp
                )
                await transport.send(delivery.sender, encode_signal(answer))
                await _wait_open(prepared)
        except BaseException as error:
            await prepared.pc.close()
            if isinstance(error, TimeoutError):
                raise PeerLinkError("link set-up timed out") from None
            raise
        timings = LinkTimings(started, started, time.monotonic())
        link = cls(delivery.sender, offer.link_id, prepared, offer.sdp, timings)
        await link._verify_or_close()
        return link

    async def _verify_or_close(self) -> None:
        try:
            self.verify_remote_fingerprint()
        except PeerLinkError:
            await self.close()
            raise

    def verify_remote_fingerprint(self) -> None:
        """The peer's DTLS certificate is the one its authenticated SDP announced.

        aiortc already refuses a mismatching certificate during the handshake;
        this is the second, independent check, against the signalled SDP.
        """
        announced = sdp_fingerprints(self.remote_sdp)
        if not announced:
            raise PeerLinkError("the remote SDP announces no DTLS fingerprint")
        der = _peer_certificate_der(self.pc)
        for algorithm, value in announced:
            try:
                actual = _certificate_fingerprint(der, algorithm)
            except ValueError:
                continue  # an algorithm hashlib does not know: aiortc ignores it too
            if actual != value:
                raise PeerLinkError("the peer's DTLS certificate is not the signalled one")
            return
        raise PeerLinkError("no supported DTLS fingerprint algorithm in the remote SDP")

    # -- use ---------------------------------------------------------------------------------

    def path(self) -> LinkPath:
        """The nominated candidate pair (aioice keeps it privately: read defensively)."""
        pair = _nominated_pair(self.pc)
        if pair is None:
            raise PeerLinkError("no nominated candidate pair")
        local, remote = pair.local_candidate, pair.remote_candidate
        local_kind, remote_kind = CandidateKind(local.type), CandidateKind(remote.type)
        plan = self.config.ice
        ours = local_kind is CandidateKind.RELAY
        relay: Address | None = None
        if ours:
            relay = plan.turn
        elif remote_kind is CandidateKind.RELAY:
            relay = (remote.host, remote.port)
        return LinkPath(
            local_kind=local_kind,
            remote_kind=remote_kind,
            local_address=(local.host, local.port),
            remote_address=(remote.host, remote.port),
            relay=relay,
            relay_id=plan.relay_id if ours else "",
            turn_transport=plan.turn_transport if ours else None,
        )

    async def ping(self) -> float:
        """Round-trip time over the link's control channel, in seconds (``PING_TIMEOUT``)."""
        if len(self._pings) >= MAX_PENDING_PINGS:
            raise PeerLinkError("too many pings in flight")
        nonce = os.urandom(8)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[nonce] = future
        sent = time.monotonic()
        self._control.send(bytes([_PING]) + nonce)
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                received = await future
        except TimeoutError:
            raise PeerLinkError("ping timed out") from None
        finally:
            self._pings.pop(nonce, None)
        return received - sent

    async def restart(
        self, transport: SignalTransport, *, prepare: Prepare | None = None
    ) -> PeerLink:
        """ICE restart the only way aiortc allows: a new connection and link id to the same peer.

        Used when the path died or changed (new network, home lost): this link
        keeps carrying data until the new one is open, then it is closed. The
        peer answers the new offer as any other (a dispatcher routes by link id).
        ``prepare`` re-adds the tracks of a call in progress.
        """
        new = await PeerLink.dial(self.peer, transport, self.config, prepare=prepare)
        await self.close()
        return new

    def send(self, data: bytes) -> None:
        self.data.send(data)

    async def receive(self) -> bytes:
        return await self._inbox.get()

    async def close(self) -> None:
        for future in self._pings.values():
            future.cancel()
        await self.pc.close()


async def _wait_signal(
    transport: SignalTransport,
    peer: str,
    link_id: bytes,
    kind: SignalKind,
    drops: Counter[str],
) -> SignalMessage:
    """The next signal of ``kind`` for ``link_id`` from ``peer``; anything else is dropped."""
    while True:
        delivery = await transport.receive()
        if delivery.sender != peer:
            drops["signal-other-sender"] += 1
            continue
        try:
            message = decode_signal(delivery.payload)
        except SignalDecodeError:
            drops["signal-undecodable"] += 1
            continue
        if message.link_id != link_id or message.kind is not kind:
            drops["signal-other-link"] += 1
            continue
        return message


async def _wait_open(prepared: PreparedConnection) -> None:
    """Both negotiated channels open (SCTP up), or the connection failed."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def check(*_: Any) -> None:
        if done.done():
            return
        if prepared.pc.connectionState in ("failed", "closed"):
            done.set_exception(PeerLinkError(f"connection {prepared.pc.connectionState}"))
        elif prepared.data.readyState == "open" and prepared.control.readyState == "open":
            done.set_result(None)

    prepared.data.on("open", check)
    prepared.control.on("open", check)
    prepared.pc.on("connectionstatechange", check)
    check()
    await done


def _ice_connection(pc: RTCPeerConnection) -> Any:
    """aiortc's aioice Connection of the (bundled) link: aiortc has no public accessor."""
    sctp = pc.sctp
    if sctp is None:
        return None
    return getattr(sctp.transport.transport.iceGatherer, "_connection", None)


def _nominated_pair(pc: RTCPeerConnection) -> Any:
    nominated = getattr(_ice_connection(pc), "_nominated", None)
    if not isinstance(nominated, dict):
        return None
    return nominated.get(1)


def _peer_certificate_der(pc: RTCPeerConnection) -> bytes:
    sctp = pc.sctp
    ssl = getattr(sctp.transport, "_ssl", None) if sctp is not None else None
    if ssl is None:
        raise PeerLinkError("DTLS is not established")
    certificate = ssl.get_peer_certificate(as_cryptography=True)
    if certificate is None:
        raise PeerLinkError("the peer presented no DTLS certificate")
    der: bytes = certificate.public_bytes(Encoding.DER)
    return der
