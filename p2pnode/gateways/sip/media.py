"""RTP anchored on the gateway: a relay per call with symmetric latching.

Why anchor media: phones behind NAT write private addresses in their SDP, and
two such phones cannot reach each other; the gateway can reach both (they
talk to it first). Each call gets a port pair: the caller sends to the port
facing it, the callee to the other, and the gateway forwards between them.

Why *latching* and why restricted: the gateway learns a phone's real RTP
address from the first packet it sends (symmetric RTP, RFC 4961), but an
unrestricted latch lets anyone who guesses the port hijack the call's audio
(the "RTP bleed" attack on rtpproxy/Asterisk). So a side latches only onto a
packet from the *signalled* IP address (the SDP's, or the SIP source address
when the SDP's is private), any port (a NAT rewrites ports), and may re-latch
only within ``LATCH_WINDOW`` seconds after its first latch; afterwards only the
latched address is accepted. Everything else is dropped and counted.

:class:`LatchCore` is sans-IO (addresses and ``now`` in, verdicts out);
:class:`MediaRelay` is the asyncio adapter, bounded by ``max_relays``.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LATCH_WINDOW",
    "MAX_RELAYS",
    "Address",
    "LatchCore",
    "MediaRelay",
    "MediaRelayFullError",
    "RelayHandle",
    "RelayStatistics",
    "Side",
    "Verdict",
    "is_private",
    "signalled_address",
]

Address = tuple[str, int]

LATCH_WINDOW = 2.0  # seconds after the first latch during which a side may re-latch
MAX_RELAYS = 2048  # port pairs held at once (4096 sockets)
_NAT_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
        "fc00::/7", "fe80::/10",
    )
)  # fmt: skip
_BURST = 64  # datagrams read per wake-up before yielding to the loop
_MAX_DATAGRAM = 2048


class Side(enum.Enum):
    """The two legs of a call: A is the caller (the INVITE's sender), B the callee."""

    A = "a"
    B = "b"

    @property
    def other(self) -> Side:
        return Side.B if self is Side.A else Side.A


class Verdict(enum.Enum):
    FORWARD = "forward"
    NOT_SIGNALLED = "no signalled address yet"
    WRONG_SOURCE = "source not the signalled address"
    NO_DESTINATION = "other side has no address yet"


def is_private(host: str) -> bool:
    """True for addresses a phone behind NAT writes (RFC 1918, CGNAT, link-local, ULA)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(
        address in network for network in _NAT_NETWORKS if network.version == address.version
    )


def signalled_address(sdp_host: str, sdp_port: int, sip_source: Address) -> Address:
    """Where a side's RTP is expected from: the SDP's address, unless it is private
    and differs from the SIP source (a phone behind NAT): then the SIP source IP."""
    if is_private(sdp_host) and sdp_host != sip_source[0] and not is_private(sip_source[0]):
        return sip_source[0], sdp_port
    return sdp_host, sdp_port


@dataclass(frozen=True, slots=True)
class _SideState:
    signalled: Address | None = None
    latched: Address | None = None
    latched_at: float | None = None


class LatchCore:
    """The latching rules of one call's two sides (sans-IO)."""

    def __init__(self, window: float = LATCH_WINDOW) -> None:
        self.window = window
        self._sides = {Side.A: _SideState(), Side.B: _SideState()}

    def expect(self, side: Side, address: Address) -> None:
        """A side's SDP named ``address``; a new IP unlatches (e.g. a re-INVITE moved it)."""
        state = self._sides[side]
        if state.latched is not None and state.latched[0] == address[0]:
            self._sides[side] = _SideState(address, state.latched, state.latched_at)
        else:
            self._sides[side] = _SideState(address)

    def receive(self, side: Side, source: Address, now: float) -> Verdict:
        """A packet arrived on the port facing ``side`` from ``source``."""
        state = self._sides[side]
        if state.signalled is None:
            return Verdict.NOT_SIGNALLED
        if source != state.latched:
            if source[0] != state.signalled[0]:
                return Verdict.WRONG_SOURCE
            if state.latched_at is not None and now - state.latched_at > self.window:
                return Verdict.WRONG_SOURCE
            first = state.latched_at if state.latched_at is not None else now
            self._sides[side] = _SideState(state.signalled, source, first)
        if self.destination(side.other) is None:
            return Verdict.NO_DESTINATION
        return Verdict.FORWARD

    def destination(self, side: Side) -> Address | None:
        """Where packets for ``side`` go: its latched address, else the signalled one."""
        state = self._sides[side]
        if state.signalled is None or state.signalled[1] == 0:
            return None
        if state.signalled[0] in ("0.0.0.0", "::"):
            return None  # RFC 3264 §8.4 hold by a null address
        return state.latched or state.signalled


class MediaRelayFullError(Exception):
    """No port pair left (``max_relays``): the B2BUA answers 503."""


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    relays: int
    forwarded: int
    dropped: tuple[tuple[str, int], ...]


class RelayHandle:
    """One call's port pair: ``port(side)`` is the gateway port that side sends to."""

    def __init__(self, owner: MediaRelay, sockets: dict[Side, socket.socket]) -> None:
        self._owner = owner
        self._sockets = sockets
        self.core = LatchCore(owner.window)
        self.closed = False

    def port(self, side: Side) -> int:
        return int(self._sockets[side].getsockname()[1])

    def expect(self, side: Side, address: Address) -> None:
        self.core.expect(side, address)

    def _readable(self, side: Side) -> None:
        own = self._sockets[side]
        out = self._sockets[side.other]
        clock = self._owner.clock
        for _ in range(_BURST):
            try:
                data, source = own.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._owner.count_drop("socket error")
                return
            verdict = self.core.receive(side, (source[0], source[1]), clock())
            if verdict is not Verdict.FORWARD:
                self._owner.count_drop(verdict.value)
                continue
            destination = self.core.destination(side.other)
            assert destination is not None  # FORWARD means it exists
            try:
                out.sendto(data, destination)
            except OSError:
                self._owner.count_drop("send failed")
                continue
            self._owner.forwarded += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._owner._release(self)
        for sock in self._sockets.values():
            self._owner.loop.remove_reader(sock.fileno())
            sock.close()


class MediaRelay:
    """Port pairs on ``host``, read with ``add_reader`` (no per-packet task or future)."""

    def __init__(
        self,
        host: str,
        *,
        max_relays: int = MAX_RELAYS,
        window: float = LATCH_WINDOW,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.host = host
        self.max_relays = max_relays
        self.window = window
        self._clock = clock
        self._relays: set[RelayHandle] = set()
        self.forwarded = 0
        self.dropped: dict[str, int] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def clock(self) -> float:
        return self._clock() if self._clock is not None else self.loop.time()

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def open(self) -> RelayHandle:
        """Bind a port pair (kernel-chosen ports); raises MediaRelayFullError beyond the cap."""
        if len(self._relays) >= self.max_relays:
            raise MediaRelayFullError
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sockets: dict[Side, socket.socket] = {}
        try:
            for side in Side:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sockets[side] = sock
                sock.setblocking(False)
                sock.bind((self.host, 0))
        except OSError:
            for sock in sockets.values():
                sock.close()
            raise
        handle = RelayHandle(self, sockets)
        for side, sock in sockets.items():
            self.loop.add_reader(sock.fileno(), handle._readable, side)
        self._relays.add(handle)
        return handle

    def _release(self, handle: RelayHandle) -> None:
        self._relays.discard(handle)

    def close(self) -> None:
        for handle in list(self._relays):
            handle.close()

    def statistics(self) -> RelayStatistics:
        return RelayStatistics(
            len(self._relays), self.forwarded, tuple(sorted(self.dropped.items()))
        )
