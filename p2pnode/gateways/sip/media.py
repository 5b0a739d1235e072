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
import collections
import enum
import functools
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LATCH_WINDOW",
    "MAX_IDLE_PAIRS",
    "MAX_RELAYS",
    "PAIR_QUARANTINE",
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
MAX_IDLE_PAIRS = 256  # ended calls' port pairs kept open for later calls (512 sockets)
# An ended call's pair serves no new call for this long: the old call's stream has
# stopped by then, so it cannot reach (or latch onto) the next call on that pair.
PAIR_QUARANTINE = 0.5
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
    """True for addresses a phone behind NAT writes (RFC 1918, CGNAT, link-local, ULA).

    Asked for both legs' SDP and SIP addresses of every call: cached (bounded LRU).
    """
    return _is_private_cached(host) if len(host) <= 64 else _is_private(host)


def _is_private(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(
        address in network for network in _NAT_NETWORKS if network.version == address.version
    )


_is_private_cached = functools.lru_cache(maxsize=1024)(_is_private)


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


class _PortPair:
    """Two bound sockets, read with ``add_reader`` once for their whole life; a call's
    :class:`RelayHandle` borrows them. While no call holds them (in the relay's idle
    pool) whatever arrives is read and dropped, so a reused pair starts empty."""

    __slots__ = ("handle", "owner", "ports", "sockets")

    def __init__(self, owner: MediaRelay, sockets: dict[Side, socket.socket]) -> None:
        self.owner = owner
        self.sockets = sockets
        self.ports = {side: int(sock.getsockname()[1]) for side, sock in sockets.items()}
        self.handle: RelayHandle | None = None
        for side, sock in sockets.items():
            owner.loop.add_reader(sock.fileno(), self._readable, side)

    def _readable(self, side: Side) -> None:
        handle = self.handle
        if handle is not None:
            handle._readable(side)
            return
        own = self.sockets[side]
        for _ in range(_BURST):
            try:
                own.recvfrom(_MAX_DATAGRAM)
            except OSError:  # BlockingIOError: drained
                return
            self.owner.count_drop("idle port")

    def drain(self) -> None:
        """Drop what arrived for the pair's previous call (read, never forwarded)."""
        for side in Side:
            self._readable(side)

    def close(self) -> None:
        for sock in self.sockets.values():
            self.owner.loop.remove_reader(sock.fileno())
            sock.close()


class RelayHandle:
    """One call's port pair: ``port(side)`` is the gateway port that side sends to."""

    def __init__(self, owner: MediaRelay, pair: _PortPair) -> None:
        self._owner = owner
        self._pair = pair
        self._sockets = pair.sockets
        self.core = LatchCore(owner.window)
        self.closed = False
        pair.handle = self

    def port(self, side: Side) -> int:
        return self._pair.ports[side]

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
        self._pair.handle = None
        self._owner._release(self, self._pair)


class MediaRelay:
    """Port pairs on ``host``, read with ``add_reader`` (no per-packet task or future).

    A call's pair goes back to a bounded idle pool (``max_idle`` pairs) when it
    ends, and a new call takes the oldest idle one once it has been idle for
    ``quarantine`` seconds (rtpengine cycles through a port range for the same
    reason: a late packet of the old call must not meet the new one). Opening
    two sockets, binding them, registering them with the loop and undoing it all
    again was ~6 % of a call set-up's CPU (cProfile under
    benchmarks/sip_gateway.py). A reused pair is drained first and gets a fresh
    :class:`LatchCore`, so nothing of the previous call's media or latching
    carries over; what reaches an idle pair is read and dropped ("idle port").
    """

    def __init__(
        self,
        host: str,
        *,
        max_relays: int = MAX_RELAYS,
        max_idle: int = MAX_IDLE_PAIRS,
        quarantine: float = PAIR_QUARANTINE,
        window: float = LATCH_WINDOW,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.host = host
        self.max_relays = max_relays
        self.max_idle = max_idle
        self.quarantine = quarantine
        self.window = window
        self._clock = clock
        self._relays: set[RelayHandle] = set()
        self._idle: collections.deque[tuple[float, _PortPair]] = collections.deque()  # oldest first
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
        """A port pair (an idle one, else two kernel-chosen ports); raises
        MediaRelayFullError beyond the cap."""
        if len(self._relays) >= self.max_relays:
            raise MediaRelayFullError
        idle = self._idle
        if idle and self.clock() - idle[0][0] >= self.quarantine:
            pair = idle.popleft()[1]
            pair.drain()
        else:
            pair = _PortPair(self, self._bind_pair())
        handle = RelayHandle(self, pair)
        self._relays.add(handle)
        return handle

    def _bind_pair(self) -> dict[Side, socket.socket]:
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
        return sockets

    def _release(self, handle: RelayHandle, pair: _PortPair) -> None:
        self._relays.discard(handle)
        if len(self._idle) < self.max_idle:
            self._idle.append((self.clock(), pair))
        else:
            pair.close()

    def close(self) -> None:
        for handle in list(self._relays):
            handle.close()
        while self._idle:
            self._idle.popleft()[1].close()

    def statistics(self) -> RelayStatistics:
        return RelayStatistics(
            len(self._relays), self.forwarded, tuple(sorted(self.dropped.items()))
        )
