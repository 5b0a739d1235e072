"""Peer and home cores wired in memory, in virtual time: attach, keepalive, replace, send, watch."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.connectivity.attach import HomeConfig, HomeCore, PeerAttached, PeerDetached
from p2pnode.connectivity.contact import HomeEntry
from p2pnode.connectivity.envelope import open_envelope, seal_envelope
from p2pnode.connectivity.homes import (
    Delivered,
    HomeAttached,
    HomeLost,
    HomesChanged,
    NeedCandidates,
    PeerConfig,
    PeerCore,
    PresenceNotice,
    SendDone,
)
from p2pnode.connectivity.homeslot import (
    TRANSITIONS,
    HomeSlot,
    SlotInput,
    SlotState,
    TransitionError,
    keepalive_for_lifetime,
)
from p2pnode.connectivity.homewire import (
    Attach,
    Attached,
    Challenge,
    Code,
    Datagram,
    Deliver,
    DeliverAck,
    Detach,
    Hello,
    HomeMessage,
    Keepalive,
    KeepaliveAck,
    Notify,
    Send,
    SendResult,
    SetAck,
    SetState,
    Watch,
    Watched,
    decode_message,
    encode_message,
)
from p2pnode.identity import Identity

Address = tuple[str, int]


@dataclass
class Net:
    """Every node's core on one virtual clock; datagrams arrive at once unless dropped."""

    now: float = 1_000_000.0
    homes: dict[Address, HomeCore] = field(default_factory=dict)
    peers: dict[Address, PeerCore] = field(default_factory=dict)
    dead: set[Address] = field(default_factory=set)
    events: dict[Address, list[object]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def random(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def add_home(self, address: Address, config: HomeConfig | None = None) -> HomeEntry:
        identity = Identity.generate(self.rng.randbytes(32))
        self.homes[address] = HomeCore(
            identity.public_key, secret=b"s" * 16, random=self.random, now=self.now, config=config
        )
        return HomeEntry(identity.public_key, address, address)

    def add_peer(self, address: Address, identity: Identity, **config: float) -> PeerCore:
        core = PeerCore(
            identity.public_key,
            sign=identity.sign,
            random=self.random,
            now=self.now,
            config=PeerConfig(**config),  # type: ignore[arg-type]
        )
        self.peers[address] = core
        return core

    def deliver(self, source: Address, datagrams: list[Datagram]) -> None:
        queue = [(source, d) for d in datagrams]
        while queue:
            src, datagram = queue.pop(0)
            to = datagram.address
            if to in self.dead or src in self.dead:
                continue
            if to in self.homes:
                out = self.homes[to].receive(datagram.data, src, self.now)
            elif to in self.peers:
                out = self.peers[to].receive(datagram.data, src, self.now)
            else:
                continue
            queue.extend((to, d) for d in out)
        self.collect()

    def collect(self) -> None:
        for address, home in self.homes.items():
            self.events.setdefault(address, []).extend(home.drain_events())
        for address, peer in self.peers.items():
            self.events.setdefault(address, []).extend(peer.drain_events())

    def run_until(self, until: float, step: float = 0.1) -> None:
        while self.now < until:
            self.now = round(self.now + step, 6)
            for address, home in self.homes.items():
                if address not in self.dead:
                    self.deliver(address, home.tick(self.now))
            for address, peer in self.peers.items():
                if address not in self.dead:
                    self.deliver(address, peer.tick(self.now))

    def of(self, address: Address, kind: type) -> list[object]:
        return [e for e in self.events.get(address, []) if isinstance(e, kind)]


H1, H2, H3 = ("198.51.100.1", 7000), ("198.51.100.2", 7000), ("198.51.100.3", 7000)
ALICE, BOB, CAROL = ("10.0.0.1", 5000), ("10.0.0.2", 5000), ("10.0.0.3", 5000)


def _setup(keepalive: float = 5.0) -> tuple[Net, list[HomeEntry], Identity, Identity]:
    net = Net()
    entries = [net.add_home(a) for a in (H1, H2, H3)]
    alice, bob = Identity.generate(b"a" * 32), Identity.generate(b"b" * 32)
    for address, identity in ((ALICE, alice), (BOB, bob)):
        peer = net.add_peer(address, identity, keepalive=keepalive)
        net.deliver(address, peer.offer_candidates(entries, net.now))
    return net, entries, alice, bob


def test_a_peer_attaches_to_two_homes_and_keeps_them() -> None:
    net, entries, alice, _ = _setup()
    assert net.peers[ALICE].homes() == (entries[0], entries[1])
    assert [e.home for e in net.of(ALICE, HomeAttached)] == entries[:2]  # type: ignore[attr-defined]
    assert net.homes[H1].is_attached(alice.public_key)
    assert not net.homes[H3].is_attached(alice.public_key)
    net.run_until(net.now + 60)  # a dozen keepalive rounds: nothing lost
    assert not net.of(ALICE, HomeLost)
    assert net.homes[H1].is_attached(alice.public_key)


def test_a_dead_home_is_replaced_within_seconds_of_the_next_keepalive() -> None:
    net, entries, alice, _ = _setup(keepalive=5.0)
    killed_at = net.now
    net.dead.add(H1)
    net.run_until(killed_at + 5.0 + 3.0 + 0.5)  # next keepalive + keepalive_timeout
    lost = net.of(ALICE, HomeLost)
    assert [e.home for e in lost] == [entries[0]]  # type: ignore[attr-defined]
    assert net.peers[ALICE].homes() == (entries[1], entries[2])
    assert net.homes[H3].is_attached(alice.public_key)
    changes = net.of(ALICE, HomesChanged)
    assert changes[-1].homes == (entries[1], entries[2])  # type: ignore[attr-defined]


def test_home_restart_makes_the_peer_attach_again() -> None:
    net, entries, alice, _ = _setup(keepalive=2.0)
    net.homes[H1] = HomeCore(entries[0].key, secret=b"t" * 16, random=net.random, now=net.now)
    net.run_until(net.now + 3.0)
    assert net.homes[H1].is_attached(alice.public_key)
    assert not net.of(ALICE, HomeLost)


def test_home_loses_a_silent_peer_and_tells_watchers() -> None:
    net, entries, alice, _bob = _setup(keepalive=2.0)
    net.deliver(BOB, net.peers[BOB].watch(alice.public_key, entries[:2], net.now))
    first = net.of(BOB, PresenceNotice)
    assert {n.attached for n in first} == {True}  # type: ignore[attr-defined]
    crashed_at = net.now
    net.dead.add(ALICE)
    net.run_until(crashed_at + 2.0 + 5.0 + 1.5)  # keepalive + grace + one sweep
    detached = [e for e in net.of(H1, PeerDetached) if e.key == alice.public_key]  # type: ignore[attr-defined]
    assert [e.reason for e in detached] == ["timed out"]  # type: ignore[attr-defined]
    notices = net.of(BOB, PresenceNotice)[len(first) :]
    assert notices and notices[-1].attached is False  # type: ignore[attr-defined]


def test_graceful_detach_and_presence_reach_watchers_at_once() -> None:
    net, entries, alice, _bob = _setup()
    net.deliver(BOB, net.peers[BOB].watch(alice.public_key, entries[:2], net.now))
    before = len(net.of(BOB, PresenceNotice))
    net.deliver(ALICE, net.peers[ALICE].set_state(b"busy", None, net.now))
    changed = net.of(BOB, PresenceNotice)[before:]
    assert {(n.home, n.presence) for n in changed} == {(H1, b"busy"), (H2, b"busy")}  # type: ignore[attr-defined]
    net.deliver(ALICE, net.peers[ALICE].close(net.now))
    last = net.of(BOB, PresenceNotice)[-2:]
    assert {(n.home, n.attached) for n in last} == {(H1, False), (H2, False)}  # type: ignore[attr-defined]


def test_a_lost_presence_update_is_resent_within_a_second() -> None:
    net, entries, alice, _ = _setup(keepalive=20.0)
    net.deliver(BOB, net.peers[BOB].watch(alice.public_key, entries[:1], net.now))
    before = len(net.of(BOB, PresenceNotice))
    net.dead.add(H1)  # the SET is lost on its way ...
    net.peers[ALICE].set_state(b"away", None, net.now)
    net.dead.discard(H1)  # ... and the home is reachable again
    net.run_until(net.now + 1.0)
    changed = net.of(BOB, PresenceNotice)[before:]
    assert [(n.home, n.presence) for n in changed] == [(H1, b"away")]  # type: ignore[attr-defined]


def test_spoofed_notifications_are_dropped() -> None:
    net, entries, alice, _bob = _setup()
    net.deliver(BOB, net.peers[BOB].watch(alice.public_key, entries[:1], net.now))
    before = len(net.of(BOB, PresenceNotice))
    # From the home's own address, but without the watch token the home gave bob.
    fake = Notify(alice.public_key, False, b"", 99, b"\0" * 8)
    net.deliver(H1, [Datagram(encode_message(fake), BOB)])
    fake_answer = Watched(b"\1" * 8, Code.OK, alice.public_key, False, b"", b"\0" * 8)
    net.deliver(H1, [Datagram(encode_message(fake_answer), BOB)])
    assert len(net.of(BOB, PresenceNotice)) == before
    drops = net.peers[BOB].drops.counts()
    assert drops["notification not ours"] == 1
    assert drops["watch answer not ours"] == 1
    # The real home's notification still gets through.
    net.deliver(ALICE, net.peers[ALICE].close(net.now))
    assert net.of(BOB, PresenceNotice)[-1].attached is False  # type: ignore[attr-defined]


def test_allow_list_refuses_other_watchers() -> None:
    net, entries, alice, bob = _setup()
    carol = Identity.generate(b"c" * 32)
    carol_core = net.add_peer(CAROL, carol)
    net.deliver(ALICE, net.peers[ALICE].set_state(b"on", (bob.public_key,), net.now))
    net.deliver(CAROL, carol_core.watch(alice.public_key, entries[:1], net.now))
    net.deliver(BOB, net.peers[BOB].watch(alice.public_key, entries[:1], net.now))
    carol_codes = [n.code for n in net.of(CAROL, PresenceNotice)]  # type: ignore[attr-defined]
    bob_codes = [n.code for n in net.of(BOB, PresenceNotice)]  # type: ignore[attr-defined]
    assert carol_codes == [Code.FORBIDDEN]
    assert bob_codes == [Code.OK]


def test_envelope_goes_through_the_first_home_then_the_second() -> None:
    net, _entries, alice, bob = _setup()
    envelope = seal_envelope(alice, bob.public_key, b"offer", envelope_id=b"i" * 16, now=net.now)
    handle, out = net.peers[ALICE].send(envelope, [H1, H2], net.now)
    net.deliver(ALICE, out)
    done = net.of(ALICE, SendDone)
    assert done == [SendDone(handle, True, H1, ((H1, "ok"),))]
    delivered = net.of(BOB, Delivered)
    assert len(delivered) == 1
    opened = open_envelope(delivered[0].envelope, bob)  # type: ignore[attr-defined]
    assert (opened.sender, opened.payload) == (alice.public_key, b"offer")
    # H1 dies: the next envelope times out there and goes through H2.
    net.dead.add(H1)
    handle, out = net.peers[ALICE].send(envelope, [H1, H2], net.now)
    net.deliver(ALICE, out)
    net.run_until(net.now + 3.0)
    done = net.of(ALICE, SendDone)[1:]
    assert done == [SendDone(handle, True, H2, ((H1, "no answer"), (H2, "ok")))]


def test_not_attached_everywhere_is_unreachable() -> None:
    net, _entries, alice, _ = _setup()
    stranger = Identity.generate(b"z" * 32)
    envelope = seal_envelope(alice, stranger.public_key, b"x", envelope_id=b"j" * 16, now=net.now)
    handle, out = net.peers[ALICE].send(envelope, [H1, H2], net.now)
    net.deliver(ALICE, out)
    assert net.of(ALICE, SendDone) == [
        SendDone(handle, False, None, ((H1, "not_attached"), (H2, "not_attached")))
    ]


def test_recipient_that_does_not_ack_gives_no_answer() -> None:
    net, _entries, alice, bob = _setup()
    envelope = seal_envelope(alice, bob.public_key, b"x", envelope_id=b"k" * 16, now=net.now)
    net.dead.add(BOB)  # bob vanished, his homes do not know yet
    handle, out = net.peers[ALICE].send(envelope, [H1], net.now)
    net.deliver(ALICE, out)
    net.run_until(net.now + 2.0)
    assert net.of(ALICE, SendDone) == [SendDone(handle, False, None, ((H1, "no_answer"),))]
    assert net.homes[H1].statistics().no_answer == 1


def test_full_home_refuses_with_full_and_the_peer_moves_on() -> None:
    net = Net()
    small = net.add_home(H1, HomeConfig(max_attached=1))
    other = net.add_home(H2)
    spare = net.add_home(H3)
    for address, seed in ((ALICE, b"a"), (BOB, b"b")):
        peer = net.add_peer(address, Identity.generate(seed * 32))
        net.deliver(address, peer.offer_candidates([small, other, spare], net.now))
    assert net.peers[ALICE].homes() == (small, other)
    assert net.peers[BOB].homes() == (other, spare)
    assert [e.reason for e in net.of(BOB, HomeLost)] == ["refused: FULL"]  # type: ignore[attr-defined]
    assert dict(net.homes[H1].statistics().refused) == {"FULL": 1}


def test_no_candidates_asks_for_more() -> None:
    net = Net()
    only = net.add_home(H1)
    peer = net.add_peer(ALICE, Identity.generate(b"a" * 32))
    net.deliver(ALICE, peer.offer_candidates([only], net.now))
    assert net.of(ALICE, NeedCandidates) == [NeedCandidates()]
    assert net.homes[H1].statistics().attached == 1


def test_forged_attach_is_unproven() -> None:
    net = Net()
    home = net.add_home(H1)
    mallory = Identity.generate(b"m" * 32)
    victim = Identity.generate(b"v" * 32)
    peer = PeerCore(
        victim.public_key, sign=mallory.sign, random=net.random, now=net.now
    )  # signs with the wrong key
    net.peers[ALICE] = peer
    net.deliver(ALICE, peer.offer_candidates([home], net.now))
    assert not net.homes[H1].is_attached(victim.public_key)
    assert dict(net.homes[H1].statistics().refused) == {"UNPROVEN": 1}


def test_spoofed_keepalive_token_is_unknown() -> None:
    net, _entries, _alice, _ = _setup()
    out = net.homes[H1].receive(encode_message(Keepalive(b"\0" * 8)), CAROL, net.now)
    assert decode_message(out[0].data).code is Code.UNKNOWN_SESSION  # type: ignore[union-attr]


def test_send_rate_limit_per_sender() -> None:
    net = Net()
    net.add_home(H1, HomeConfig(send_rate=1.0, send_burst=3.0))
    alice = Identity.generate(b"a" * 32)
    envelope = seal_envelope(alice, alice.public_key, b"x", envelope_id=b"l" * 16, now=net.now)
    codes = []
    for i in range(5):
        txid = bytes([i]) * 8
        out = net.homes[H1].receive(encode_message(Send(txid, envelope)), ALICE, net.now)
        message = decode_message(out[0].data)
        assert isinstance(message, SendResult)
        codes.append(message.code)
    assert codes == [Code.NOT_ATTACHED] * 3 + [Code.RATE_LIMITED] * 2


def test_send_rate_limit_per_recipient_and_bad_envelopes() -> None:
    net = Net()
    net.add_home(H1, HomeConfig(recipient_rate=1.0, recipient_burst=2.0))
    alice, bob = Identity.generate(b"a" * 32), Identity.generate(b"b" * 32)
    to_bob = seal_envelope(alice, bob.public_key, b"x", envelope_id=b"m" * 16, now=net.now)
    to_alice = seal_envelope(bob, alice.public_key, b"x", envelope_id=b"n" * 16, now=net.now)

    def send(envelope: bytes, source: Address, txid: bytes) -> Code:
        (out,) = net.homes[H1].receive(encode_message(Send(txid, envelope)), source, net.now)
        message = decode_message(out.data)
        assert isinstance(message, SendResult)
        return message.code

    # Three senders from three hosts: bob's key still gets only its burst.
    codes = [send(to_bob, (f"10.0.0.{i}", 1), bytes([i]) * 8) for i in range(3)]
    assert codes == [Code.NOT_ATTACHED, Code.NOT_ATTACHED, Code.RATE_LIMITED]
    assert send(to_alice, ("10.0.0.9", 1), b"z" * 8) is Code.NOT_ATTACHED
    assert send(b"short", ("10.0.0.9", 1), b"y" * 8) is Code.BAD_REQUEST


@pytest.mark.parametrize(
    ("lower", "interval"), [(None, 20.0), (0.0, 20.0), (8.0, 4.0), (120.0, 20.0), (1.0, 1.0)]
)
def test_keepalive_from_nat_lifetime(lower: float | None, interval: float) -> None:
    assert keepalive_for_lifetime(lower) == interval


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(SlotState)), st.sampled_from(list(SlotInput)))
def test_slot_table_is_total_or_raises(state: SlotState, event: SlotInput) -> None:
    slot = HomeSlot(HomeEntry(b"k" * 32, H1, H1), state, b"t" * 8, 0.0, 0.0, 0.0)
    if (state, event) in TRANSITIONS:
        slot.fire(event)
        assert slot.state is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(TransitionError):
            slot.fire(event)


