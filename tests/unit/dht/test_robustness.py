"""Handlers never raise, and a reply that breaks its operation costs no pending state.

The shapes that once escaped (issue 10 finding 1: a RecursionError out of a record
decoder) are fixed where they arose; these tests stand for the next such bug: an
operation that raises on a reply must still see the lookup finish, with that reply
counted as a failure of its sender, and the core must keep serving.
"""

from __future__ import annotations

import pytest

from p2pnode.dht import operations
from p2pnode.dht.config import DhtConfig, FindNodeResult
from p2pnode.dht.keys import Address
from p2pnode.dht.messages import Frame
from p2pnode.dht.protocol import DhtCore
from p2pnode.dht.requests import SentRequest
from tests.unit.dht.memnet import MemNet


def network(size: int) -> tuple[MemNet, list[tuple[Address, DhtCore]]]:
    net = MemNet(seed=5)
    first = net.add(config=DhtConfig())
    nodes = [first] + [net.add(bootstrap=[first[0]]) for _ in range(size - 1)]
    for address, core in nodes[1:]:
        net.wait(address, core.bootstrap(net.now))
    return net, nodes


def test_a_reply_that_breaks_its_operation_still_lets_the_lookup_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, nodes = network(30)
    address, core = nodes[-1]
    original = operations.LookupOp.on_reply
    broken: list[bytes] = []

    def on_reply(
        self: operations.LookupOp, request: SentRequest, frame: Frame, sender: object, now: float
    ) -> None:
        if not broken:
            broken.append(frame.sender_key)
            raise RecursionError("a decoder that is not total")
        original(self, request, frame, sender, now)  # type: ignore[arg-type]

    monkeypatch.setattr(operations.LookupOp, "on_reply", on_reply)
    pending_before = len(core.requests)
    result = net.wait(address, core.find_node(nodes[0][1].own_id, net.now), limit=30)
    assert isinstance(result, FindNodeResult)
    assert broken, "no reply reached the operation"
    assert result.contacts, "the lookup gave up instead of going on without one contact"
    stats = core.statistics()
    assert stats.drops.get("reply broke its operation") == 1
    assert stats.rpcs.get("findnode/bad reply") == 1
    assert "handler error" not in stats.drops
    net.run_until(lambda: False, limit=3)
    assert len(core.requests) <= pending_before  # nothing left dangling


def test_garbage_never_raises_out_of_the_core() -> None:
    net, nodes = network(3)
    _, core = nodes[0]
    for data in (b"", b"\x02", b"\x02\x91" * 600 + b"\xc0", bytes(range(256)), b"\x02\xdc\xff\xff"):
        core.datagram_received(data, ("192.0.2.1", 9), net.now)
    assert core.statistics().drops.get("undecodable", 0) == 5
