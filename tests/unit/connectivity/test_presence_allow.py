"""Presence visibility at the home: a watcher an allow-list drops hears "offline" at once.

Peer and home cores wired in memory in virtual time (the ``Net`` of test_homes).
"""

from __future__ import annotations

from p2pnode.connectivity.homes import PresenceNotice
from p2pnode.connectivity.homewire import Code
from p2pnode.identity import Identity
from tests.unit.connectivity.test_homes import ALICE, BOB, CAROL, _setup


def test_a_watcher_dropped_by_the_allow_list_sees_offline_at_once() -> None:
    net, entries, alice, bob = _setup()
    carol_core = net.add_peer(CAROL, Identity.generate(b"c" * 32))
    net.deliver(ALICE, net.peers[ALICE].set_state(b"on", None, net.now))  # everyone may watch
    for address, core in ((CAROL, carol_core), (BOB, net.peers[BOB])):
        net.deliver(address, core.watch(alice.public_key, entries[:1], net.now))
    carol_before = len(net.of(CAROL, PresenceNotice))
    bob_before = len(net.of(BOB, PresenceNotice))
    assert net.of(CAROL, PresenceNotice)[-1].attached  # type: ignore[attr-defined]

    # alice's presence becomes "contacts only" (bob): carol is told, bob is not disturbed
    net.deliver(ALICE, net.peers[ALICE].set_state(b"on", (bob.public_key,), net.now))
    told = net.of(CAROL, PresenceNotice)[carol_before:]
    assert [(n.code, n.attached, n.presence) for n in told] == [(Code.OK, False, b"")]  # type: ignore[attr-defined]
    assert len(net.of(BOB, PresenceNotice)) == bob_before

    # carol's renewed watch is refused; bob still hears alice's changes
    net.run_until(net.now + 30.0)
    codes = [n.code for n in net.of(CAROL, PresenceNotice)[carol_before + 1 :]]  # type: ignore[attr-defined]
    assert codes and set(codes) == {Code.FORBIDDEN}
    net.deliver(ALICE, net.peers[ALICE].set_state(b"away", (bob.public_key,), net.now))
    assert net.of(BOB, PresenceNotice)[-1].presence == b"away"  # type: ignore[attr-defined]
