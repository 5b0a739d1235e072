"""Tunables of one DHT node, and the results its operations report.

Defaults follow the Kademlia paper (k=20, alpha=3) and this project's targets
(per-RPC timeout 0.2-1 s, adaptive). Everything a peer can make us hold is
bounded by a named value here or in the module that holds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from p2pnode.dht.disjoint import MAX_PATHS
from p2pnode.dht.diversity import Diversity
from p2pnode.dht.keys import Address, Contact
from p2pnode.dht.messages import StoreStatus
from p2pnode.dht.puzzle import DEFAULT_ID_DIFFICULTY, MAX_ID_DIFFICULTY, Puzzle
from p2pnode.records import SignedRecord

__all__ = [
    "BootstrapResult",
    "DhtConfig",
    "DhtStatistics",
    "ExtensionResult",
    "FindNodeResult",
    "GetResult",
    "OperationResult",
    "PingResult",
    "PutResult",
    "StoreReply",
]


@dataclass(frozen=True)
class DhtConfig:
    k: int = 20
    alpha: int = 3
    quorum: int = 3  # a get stops once this many nodes returned valid records
    client_mode: bool = False  # query only; ask others not to put us in their tables
    rpc_timeout_min: float = 0.2
    rpc_timeout_max: float = 1.0
    # Rate limits are per source IP (IPv4 address, IPv6 /64; ``nat.ratelimit.source_of``), not
    # per port: a host sending from many ports gets one budget. Nothing is exempt, loopback
    # included: many nodes on one IP (tests, the demo) must say so with ``sharing_ip``.
    request_rate: float = 200.0  # requests per second per source IP
    request_burst: float = 400.0
    store_rate: float = 20.0  # STOREs per second per source IP, on top of the above
    store_burst: float = 100.0
    max_store_bytes: int = 16 * 1024 * 1024
    per_key_cap: int = 16
    max_pending_requests: int = 8192
    healthy_contacts: int = 8  # bootstrap is retried while the table holds fewer
    bootstrap_retry_max: float = 30.0
    refresh_interval: float = 900.0  # buckets untouched this long get a random lookup
    replicate_interval: float = 60.0  # new close contacts get our records this often
    republish_fraction: float = 0.75  # own records are re-signed at this part of their life
    purge_interval: float = 60.0
    # Address diversity (``p2pnode.dht.diversity``): at most this many contacts of one IP
    # address / one network per k-bucket, per reply and per lookup result (where a put
    # stores). Loopback is exempt unless ``diverse_loopback`` (tests share 127.0.0.1).
    max_per_address: int = 2
    max_per_network: int = 4
    network_prefix_v4: int = 24
    network_prefix_v6: int = 48
    diverse_loopback: bool = False
    # Gets walk this many disjoint paths (``p2pnode.dht.disjoint``, S/Kademlia): a crowd of
    # ground ids must then fill the k closest of every path, not of one. 1: one path.
    disjoint_paths: int = 2
    # Puts too: STOREs go to each path's k closest (up to paths x k STOREs), so that a put
    # made while a crowd sits near its key still reaches the honest nodes beyond it.
    disjoint_puts: bool = False
    # A contact counts only if its node id has this many puzzle bits (``p2pnode.dht.puzzle``,
    # S/Kademlia's static puzzle): grinding ids near a key costs 2**id_difficulty more.
    # Loopback contacts are exempt unless ``puzzle_loopback`` (tests share 127.0.0.1 with
    # instant keys). A network agrees on one value: 0 turns the check off.
    id_difficulty: int = DEFAULT_ID_DIFFICULTY
    puzzle_loopback: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.disjoint_paths <= MAX_PATHS:
            raise ValueError(f"disjoint_paths must be 1 to {MAX_PATHS}")
        if not 0 <= self.id_difficulty <= MAX_ID_DIFFICULTY:
            raise ValueError(f"id_difficulty must be 0 to {MAX_ID_DIFFICULTY}")

    def diversity(self) -> Diversity:
        return Diversity(
            max_per_address=self.max_per_address,
            max_per_network=self.max_per_network,
            prefix_v4=self.network_prefix_v4,
            prefix_v6=self.network_prefix_v6,
            loopback=self.diverse_loopback,
            puzzle=self.puzzle(),
        )

    def puzzle(self) -> Puzzle:
        return Puzzle(self.id_difficulty, loopback=self.puzzle_loopback)

    def sharing_ip(self, hosts: int) -> DhtConfig:
        """These settings with every per-IP budget multiplied by ``hosts``.

        For nodes that share one IP address on purpose and must not throttle each
        other as if they were one host: many nodes on 127.0.0.1 in a test, the demo
        or a benchmark. Never applied implicitly.
        """
        if hosts < 1:
            raise ValueError("hosts must be at least 1")
        return dataclasses.replace(
            self,
            request_rate=self.request_rate * hosts,
            request_burst=self.request_burst * hosts,
            store_rate=self.store_rate * hosts,
            store_burst=self.store_burst * hosts,
        )


@dataclass(frozen=True)
class GetResult:
    """Newest valid record per owner found under a key, and what it took."""

    key: bytes
    records: tuple[SignedRecord, ...]
    hops: int
    queries: int
    holders: int  # nodes that returned at least one valid record
    rejected: int  # records received that failed acceptance
    elapsed: float


@dataclass(frozen=True)
class PutResult:
    """How many of the k closest nodes (ourselves included) hold the record now."""

    key: bytes
    stored: int
    contacted: int
    rejected: tuple[tuple[str, int], ...]  # (reason, count), the nodes' own words
    elapsed: float


@dataclass(frozen=True)
class FindNodeResult:
    target: bytes
    contacts: tuple[Contact, ...]
    hops: int
    queries: int
    elapsed: float


@dataclass(frozen=True)
class PingResult:
    address: Address
    contact: Contact | None  # proven by challenge-response; None: no valid answer
    observed: Address | None  # our address as the peer saw it
    rtt: float | None


@dataclass(frozen=True)
class StoreReply:
    """One node's answer to one STORE (``status`` None: no answer)."""

    address: Address
    status: StoreStatus | None
    reason: str
    detail: str

    @property
    def stored(self) -> bool:
        return self.status in (StoreStatus.STORED, StoreStatus.DUPLICATE)


