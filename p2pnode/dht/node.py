"""The thin asyncio adapter: one UDP socket, one timer, futures for operation results.

Everything with a decision in it lives in ``DhtCore``; this module only feeds it
datagrams and the wall clock, sends what it says, re-arms one timer at its next
deadline, and resolves the future of each finished operation.

Public API (what the CLI, the app and the benchmarks use)::

    node = DhtNode(identity, listen=("127.0.0.1", 0), bootstrap=[("127.0.0.1", 4000)],
                   config=DhtConfig(k=20), state_path=None)
    await node.start()            # bind, ping bootstrap + saved contacts, self-lookup
    result = await node.put(record)   # PutResult: .stored = nodes holding it (0 if none)
    found = await node.get(key)       # GetResult: .records newest valid per owner, .hops
    await node.close()            # saves the routing table (JSON) if state_path is set

Invariants: every task or timer created here is cancelled by ``close``; the
routing table is persisted as JSON (key, host, port), never pickled. The core
runs on ``time.monotonic()`` (a wall-clock step never fires or starves a timer);
it is told the wall clock's offset at every wakeup, for records' times.
Abuse refusals the core reports (rate-limited requests and STOREs, STOREs whose
proof of key fails) are logged fail2ban style: ``refused what=dht-request
reason=rate-limited source=<ip> count=<n>``, at most once per source and
interval (``nat.logsafe.RefusalLog``).
``k``/``alpha``/``client_mode`` keywords, when given, override ``config``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from nat.logsafe import RefusalLog
from p2pnode.dht.config import (
    BootstrapResult,
    DhtConfig,
    DhtStatistics,
    ExtensionResult,
    FindNodeResult,
    GetResult,
    OperationResult,
    PingResult,
    PutResult,
    StoreReply,
)
from p2pnode.dht.keys import Address
from p2pnode.dht.messages import MAX_DATAGRAM_BYTES, parse_ip
from p2pnode.dht.protocol import DhtCore, Peer
from p2pnode.dht.routing import TableHealth
from p2pnode.identity import PUBLIC_KEY_BYTES, Identity
from p2pnode.records import SignedRecord

__all__ = ["OPERATION_TIMEOUT", "DhtNode", "load_contacts", "save_contacts"]

logger = logging.getLogger(__name__)

MAX_READS_PER_WAKEUP = 256  # datagrams read per readiness callback before yielding
OPERATION_TIMEOUT = 30.0  # a safety net: the core finishes every operation well before
STATE_VERSION = 1
MAX_SAVED_CONTACTS = 200

R = TypeVar("R")
T = TypeVar("T")


def save_contacts(path: Path, contacts: Sequence[tuple[bytes, Address]]) -> None:
    """Write (public key, address) pairs as JSON, atomically."""
    document = {
        "version": STATE_VERSION,
        "contacts": [[key.hex(), host, port] for key, (host, port) in contacts],
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=1))
    os.replace(temporary, path)


def load_contacts(path: Path) -> list[tuple[bytes, Address]]:
    """Read what ``save_contacts`` wrote; anything malformed is skipped, never fatal."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
        return []
    result: list[tuple[bytes, Address]] = []
    entries = document.get("contacts")
    for entry in entries if isinstance(entries, list) else []:
        try:
            key_hex, host, port = entry
            key = bytes.fromhex(key_hex)
            if len(key) != PUBLIC_KEY_BYTES or type(port) is not int or not 0 < port < 65536:
                continue
            result.append((key, (parse_ip(host), port)))
        except (TypeError, ValueError):
            continue
    return result[:MAX_SAVED_CONTACTS]


def _wall_offset() -> float:
    return time.time() - time.monotonic()


