"""The gateway's configuration and statistics snapshot (frozen values).

Kept apart from :mod:`gateway` so the asyncio service stays one concept;
``GatewayConfig`` is what a ``[sip]`` configuration section will map onto.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.security import GuardConfig
from p2pnode.gateways.sip.transaction import Timers
from p2pnode.gateways.sip.trunks import IpTrunk, RegistrationTrunk

__all__ = ["GatewayConfig", "GatewayStatistics"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    domain: str
    host: str = "127.0.0.1"
    port: int = 0
    media_host: str | None = None  # default: host
    # Challenges offered, in order. sipp 3.6.1 answers only the first one and only
    # MD5; baresip 1.0 (libre) gives up when *any* challenge names SHA-256, so a
    # deployment with such phones offers MD5 alone (Kamailio's default).
    digest_algorithms: tuple[Algorithm, ...] = (Algorithm.MD5, Algorithm.SHA256)
    guard: GuardConfig = field(default_factory=GuardConfig)
    max_calls: int = 1024
    # RFC 3261 keeps a finished UDP transaction ~32 s (Timers J, K, M): at N calls/s
    # about 5 N x 32 transactions are alive; beyond the cap new requests get 503.
    max_transactions: int = 65_536
    registration_trunks: tuple[RegistrationTrunk, ...] = ()
    ip_trunks: tuple[IpTrunk, ...] = ()
    account_dids: tuple[tuple[str, str], ...] = ()  # (DID, login)
    keepalive_interval: float = 25.0
    min_expires: int = 60  # shorter registrations get 423 with Min-Expires (RFC 3261 §10.3)
    upstream: tuple[str, int] | None = None  # trunk for E.164 numbers not ours
    default_country: str | None = None  # ISO 3166 code reading dialled national numbers
    tls_port: int | None = None  # a TLS listener (sips:) on host:tls_port when set (0: any)
    tls_certificate: str | None = None  # PEM chain
    tls_key: str | None = None  # PEM private key
    timers: Timers = field(default_factory=Timers)  # RFC 3261 T1/T2/T4/D (tests shorten them)


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    registered_accounts: int
    active_calls: int
    calls_started: int
    calls_answered: int
    rtp_forwarded: int
    rtp_dropped: tuple[tuple[str, int], ...]
    auth_failures: int
    banned_sources: int
    dropped_requests: tuple[tuple[str, int], ...]
    login_claims: int
    bindings_expired: int = 0  # registrations that ran out without a refresh
    cancelled_lookups: int = 0  # INVITEs cancelled while DNS/ENUM was still answering