@dataclass(frozen=True)
class ExtensionResult:
    address: Address
    code: int
    fields: tuple[object, ...] | None  # None: no answer in time


@dataclass(frozen=True)
class BootstrapResult:
    answered: int  # bootstrap addresses that proved their key
    contacts: int  # routing table size afterwards


OperationResult = (
    GetResult
    | PutResult
    | FindNodeResult
    | PingResult
    | StoreReply
    | ExtensionResult
    | BootstrapResult
)


@dataclass(frozen=True)
class DhtStatistics:
    """A snapshot of counters, for `p2pnode run`, tests and benchmarks."""

    contacts: int
    buckets_used: int
    records: int
    record_bytes: int
    datagrams_in: int
    datagrams_out: int
    requests_sent: int
    timeouts: int
    drops: dict[str, int] = field(default_factory=dict)
    store_rejects: dict[str, int] = field(default_factory=dict)
    read_rejects: dict[str, int] = field(default_factory=dict)
    srtt: float = 0.0
    store_retries: int = 0  # STOREs sent again with a proof after an UNPROVEN answer
    # RPCs by "type/outcome": outgoing "<request>/sent|answered|timeout|bad reply",
    # incoming "<request>/served|over budget|refused".
    rpcs: dict[str, int] = field(default_factory=dict)
    replacements: int = 0  # contacts waiting in the buckets' replacement caches
    pending_requests: int = 0
    lookups: int = 0  # recent lookups (get, find_node, joins' and refreshes') summarised below
    lookup_p50: float = 0.0  # seconds
    lookup_p95: float = 0.0
    lookup_max: float = 0.0
