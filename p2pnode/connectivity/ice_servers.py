"""The ICE servers of one peer connection: only our own supernodes, never a public default.

Why a module: aiortc falls back to a public Google STUN server when
``iceServers`` is unset, and aioice uses exactly one STUN and one TURN server
per connection (DEPENDENCY-NOTES). So the choice is made here, explicitly, once
per link: the STUN server of a home supernode (server-reflexive candidates) and
the TURN server of the best relay (relayed candidates), with the credentials the
relay's credentials RPC issued (``connectivity.credentials``).

UDP or TCP to the relay: aioice gathers against an unreachable STUN server for
up to 5 s, and a TURN allocation over UDP through a UDP-blocking network never
completes. One STUN Binding probe over UDP to the home (``relays.stun_probe``,
a few hundred ms at most) decides: answered, STUN + TURN over UDP; silent, no
STUN at all and TURN over TCP (RFC 8656 §3.1), which is what gets a peer behind
a UDP-blocking firewall connected.

Invariants:
- ``IcePlan.rtc_servers()`` never returns an empty *implicit* default: an
  empty plan gives ``[]`` (host candidates only), never ``None``;
- a plan names the relay it uses (``relay_id``, its address), so a link can
  report "relayed through which supernode, over UDP or TCP".
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import RTCIceServer

from p2pnode.connectivity.credentials import TurnCredentials, request_credentials
from p2pnode.connectivity.relays import RelayCandidate, stun_probe
from p2pnode.dht import DhtNode
from p2pnode.identity import peer_id_for

__all__ = [
    "UDP_PROBE_ATTEMPTS",
    "UDP_PROBE_BUDGET",
    "Address",
    "IcePlan",
    "TurnTransport",
    "choose_ice_plan",
    "ice_plan_for",
    "plan_ice_servers",
]

Address = tuple[str, int]
UDP_PROBE_BUDGET = 0.7  # s: 3 sends at 0.1, 0.2, 0.4 s; a home farther than that is no home
UDP_PROBE_ATTEMPTS = 3

Probe = Callable[[str, Address], Awaitable[float | None]]


class TurnTransport(enum.Enum):
    """How we reach the TURN server (the relayed transport itself is always UDP)."""

    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class IcePlan:
    """The servers one link gathers against, and which supernode the relay is."""

    stun: Address | None = None
    turn: Address | None = None
    turn_transport: TurnTransport = TurnTransport.UDP
    credentials: TurnCredentials | None = None
    relay_id: str = ""  # the relay supernode's peer id (or a name in tests)

    def __post_init__(self) -> None:
        if self.turn is not None and self.credentials is None:
            raise ValueError("a TURN server needs credentials (our relays are never open)")

    def rtc_servers(self) -> list[RTCIceServer]:
        """aiortc's ``iceServers``: always an explicit list (``[]`` = host candidates only)."""
        servers = []
        if self.stun is not None:
            servers.append(RTCIceServer(urls=f"stun:{_host_port(self.stun)}"))
        if self.turn is not None and self.credentials is not None:
            servers.append(
                RTCIceServer(
                    urls=f"turn:{_host_port(self.turn)}?transport={self.turn_transport.value}",
                    username=self.credentials.username,
                    credential=self.credentials.password,
                )
            )
        return servers


def _host_port(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def plan_ice_servers(
    *,
    stun: Address | None,
    turn_udp: Address | None,
    turn_tcp: Address | None,
    credentials: TurnCredentials | None,
    udp_works: bool,
    relay_id: str = "",
) -> IcePlan:
    """Pure: the plan for what the UDP probe found.

    With UDP: STUN (if any) and TURN over UDP, else over TCP if that is all the
    relay offers. Without UDP: no STUN (it would only stall gathering) and TURN
    over TCP; a relay without TCP then gives no relayed candidate at all.
    """
    if credentials is None:
        turn_udp = turn_tcp = None
    if udp_works:
        if turn_udp is not None:
            return IcePlan(stun, turn_udp, TurnTransport.UDP, credentials, relay_id)
        if turn_tcp is not None:
            return IcePlan(stun, turn_tcp, TurnTransport.TCP, credentials, relay_id)
        return IcePlan(stun=stun)
    if turn_tcp is not None:
        return IcePlan(None, turn_tcp, TurnTransport.TCP, credentials, relay_id)
    return IcePlan()


async def choose_ice_plan(
    *,
    stun: Address | None,
    turn_udp: Address | None,
    turn_tcp: Address | None,
    credentials: TurnCredentials | None,
    relay_id: str = "",
    probe: Probe | None = None,
) -> IcePlan:
    """Probe UDP to the home's STUN server (or the relay's UDP port), then plan.

    ``probe`` defaults to ``relays.stun_probe`` with a short budget; tests and
    the lab pass the real one too, only the budget is a parameter there.
    """
    target = stun or turn_udp
    udp_works = False
    if target is not None:
        if probe is None:
            rtt = await stun_probe(
                "udp", target, time_budget=UDP_PROBE_BUDGET, attempts=UDP_PROBE_ATTEMPTS
            )
        else:
            rtt = await probe("udp", target)
        udp_works = rtt is not None
    return plan_ice_servers(
        stun=stun,
        turn_udp=turn_udp,
        turn_tcp=turn_tcp,
        credentials=credentials,
        udp_works=udp_works,
        relay_id=relay_id,
    )


async def ice_plan_for(
    node: DhtNode,
    relay: RelayCandidate,
    *,
    home_stun: Address | None = None,
    probe: Probe | None = None,
) -> IcePlan:
    """The plan for a link through ``relay`` (from ``RelayFinder.chosen()``), credentials
    from its credentials RPC (signed by ``node``'s identity), STUN from our home.

    Without a home STUN address, the relay's own TURN port serves (our relays
    answer Binding there). ``CredentialsError`` if the relay refuses or is silent:
    try the next chosen relay.
    """
    advert = relay.advert
    if not advert.dht:
        raise ValueError("the relay advertises no DHT address for its credentials RPC")
    credentials = await request_credentials(node, advert.dht[0], relay.owner)
    turn_udp = advert.udp[0] if advert.udp else None
    turn_tcp = advert.tcp[0] if advert.tcp else None
    return await choose_ice_plan(
        stun=home_stun or turn_udp,
        turn_udp=turn_udp,
        turn_tcp=turn_tcp,
        credentials=credentials,
        relay_id=peer_id_for(relay.owner),
        probe=probe,
    )