def test_lost_is_terminal() -> None:
    assert not [pair for pair in TRANSITIONS if pair[0] is SlotState.LOST]


def test_peer_events_attached_at_home() -> None:
    net, _, alice, bob = _setup()
    attached = net.of(H1, PeerAttached)
    assert [e.key for e in attached] == [alice.public_key, bob.public_key]  # type: ignore[attr-defined]
    assert [e.address for e in attached] == [ALICE, BOB]  # type: ignore[attr-defined]


def test_relay_selector_offers_healthy_spares_after_the_chosen() -> None:
    from p2pnode.connectivity.relay_advert import RelayAdvert
    from p2pnode.connectivity.relays import RelayCandidate, RelaySelector

    selector = RelaySelector()
    candidates = [
        RelayCandidate(
            bytes([i]) * 32,
            RelayAdvert(((f"198.51.100.{i}", 3478),), (), (), "r", 10, load, 0, "s"),
            1,
            2_000_000_000,
        )
        for i, load in ((1, 0), (2, 0), (3, 0), (4, 10))
    ]
    selector.add_candidates(candidates, 0.0)
    for i, rtt in ((1, 0.03), (2, 0.01), (3, 0.02), (4, 0.001)):
        selector.probe_succeeded(bytes([i]) * 32, rtt, 1.0)
    healthy = [c.owner[0] for c in selector.healthy()]
    chosen = [c.owner[0] for c in selector.chosen()]
    assert healthy[:2] == chosen
    assert sorted(healthy) == [1, 2, 3]  # the full one (load == capacity) is no candidate
    assert len(selector.healthy(2)) == 2


