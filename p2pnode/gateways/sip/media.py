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

RTCP without rtcp-mux (most desk phones, RFC 3550 §11 / RFC 3605): a side
whose SDP did not offer ``a=rtcp-mux`` gets a second socket per side on first
demand (:meth:`RelayHandle.rtcp_port`), bound next to the RTP port (RTP+1, so
a phone that ignores ``a=rtcp`` still hits it; new RTP ports are even when
the kernel offers one in ``_EVEN_TRIES`` binds) and latched by its own
:class:`LatchCore` on the same rules. Calls with rtcp-mux never open it; a
pair holds at most four sockets.

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
MAX_RELAYS = 2048  # port pairs held at once (4096 sockets, 8192 with RTCP ports)
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
_EVEN_TRIES = 4  # binds tried for an even RTP port (RFC 3550 §11) before taking any
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
    rtcp_forwarded: int = 0  # on the separate RTCP ports (muxed RTCP counts as RTP)


class _PortPair:
    """Two bound sockets, read with ``add_reader`` once for their whole life; a call's
    :class:`RelayHandle` borrows them. While no call holds them (in the relay's idle
    pool) whatever arrives is read and dropped, so a reused pair starts empty. The
    RTCP sockets (RTP+1) are opened on first demand and pooled with the pair."""

    __slots__ = ("handle", "owner", "ports", "rtcp", "rtcp_ports", "sockets")

    def __init__(self, owner: MediaRelay, sockets: dict[Side, socket.socket]) -> None:
        self.owner = owner
        self.sockets = sockets
        self.ports = {side: int(sock.getsockname()[1]) for side, sock in sockets.items()}
        self.rtcp: dict[Side, socket.socket] = {}
        self.rtcp_ports: dict[Side, int] = {}
        self.handle: RelayHandle | None = None
        for side, sock in sockets.items():
            owner.loop.add_reader(sock.fileno(), self._readable, side, False)

    def open_rtcp(self, side: Side) -> int | None:
        """The RTCP port facing ``side`` (RTP+1 if free, else any); None if none binds."""
        port = self.rtcp_ports.get(side)
        if port is not None:
            return port
        sock = self.owner._bind_next_to(self.ports[side])
        if sock is None:
            return None
        self.rtcp[side] = sock
        port = self.rtcp_ports[side] = int(sock.getsockname()[1])
        self.owner.loop.add_reader(sock.fileno(), self._readable, side, True)
        return port

    def _readable(self, side: Side, rtcp: bool) -> None:
        handle = self.handle
        if handle is not None:
            handle._readable(side, rtcp)
            return
        own = (self.rtcp if rtcp else self.sockets)[side]
        for _ in range(_BURST):
            try:
                own.recvfrom(_MAX_DATAGRAM)
            except OSError:  # BlockingIOError: drained
                return
            self.owner.count_drop("idle port")

    def drain(self) -> None:
        """Drop what arrived for the pair's previous call (read, never forwarded)."""
        for side in Side:
            self._readable(side, False)
            if side in self.rtcp:
                self._readable(side, True)

    def close(self) -> None:
        for sock in (*self.sockets.values(), *self.rtcp.values()):
            self.owner.loop.remove_reader(sock.fileno())
            sock.close()


class RelayHandle:
    """One call's port pair: ``port(side)`` is the gateway port that side sends to."""

    def __init__(self, owner: MediaRelay, pair: _PortPair) -> None:
        self._owner = owner
        self._pair = pair
        self._sockets = pair.sockets
        self.core = LatchCore(owner.window)
        self.rtcp_core = LatchCore(owner.window)  # RTCP latches apart from RTP
        self.closed = False
        pair.handle = self

    def port(self, side: Side) -> int:
        return self._pair.ports[side]

    def expect(self, side: Side, address: Address) -> None:
        self.core.expect(side, address)

    def rtcp_port(self, side: Side) -> int | None:
        """The gateway's RTCP port ``side`` sends to (opened now if needed; None: none free)."""
        return self._pair.open_rtcp(side)

    def expect_rtcp(self, side: Side, address: Address) -> None:
        """Where ``side``'s RTCP comes from (its ``a=rtcp``, else RTP port + 1)."""
        self.rtcp_core.expect(side, address)

    def _readable(self, side: Side, rtcp: bool) -> None:
        sockets = self._pair.rtcp if rtcp else self._sockets
        own = sockets[side]
        out = sockets.get(side.other)
        core = self.rtcp_core if rtcp else self.core
        owner = self._owner
        prefix = "rtcp " if rtcp else ""
        clock = owner.clock
        for _ in range(_BURST):
            try:
                data, source = own.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                owner.count_drop(prefix + "socket error")
                return
            verdict = core.receive(side, (source[0], source[1]), clock())
            if verdict is not Verdict.FORWARD:
                owner.count_drop(prefix + verdict.value)
                continue
            destination = core.destination(side.other)
            assert destination is not None  # FORWARD means it exists
            if out is None:  # the other side's SDP asked for no RTCP port
                owner.count_drop("rtcp other side has no rtcp port")
                continue
            try:
                out.sendto(data, destination)
            except OSError:
                owner.count_drop(prefix + "send failed")
                continue
            if rtcp:
                owner.rtcp_forwarded += 1
            else:
                owner.forwarded += 1

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
        self.rtcp_forwarded = 0
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

    def _family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def _bind_pair(self) -> dict[Side, socket.socket]:
        sockets: dict[Side, socket.socket] = {}
        try:
            for side in Side:
                sockets[side] = self._bind_even()
        except OSError:
            for sock in sockets.values():
                sock.close()
            raise
        return sockets

    def _bind_even(self) -> socket.socket:
        """A socket on an even port if one of ``_EVEN_TRIES`` binds gives one (RFC 3550 §11:
        RTP even, RTCP the next odd port), else on the last port the kernel chose."""
        tried: list[socket.socket] = []
        try:
            for _ in range(_EVEN_TRIES):
                sock = socket.socket(self._family(), socket.SOCK_DGRAM)
                tried.append(sock)
                sock.setblocking(False)
                sock.bind((self.host, 0))
                if sock.getsockname()[1] % 2 == 0:
                    break
        except OSError:
            for sock in tried:
                sock.close()
            raise
        chosen = tried.pop()
        for sock in tried:  # held open until now so the kernel did not offer them again
            sock.close()
        return chosen

    def _bind_next_to(self, rtp_port: int) -> socket.socket | None:
        """The RTCP socket: on ``rtp_port + 1`` if free, else any port; None if none binds."""
        candidates = (rtp_port + 1, 0) if rtp_port < 65535 else (0,)
        for port in candidates:
            sock = socket.socket(self._family(), socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((self.host, port))
            except OSError:
                sock.close()
                continue
            return sock
        return None

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
            len(self._relays),
            self.forwarded,
            tuple(sorted(self.dropped.items())),
            self.rtcp_forwarded,
        )