class DhtNode:
    """A DHT node on one UDP socket."""

    def __init__(
        self,
        identity: Identity,
        *,
        listen: Address = ("127.0.0.1", 0),
        bootstrap: Sequence[Address] = (),
        k: int | None = None,
        alpha: int | None = None,
        client_mode: bool | None = None,
        config: DhtConfig | None = None,
        state_path: Path | None = None,
        rng: random.Random | None = None,
    ) -> None:
        base = config or DhtConfig()
        # Keywords left out keep the config's values (they used to overwrite them
        # with the defaults: DhtConfig(k=8) silently ran with k=20).
        self.config = dataclasses.replace(
            base,
            k=base.k if k is None else k,
            alpha=base.alpha if alpha is None else alpha,
            client_mode=base.client_mode if client_mode is None else client_mode,
        )
        self.identity = identity
        self.listen = listen
        self.state_path = state_path
        self.core = DhtCore(
            identity,
            config=self.config,
            rng=rng or random.SystemRandom(),
            now=time.monotonic(),
            bootstrap=bootstrap,
            wall_offset=_wall_offset(),
        )
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._waiting: dict[int, asyncio.Future[OperationResult]] = {}
        self.refusal_log = RefusalLog(logger, time.monotonic)

    # ---------------------------------------------------------------- lifecycle

    @property
    def address(self) -> Address:
        """The bound (host, port); valid after ``start``."""
        if self._socket is None:
            raise RuntimeError("node not started")
        sockname = self._socket.getsockname()
        return (str(sockname[0]), int(sockname[1]))

    async def start(self, *, wait_bootstrap: bool = True) -> BootstrapResult | None:
        """Bind the socket and join the network (bootstrap + saved contacts, then self-lookup)."""
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(self.listen)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._loop.add_reader(sock.fileno(), self._readable)
        saved = load_contacts(self.state_path) if self.state_path is not None else []
        extra = [address for _, address in saved]
        if not self.core.bootstrap_addresses and not extra:
            self._flush()
            return None
        if not wait_bootstrap:
            self.core.bootstrap(self._now(), extra)
            self._flush()
            return None
        result = await self._run(lambda now: self.core.bootstrap(now, extra))
        assert isinstance(result, BootstrapResult)
        return result

    async def close(self) -> None:
        """Stop: cancel the timer, fail waiting operations, save the table, close the socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()
        if self.state_path is not None:
            contacts = [(c.public_key, c.address) for c in self.core.table.contacts()]
            try:
                save_contacts(self.state_path, contacts[:MAX_SAVED_CONTACTS])
            except OSError as error:
                logger.warning("could not save the routing table: %s", error)
        if self._socket is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None

    async def __aenter__(self) -> DhtNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --------------------------------------------------------------- operations

    async def put(self, record: SignedRecord) -> PutResult:
        result = await self._run(lambda now: self.core.put(record, now))
        assert isinstance(result, PutResult)
        return result

    async def get(self, key: bytes) -> GetResult:
        result = await self._run(lambda now: self.core.get(key, now))
        assert isinstance(result, GetResult)
        return result

    async def find_node(self, target: bytes) -> FindNodeResult:
        result = await self._run(lambda now: self.core.find_node(target, now))
        assert isinstance(result, FindNodeResult)
        return result

    async def ping(self, address: Address, expected_key: bytes | None = None) -> PingResult:
        result = await self._run(lambda now: self.core.ping(address, now, expected_key))
        assert isinstance(result, PingResult)
        return result

    async def store_at(
        self,
        address: Address,
        key: bytes,
        encoded: bytes,
        expected_key: bytes | None = None,
    ) -> StoreReply:
        """One raw STORE to one node, no lookup (tools, tests, the demo's attacker)."""
        result = await self._run(
            lambda now: self.core.store_at(address, key, encoded, now, expected_key)
        )
        assert isinstance(result, StoreReply)
        return result

    async def extension_request(
        self,
        address: Address,
        code: int,
        fields: tuple[object, ...],
        expected_key: bytes | None = None,
    ) -> ExtensionResult:
        result = await self._run(
            lambda now: self.core.extension_request(address, code, fields, now, expected_key)
        )
        assert isinstance(result, ExtensionResult)
        return result

    def register_extension(
        self,
        code: int,
        decoder: Callable[[tuple[object, ...]], T],
        handler: Callable[[T, Peer, float], tuple[object, ...] | None],
    ) -> None:
        self.core.register_extension(code, decoder, handler)

    def enter_client_mode(self) -> None:
        """Query only from now on: a running node found behind NAT (see the core's)."""
        self.config = dataclasses.replace(self.config, client_mode=True)
        self.core.enter_client_mode()

    def statistics(self) -> DhtStatistics:
        return self.core.statistics()

    def health(self) -> TableHealth:
        return self.core.health()

    # ----------------------------------------------------------------- plumbing

    def _now(self) -> float:
        """The core's clock (monotonic); the wall clock's offset is refreshed on the way."""
        self.core.wall_offset = _wall_offset()
        return time.monotonic()

    async def _run(self, start: Callable[[float], int]) -> OperationResult:
        if self._loop is None or self._socket is None:
            raise RuntimeError("node not started")
        op_id = start(self._now())
        future: asyncio.Future[OperationResult] = self._loop.create_future()
        self._waiting[op_id] = future
        self._flush()
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT):
                return await future
        finally:
            self._waiting.pop(op_id, None)

    def _drain(self) -> None:
        """Feed the core every datagram already queued on the socket (bounded per call)."""
        sock = self._socket
        if sock is None:
            return
        core = self.core
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM_BYTES + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. ICMP port unreachable: the RPC will time out
                logger.debug("socket error: %s", error)
                continue
            core.datagram_received(data, (source[0], source[1]), self._now())

    def _readable(self) -> None:
        self._drain()
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        # Replies already waiting in the socket are not timeouts: read them first
        # (after a stall of the event loop, timers and input are due together).
        self._drain()
        self.core.handle_timer(self._now())
        self._flush()

    def _flush(self) -> None:
        sock = self._socket
        if sock is None:
            return
        for refusal in self.core.refusals():
            self.refusal_log.refused(refusal.what, refusal.reason, refusal.address)
        for data, destination in self.core.datagrams_to_send():
            try:
                sock.sendto(data, destination)
            except (BlockingIOError, InterruptedError):
                self.core.drops.drop("send buffer full")  # UDP: the RPC will time out
            except OSError as error:
                logger.debug("cannot send to %s: %s", destination, error)
        for event in self.core.events():
            future = self._waiting.get(event.op_id)
            if future is not None and not future.done():
                future.set_result(event.result)
        deadline = self.core.next_deadline()
        if deadline < self._timer_at - 0.001 and self._loop is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_later(
                max(0.0, deadline - time.monotonic()), self._on_timer
            )
