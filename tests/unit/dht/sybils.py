"""Colluding DHT nodes for the eclipse tests, in virtual time (``memnet``).

A sybil behaves as finding 3 of issue 10's attacker did: to any FIND_NODE /
FIND_VALUE it names only its fellow sybils (k of them, each answer further along
the crowd, so a reader hears of every one) and holds no records; to any STORE it
answers STORED with a valid signed receipt and keeps nothing. Used by
``test_eclipse.py`` (one address, one /24) and ``test_disjoint.py`` (many networks).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from p2pnode.dht.config import DhtConfig
from p2pnode.dht.keys import Address, Contact
from p2pnode.dht.messages import (
    FindNode,
    FindValue,
    Message,
    Nodes,
    Store,
    StoreResult,
    StoreStatus,
    Value,
    WireContact,
)
from p2pnode.dht.proofs import sign_receipt
from p2pnode.dht.protocol import DhtCore
from p2pnode.dht.serving import RequestServer
from p2pnode.identity import Identity
from tests.unit.dht.memnet import MemNet

__all__ = ["SybilCore", "SybilServer", "add_sybils", "grind", "join"]


class SybilServer(RequestServer):
    """A colluding node's request server: names only its fellow sybils, stores nothing,
    signs every STORE."""

    _k = 20

    def _answer(
        self,
        message: Message,
        sender: Contact,
        client: bool,
        budget: int,
        request_id: bytes,
        now: float,
        *,
        receipt: bool = True,
    ) -> Message | None:
        fellows = self._fellows()
        token = self._admission.token_for(sender, now)
        match message:
            case FindNode():
                return Nodes(fellows[: self._k], token)
            case FindValue():
                return Value((), 0, fellows[: self._k], token)
            case Store(key, record):
                signed = sign_receipt(
                    self.identity, request_id, sender.public_key, key, record, StoreStatus.STORED
                )
                return StoreResult(StoreStatus.STORED, "", "", b"", signed)
        return super()._answer(message, sender, client, budget, request_id, now, receipt=receipt)

    def _fellows(self) -> tuple[WireContact, ...]:
        """The other sybils, each answer starting further along the crowd (the colluders
        share a turn counter), so that a reader hears of all of them, not the same k."""
        fellows = tuple(c for c in SybilCore.crowd if c.public_key != self.identity.public_key)
        if not fellows:
            return fellows
        start = SybilCore.turn % len(fellows)
        SybilCore.turn += self._k
        return (fellows[start:] + fellows[:start])[: self._k]


class SybilCore(DhtCore):
    """A DHT core whose requests are answered by a ``SybilServer``."""

    crowd: tuple[WireContact, ...] = ()  # every sybil of the running test, set by add_sybils
    turn = 0  # where the next answer starts in the crowd

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server.__class__ = SybilServer  # same state, the colluder's answers
        assert isinstance(self.server, SybilServer)
        self.server._k = self.config.k


def grind(key: bytes, count: int, shared_bits: int) -> tuple[Identity, ...]:
    """``count`` identities whose node ids share ``shared_bits`` leading bits with ``key``."""
    target = int.from_bytes(key, "big") >> (160 - shared_bits)
    found: list[Identity] = []
    counter = 0
    while len(found) < count:
        counter += 1
        identity = Identity.generate(counter.to_bytes(32, "big"))
        if int.from_bytes(identity.node_id, "big") >> (160 - shared_bits) == target:
            found.append(identity)
    return tuple(found)


def join(net: MemNet, nodes: Sequence[tuple[Address, DhtCore]]) -> None:
    """Join ``nodes`` ten at a time, as a network grows."""
    for start in range(0, len(nodes), 10):
        _join_batch(net, nodes[start : start + 10])


def _join_batch(net: MemNet, batch: Sequence[tuple[Address, DhtCore]]) -> None:
    ops = [(address, core.bootstrap(net.now)) for address, core in batch]
    net.run_until(lambda: all(op in net.results for op in ops), limit=120)
    for op in ops:
        net.results.pop(op, None)


def add_sybils(
    net: MemNet,
    identities: Sequence[Identity],
    hosts: Sequence[str],
    config: DhtConfig,
    bootstrap: Address,
) -> list[tuple[Address, DhtCore]]:
    """One sybil per (identity, host), joined through ``bootstrap``; sets the crowd."""
    sybils: list[tuple[Address, DhtCore]] = []
    for identity, host in zip(identities, hosts, strict=True):
        n = len(net.cores)
        address = (host, 1000 + n)
        sybil = SybilCore(
            identity,
            config=dataclasses.replace(config, id_difficulty=net.id_difficulty),
            rng=random.Random(n),
            now=net.now,
            bootstrap=[bootstrap],
        )
        net.cores[address] = sybil
        sybils.append((address, sybil))
    SybilCore.crowd = tuple(WireContact(c.identity.public_key, a) for a, c in sybils)
    SybilCore.turn = 0
    join(net, sybils)
    return sybils
