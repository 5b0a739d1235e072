"""A watcher refused by an allow-list is told at once when the target lets it in.

Peer and home cores wired in memory in virtual time (the ``Net`` of test_homes):
the clock does not move between the allow-list change and the notice, so no
watch renewal can be what told the watcher.
"""

from __future__ import annotations

from p2pnode.connectivity.homes import PresenceNotice
from p2pnode.connectivity.homewire import Code
from p2pnode.connectivity.watch import MAX_REFUSED_PER_TARGET, WatchTable, refused_table
from p2pnode.identity import Identity
from tests.unit.connectivity.test_homes import ALICE, CAROL, H1, Net, _setup


def notices(net: Net, address: tuple[str, int]) -> list[tuple[Code, bool, bytes]]:
    seen = [n for n in net.of(address, PresenceNotice) if isinstance(n, PresenceNotice)]
    return [(n.code, n.attached, n.presence) for n in seen]


def test_a_refused_watcher_is_admitted_and_told_at_once() -> None:
    net, entries, alice, bob = _setup()
    carol_core = net.add_peer(CAROL, Identity.generate(b"c" * 32))
    net.deliver(ALICE, net.peers[ALICE].set_state(b"on", (bob.public_key,), net.now))
    net.deliver(CAROL, carol_core.watch(alice.public_key, entries[:1], net.now))
    assert notices(net, CAROL) == [(Code.FORBIDDEN, False, b"")]

    # a change that still excludes carol tells her nothing
    net.deliver(ALICE, net.peers[ALICE].set_state(b"away", (bob.public_key,), net.now))
    assert notices(net, CAROL) == [(Code.FORBIDDEN, False, b"")]

    # alice accepts carol: the same instant, carol hears alice attached with her presence
    allowed = (bob.public_key, carol_core.own_key)
    net.deliver(ALICE, net.peers[ALICE].set_state(b"away", allowed, net.now))
    assert notices(net, CAROL)[-1] == (Code.OK, True, b"away")
    home = net.homes[H1]
    assert home.statistics().watches_admitted == 1
    assert home.watches.get(alice.public_key, carol_core.own_key) is not None
    assert home.refused_watches.get(alice.public_key, carol_core.own_key) is None

    # admitted for good: her renewals are renewals, later changes reach her
    net.run_until(net.now + 30.0)
    assert home.statistics().watches_renewed >= 1
    net.deliver(ALICE, net.peers[ALICE].set_state(b"busy", allowed, net.now))
    assert notices(net, CAROL)[-1] == (Code.OK, True, b"busy")


def test_a_dropped_watcher_is_admitted_again_and_anyone_admits_all() -> None:
    net, entries, alice, bob = _setup()
    carol_core = net.add_peer(CAROL, Identity.generate(b"c" * 32))
    net.deliver(ALICE, net.peers[ALICE].set_state(b"on", None, net.now))
    net.deliver(CAROL, carol_core.watch(alice.public_key, entries[:1], net.now))
    net.deliver(ALICE, net.peers[ALICE].set_state(b"on", (bob.public_key,), net.now))
    assert notices(net, CAROL)[-1] == (Code.OK, False, b"")  # dropped: told offline
    net.deliver(ALICE, net.peers[ALICE].set_state(b"on", None, net.now))  # anyone again
    assert notices(net, CAROL)[-1] == (Code.OK, True, b"on")


def test_refused_watches_are_bounded_and_expire() -> None:
    refused, watches = refused_table(), WatchTable()
    target = b"t" * 32
    for n in range(MAX_REFUSED_PER_TARGET + 5):
        refused.add(target, n.to_bytes(32, "big"), ("10.0.0.9", n + 1), 0.0, b"k" * 16)
    assert len(refused) == MAX_REFUSED_PER_TARGET
    # only those allowed move, with their token and a fresh lease
    allowed = frozenset({(0).to_bytes(32, "big"), (MAX_REFUSED_PER_TARGET + 1).to_bytes(32, "big")})
    admitted = watches.admit(refused, target, allowed, 10.0)
    assert [(w.key, w.token, w.expires_at) for w in admitted] == [
        ((0).to_bytes(32, "big"), b"k" * 16, 10.0 + watches.lease)
    ]
    assert len(refused) == MAX_REFUSED_PER_TARGET - 1
    assert watches.admit(refused, target, None, refused.lease + 1.0) == ()  # leases ran out