_KEY = st.binary(min_size=32, max_size=32)
_ID = st.binary(min_size=8, max_size=8)
_CODE = st.sampled_from(list(Code))
_MESSAGES = st.one_of(
    st.builds(Hello, _ID),
    st.builds(Challenge, _ID, st.binary(min_size=16, max_size=16), _KEY),
    st.builds(
        Attach,
        _ID,
        _KEY,
        st.binary(min_size=16, max_size=16),
        st.integers(0, 600_000),
        st.binary(min_size=64, max_size=64),
    ),
    st.builds(Attached, _ID, _CODE, _ID, st.integers(0, 600_000), st.just(H1)),
    st.builds(Keepalive, _ID),
    st.builds(KeepaliveAck, _ID, _CODE),
    st.builds(Detach, _ID),
    st.builds(
        SetState,
        _ID,
        _ID,
        st.binary(max_size=200),
        st.none() | st.lists(_KEY, max_size=3).map(tuple),
    ),
    st.builds(SetAck, _ID, _CODE),
    st.builds(Send, _ID, st.binary(max_size=300)),
    st.builds(SendResult, _ID, _CODE),
    st.builds(Deliver, _ID, st.binary(max_size=200)),
    st.builds(DeliverAck, _ID),
    st.builds(Watch, _ID, _KEY, _KEY, st.integers(0, 2**40), st.binary(min_size=64, max_size=64)),
    st.builds(Watched, _ID, _CODE, _KEY, st.booleans(), st.binary(max_size=200), _ID),
    st.builds(Notify, _KEY, st.booleans(), st.binary(max_size=200), st.integers(0, 2**53), _ID),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(_MESSAGES, st.sampled_from([H1, H2, ALICE, CAROL])), max_size=20))
def test_any_well_formed_message_from_anyone_never_raises(
    messages: list[tuple[HomeMessage, Address]],
) -> None:
    """Every core handles every message type from any source in any state: drops, never raises."""
    net, _, _, _ = _setup()
    for message, source in messages:
        data = encode_message(message)
        net.homes[H1].receive(data, source, net.now)
        net.peers[ALICE].receive(data, source, net.now)
        net.now += 0.3
        net.homes[H1].tick(net.now)
        net.peers[ALICE].tick(net.now)
