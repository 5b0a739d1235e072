"""Periodic upkeep of one DHT core: purge, republish, replicate, refresh, re-bootstrap.

Re-bootstrapping knocks at the bootstrap addresses and the saved contacts the
node started from (``DhtCore.rejoin_addresses``), so a node that joined from
saved contacts alone can find its way back too.

Runs from ``DhtCore.handle_timer`` once per ``MAINTENANCE_TICK``; every step is
bounded (records re-signed only near expiry, STOREs per round capped, a few
bucket refreshes per round, bootstrap retried with exponential backoff).
"""

from __future__ import annotations

from typing import Protocol

from p2pnode.dht.keys import Address, id_to_int, random_id_in_bucket
from p2pnode.dht.lookup import LookupKind
from p2pnode.dht.messages import Store
from p2pnode.dht.operations import INTERNAL_OP, BootstrapOp, LookupOp, OperationHost
from p2pnode.dht.storage import RecordStore
from p2pnode.identity import Identity
from p2pnode.records import SignedRecord, sign_record

__all__ = [
    "MAINTENANCE_TICK",
    "REFRESHES_PER_ROUND",
    "REPLICATION_BUDGET",
    "Maintenance",
    "MaintenanceHost",
]

MAINTENANCE_TICK = 1.0
IDLE_TICK = 10.0  # longest sleep of a healthy node's upkeep
REPLICATION_BUDGET = 512  # STOREs per replication round
REFRESHES_PER_ROUND = 3


class MaintenanceHost(OperationHost, Protocol):
    """What upkeep needs from the core, beside what operations need: nothing more.

    (It used to reach into ~30 of ``DhtCore``'s attributes; this is the whole list.)
    """

    identity: Identity
    store: RecordStore
    own_records: dict[bytes, SignedRecord]
    wall_offset: float

    @property
    def healthy(self) -> bool: ...

    def wall(self, now: float) -> float: ...

    def put_internal(self, op_id: int, record: SignedRecord, now: float) -> None: ...

    def rejoin_addresses(self) -> list[Address]: ...


class Maintenance:
    """The clocks of a core's periodic work."""

    def __init__(self, core: MaintenanceHost, now: float) -> None:
        self.core = core
        config = core.config
        self.next_run = now + MAINTENANCE_TICK
        self._next_purge = now + config.purge_interval
        self._last_replication = now
        self._next_replication = now + config.replicate_interval * (0.5 + core.rng.random())
        self._next_refresh = now + 60.0
        self._next_bootstrap = now + 1.0
        self._bootstrap_backoff = 1.0
        self._bootstrapping = False

    def run(self, now: float) -> None:
        core = self.core
        self._run(now)
        # Wake up for the next due step, every MAINTENANCE_TICK while the table is
        # unhealthy (bootstrap retries), at most IDLE_TICK apart otherwise: ten
        # thousand idle cores in one simulation need not all tick every second.
        due = [self._next_purge, self._next_replication, self._next_refresh, now + IDLE_TICK]
        fraction = core.config.republish_fraction
        due += [
            r.issued_at + fraction * (r.expires_at - r.issued_at) - core.wall_offset
            for r in core.own_records.values()
        ]
        self.next_run = max(now + MAINTENANCE_TICK, min(due))
        if not core.healthy:
            self.next_run = now + MAINTENANCE_TICK

    def _run(self, now: float) -> None:
        core = self.core
        if now >= self._next_purge:
            self._next_purge = now + core.config.purge_interval
            wall = core.wall(now)
            core.store.purge(wall)
            for key in [k for k, r in core.own_records.items() if r.expires_at <= wall]:
                del core.own_records[key]
        self._republish(now)
        if now >= self._next_replication:
            self._next_replication = now + core.config.replicate_interval
            self._replicate(now)
        if now >= self._next_refresh:
            self._next_refresh = now + 60.0
            self._refresh(now)
        if (
            not self._bootstrapping
            and not core.healthy
            and now >= self._next_bootstrap
            and (addresses := core.rejoin_addresses())
        ):
            self._bootstrapping = True
            self._next_bootstrap = now + self._bootstrap_backoff
            self._bootstrap_backoff = min(
                self._bootstrap_backoff * 2, core.config.bootstrap_retry_max
            )
            op = BootstrapOp(core, INTERNAL_OP, addresses)
            op.done_callback = self._bootstrap_done
            op.start(now)
        elif core.healthy:
            self._bootstrap_backoff = 1.0

    def track_join(self, op: BootstrapOp) -> None:
        """An explicit join is under way: no re-bootstrap until it is done.

        A join in a busy process (the benchmark's 10 at a time) can take over a
        second before its table holds ``healthy_contacts``; re-bootstrapping then ran
        a second whole join beside it (1.65 joins per node at N=200, ~40 % of the
        join's datagrams).
        """
        self._bootstrapping = True
        op.done_callback = self._bootstrap_done

    def _bootstrap_done(self, now: float) -> None:
        self._bootstrapping = False

    def _republish(self, now: float) -> None:
        """Re-sign our own records (seq + 1) before they expire, and store them again."""
        core = self.core
        fraction = core.config.republish_fraction
        wall = core.wall(now)
        for key, record in list(core.own_records.items()):
            lifetime = record.expires_at - record.issued_at
            if wall < record.issued_at + fraction * lifetime:
                continue
            fresh = sign_record(
                core.identity,
                record.kind,
                record.subject,
                record.payload,
                seq=record.seq + 1,
                now=wall,
                ttl=lifetime,
            )
            core.own_records[key] = fresh
            core.put_internal(INTERNAL_OP, fresh, now)

    def _replicate(self, now: float) -> None:
        """Hand records to close contacts that joined since the last round (section 2.5).

        No storms: a record goes only to newcomers that entered our table after the
        record reached us (the publisher reached the older ones itself), and only if
        no other contact we know is closer to the key than we are (so about one
        holder, not all k, sends it). Each round is capped at ``REPLICATION_BUDGET``.
        """
        core = self.core
        since, self._last_replication = self._last_replication, now
        newcomers = core.table.added_since(since)
        if not newcomers:
            return
        budget = REPLICATION_BUDGET
        own = id_to_int(core.own_id)
        excluded = frozenset(newcomers)
        for key, record in list(core.store.items()):
            stored_at = core.store.stored_at(key, record.owner) - core.wall_offset
            targets = [
                c
                for c in core.table.closest(key, core.config.k)
                if newcomers.get(c.node_id, 0.0) > stored_at
            ]
            if not targets:
                continue
            target = id_to_int(key)
            rivals = core.table.closest(key, 1, excluded)
            if rivals and rivals[0].id_int ^ target < own ^ target:
                continue  # a closer holder will hand it over
            for contact in targets[:budget]:
                core.send_request(
                    contact.address,
                    Store(key, record.encoded),
                    expected_key=contact.public_key,
                    owner=None,
                    now=now,
                )
            budget -= len(targets)
            if budget <= 0:
                break

    def _refresh(self, now: float) -> None:
        """Kademlia section 2.3: look up a random id in buckets idle for an interval."""
        core = self.core
        stale = core.table.bucket_ranges_to_refresh(now, core.config.refresh_interval)
        for index in stale[:REFRESHES_PER_ROUND]:
            target = random_id_in_bucket(core.own_id, index, core.rng)
            core.table.touch_bucket(index, now)
            LookupOp(core, INTERNAL_OP, target, LookupKind.NODE, now).start(now)
