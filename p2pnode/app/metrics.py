"""Prometheus metrics: a custom Collector over the services' ``statistics()`` snapshots.

Why a Collector and no counters of our own: every value already lives in a
service's counters; copying them into prometheus-client objects would mean a
second set of numbers that can disagree, and code reaching into services'
attributes. At each scrape the collector takes one snapshot per service and
turns it into metric families (counters stay monotonic because the snapshots
are). Served on its own listen address (``[metrics] listen``), off by default,
so a scraper never needs the control token.

Where the DHT's statistics lack a field the figures are derived and say so:
``p2pnode_dht_requests_total{outcome}`` counts answered = sent - timed out
(``p2pnode_dht_rpcs_total{type,outcome}`` has the DHT's own per-RPC counts).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from nat.stun.server import StunServerStats
from p2pnode.app.gateway import EnumDnsService
from p2pnode.app.messaging_metrics import messaging_metrics
from p2pnode.app.node import Node
from p2pnode.app.peer_chat import ChatService
from p2pnode.app.roles import SupernodeService, TurnService
from p2pnode.app.service import ServiceState
from p2pnode.app.services import DhtService, StunServerService
from p2pnode.app.sip_bridge import SipBridgeService, bridge_metrics
from relay.messages import RelayStatistics
from relay.supernode import Role

__all__ = ["MetricsService", "MetricsStatistics", "NodeCollector"]


class NodeCollector:
    """Collects from the node's services at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        stats = node.statistics()
        uptime = GaugeMetricFamily("p2pnode_uptime_seconds", "seconds since the node started")
        uptime.add_metric([], stats.uptime)
        yield uptime
        state = GaugeMetricFamily(
            "p2pnode_service_state",
            "1 for each service's current state",
            labels=["service", "state"],
        )
        restarts = CounterMetricFamily(
            "p2pnode_service_restarts", "restarts after a failure", labels=["service"]
        )
        for status in stats.services:
            for candidate in ServiceState:
                state.add_metric(
                    [status.name, candidate.value], 1.0 if status.state is candidate else 0.0
                )
            restarts.add_metric([status.name], status.restarts)
        yield state
        yield restarts
        relays: list[tuple[str, int, int, RelayStatistics | None]] = []
        stuns: list[tuple[str, StunServerStats]] = []
        for service in node.services():
            if isinstance(service, DhtService):
                yield from self._dht(service)
            elif isinstance(service, SupernodeService):
                sn = service.statistics()
                yield self._role(sn.role)
                relays.append(("supernode", sn.load, sn.capacity, sn.relay))
                if sn.stun is not None:
                    stuns.append(("dial_back", sn.stun))
            elif isinstance(service, TurnService):
                turn = service.statistics()
                capacity = service.config.turn.max_allocations
                relays.append(("standalone", turn.allocations, capacity, turn))
            elif isinstance(service, EnumDnsService):
                yield from self._enum(service)
            elif isinstance(service, StunServerService):
                stuns.append(("serve_stun", service.statistics()))
            elif isinstance(service, SipBridgeService):
                yield from bridge_metrics(service.statistics())
            elif isinstance(service, ChatService):
                messaging = service.statistics()  # None while the chat service (re)starts
                if messaging is not None:
                    yield from messaging_metrics(messaging)
        yield from self._relays(relays)
        yield from self._stuns(stuns)

    def _dht(self, service: DhtService) -> Iterator[Metric]:
        s = service.statistics()
        d = s.dht
        requests = CounterMetricFamily(
            "p2pnode_dht_requests", "DHT requests sent, by outcome", labels=["outcome"]
        )
        requests.add_metric(["answered"], max(d.requests_sent - d.timeouts, 0))
        requests.add_metric(["timeout"], d.timeouts)
        yield requests
        rpcs = CounterMetricFamily(
            "p2pnode_dht_rpcs",
            "DHT RPCs by type and outcome (sent, answered, timeout, bad reply; "
            "incoming: served, over budget, refused)",
            labels=["type", "outcome"],
        )
        for key, count in sorted(d.rpcs.items()):
            kind, _, outcome = key.partition("/")
            rpcs.add_metric([kind, outcome], count)
        yield rpcs
        datagrams = CounterMetricFamily(
            "p2pnode_dht_datagrams", "DHT datagrams", labels=["direction"]
        )
        datagrams.add_metric(["in"], d.datagrams_in)
        datagrams.add_metric(["out"], d.datagrams_out)
        yield datagrams
        rejects = CounterMetricFamily(
            "p2pnode_dht_rejects", "DHT input refused, by reason", labels=["stage", "reason"]
        )
        for stage, counts in (
            ("drop", d.drops),
            ("store", d.store_rejects),
            ("read", d.read_rejects),
        ):
            for reason, count in sorted(counts.items()):
                rejects.add_metric([stage, reason], count)
        yield rejects
        table = GaugeMetricFamily("p2pnode_dht_table", "routing table", labels=["what"])
        table.add_metric(["contacts"], d.contacts)
        table.add_metric(["buckets_used"], d.buckets_used)
        table.add_metric(["replacements"], s.replacements)
        table.add_metric(["records"], d.records)
        table.add_metric(["record_bytes"], d.record_bytes)
        table.add_metric(["healthy"], 1.0 if service.node.core.healthy else 0.0)
        yield table
        operations = CounterMetricFamily(
            "p2pnode_dht_operations", "lookups and puts made by the node", labels=["op"]
        )
        operations.add_metric(["get"], s.gets)
        operations.add_metric(["put"], s.puts)
        operations.add_metric(["join"], s.joins)
        yield operations
        h = s.get_latency
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(h.bounds, h.counts, strict=False):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", h.count))
        latency = HistogramMetricFamily(
            "p2pnode_dht_get_latency_seconds", "DHT lookup latency", buckets=buckets,
            sum_value=h.total,
        )  # fmt: skip
        yield latency

    def _role(self, current: Role) -> Metric:
        role = GaugeMetricFamily(
            "p2pnode_supernode_role", "1 for the current role", labels=["role"]
        )
        for candidate in Role:
            role.add_metric([candidate.value], 1.0 if current is candidate else 0.0)
        return role

    def _relays(
        self, relays: list[tuple[str, int, int, RelayStatistics | None]]
    ) -> Iterator[Metric]:
        """One family per metric over every relay (label ``relay``: supernode, standalone)."""
        if not relays:
            return
        load = GaugeMetricFamily(
            "p2pnode_relay_allocations", "live TURN allocations", labels=["relay"]
        )
        capacity = GaugeMetricFamily(
            "p2pnode_relay_capacity", "allocations carried at most", labels=["relay"]
        )
        created = CounterMetricFamily(
            "p2pnode_relay_allocations_created", "allocations made", labels=["relay"]
        )
        packets = CounterMetricFamily(
            "p2pnode_relay_packets", "relayed packets", labels=["relay", "direction"]
        )
        volume = CounterMetricFamily(
            "p2pnode_relay_bytes", "relayed bytes", labels=["relay", "direction"]
        )
        refusals = CounterMetricFamily(
            "p2pnode_relay_refusals",
            "requests refused, by STUN error code",
            labels=["relay", "code"],
        )
        for name, live, most, stats in relays:
            load.add_metric([name], live)
            capacity.add_metric([name], most)
            if stats is None:  # the supernode runs no relay now
                continue
            created.add_metric([name], stats.allocations_created)
            packets.add_metric([name, "to_peer"], stats.packets_to_peer)
            packets.add_metric([name, "to_client"], stats.packets_to_client)
            volume.add_metric([name, "to_peer"], stats.bytes_to_peer)
            volume.add_metric([name, "to_client"], stats.bytes_to_client)
            for code, count in stats.refusals:
                refusals.add_metric([name, str(code)], count)
        yield from (load, capacity, created, packets, volume, refusals)

    def _stuns(self, stuns: list[tuple[str, StunServerStats]]) -> Iterator[Metric]:
        if not stuns:
            return
        family = CounterMetricFamily(
            "p2pnode_stun_responses", "STUN answers", labels=["server", "kind"]
        )
        for name, stats in stuns:
            family.add_metric([name, "success"], stats.responses)
            family.add_metric([name, "error"], stats.error_responses)
            family.add_metric([name, "dial_back"], stats.dial_backs)
        yield family

    def _enum(self, service: EnumDnsService) -> Iterator[Metric]:
        g = service.statistics().gateway
        queries = CounterMetricFamily(
            "p2pnode_enum_dns_queries", "DNS queries received", labels=["outcome"]
        )
        queries.add_metric(["answered"], g.answers)
        queries.add_metric(["servfail"], g.servfail)
        queries.add_metric(["truncated"], g.truncated)
        queries.add_metric(["rate_limited"], g.rate_limited)
        queries.add_metric(["dropped"], g.dropped)
        yield queries
        total = CounterMetricFamily("p2pnode_enum_dns_queries_received", "every query")
        total.add_metric([], g.queries)
        yield total
        hits = CounterMetricFamily("p2pnode_enum_dns_cache_hits", "answers from the cache")
        hits.add_metric([], g.cache_hits)
        yield hits


@dataclass(frozen=True)
class MetricsStatistics:
    url: str
    scrapes: int


class MetricsService:
    """``/metrics`` on its own address (plain HTTP, no token: expose it only where a
    scraper should reach it)."""

    name = "metrics"

    def __init__(self, node: Node, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self.host = host
        self.port = port
        self.url = ""
        self._scrapes = 0
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self._scrapes += 1
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/metrics"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def statistics(self) -> MetricsStatistics:
        return MetricsStatistics(self.url, self._scrapes)
