"""Sans-IO cores wired in memory, in virtual time: the protocol's rules, end to end."""

from __future__ import annotations

import dataclasses

from p2pnode.dht.config import (
    BootstrapResult,
    DhtConfig,
    ExtensionResult,
    GetResult,
    PingResult,
    PutResult,
    StoreReply,
)
from p2pnode.dht.keys import Address, distance
from p2pnode.dht.messages import (
    TOKEN_BYTES,
    FindNode,
    FindValue,
    Flags,
    Frame,
    Message,
    Ping,
    Pong,
    Store,
    StoreResult,
    StoreStatus,
    decode_frame,
    encode_frame,
)
from p2pnode.dht.proofs import TOKEN_SLOT, receipt_valid, sign_store_proof
from p2pnode.dht.protocol import AMPLIFICATION_FACTOR, UNVERIFIED_PAD_TO, DhtCore, Peer
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, sign_record
from tests.unit.dht.memnet import MemNet


def presence(core: DhtCore, net: MemNet, seq: int = 1, ttl: int = 3600) -> SignedRecord:
    return sign_record(
        core.identity, RecordKind.PRESENCE, "online", b"here", seq=seq, now=net.now, ttl=ttl
    )


def network(
    size: int, *, seed: int = 1, **config: object
) -> tuple[MemNet, list[tuple[Address, DhtCore]]]:
    net = MemNet(seed=seed)
    cfg = DhtConfig(**config)  # type: ignore[arg-type]
    first = net.add(config=cfg)
    nodes = [first]
    for _ in range(size - 1):
        address, core = net.add(config=cfg, bootstrap=[first[0]])
        result = net.wait(address, core.bootstrap(net.now))
        assert isinstance(result, BootstrapResult) and result.answered == 1
        nodes.append((address, core))
    return net, nodes


def test_ping_proves_key_then_table_admits() -> None:
    net = MemNet()
    a_addr, a = net.add()
    b_addr, b = net.add()
    result = net.wait(a_addr, a.ping(b_addr, net.now))
    assert isinstance(result, PingResult)
    assert result.contact is not None and result.contact.public_key == b.identity.public_key
    assert result.observed == a_addr
    net.run_until(lambda: len(b.table) == 1, limit=5)
    assert a.table.get(b.identity.node_id) is not None
    assert b.table.get(a.identity.node_id) is not None  # b challenged a back


def test_ping_from_a_long_ipv6_address_is_answered() -> None:
    """First contact from an unverified address: the PING is padded so the PONG fits 3x."""
    net = MemNet()
    _, a = net.add()
    b_addr, b = net.add()
    far: Address = ("2001:db8:1234:5678:9abc:def0:1234:5678", 65535)
    a.ping(b_addr, net.now)
    ((request, _),) = a.datagrams_to_send()
    b.datagram_received(request, far, net.now)
    replies = [data for data, destination in b.datagrams_to_send() if destination == far]
    pongs = [d for d in replies if isinstance(decode_frame(d).message, Pong)]
    assert len(pongs) == 1
    assert sum(len(d) for d in replies) <= AMPLIFICATION_FACTOR * len(request)
    pong = decode_frame(pongs[0]).message
    assert isinstance(pong, Pong) and pong.observed == far


def test_client_mode_nodes_are_never_in_tables_but_their_puts_are_stored() -> None:
    net, nodes = network(5)
    client_addr, client = net.add(config=DhtConfig(client_mode=True), bootstrap=[nodes[0][0]])
    net.wait(client_addr, client.bootstrap(net.now))
    record = presence(client, net)
    put = net.wait(client_addr, client.put(record, net.now))
    assert isinstance(put, PutResult) and put.stored == 5 and put.rejected == ()
    net.run_until(lambda: False, limit=5)
    for _, core in nodes:
        assert client.identity.node_id not in core.table
        assert core.store.get(record.key, net.now) == [record]
        assert not core.store.rejects  # proven by the tokens of its lookup, never refused
    assert len(client.table) == 5 and len(client.store) == 0 and client.store_retries == 0


def test_forged_sender_id_and_unsolicited_replies_are_dropped() -> None:
    net = MemNet()
    a_addr, a = net.add()
    liar = Identity.generate(b"l" * 32)
    victim = Identity.generate(b"v" * 32)
    forged = Frame(Ping(bytes(16)), bytes(8), liar.public_key, victim.node_id, Flags.NONE)
    net.inject(encode_frame(forged), ("10.9.9.9", 9), a_addr)
    stray = Frame(
        StoreResult(StoreStatus.STORED, "", ""), bytes(8), liar.public_key, liar.node_id, Flags.NONE
    )
    net.inject(encode_frame(stray), ("10.9.9.9", 9), a_addr)
    net.inject(b"\x01garbage", ("10.9.9.9", 9), a_addr)
    net.run_until(lambda: False, limit=2)
    drops = a.drops.counts()
    assert drops["sender id mismatch"] == 1
    assert drops["unsolicited reply"] == 1
    assert drops["undecodable"] == 1
    assert len(a.table) == 0


def test_reply_from_another_address_is_dropped() -> None:
    net = MemNet()
    a_addr, a = net.add()
    b_addr, b = net.add()
    op = a.ping(b_addr, net.now)
    (request, destination), *_ = a.datagrams_to_send()
    assert destination == b_addr
    b.datagram_received(request, a_addr, net.now)
    reply = b.datagrams_to_send()[0][0]
    a.datagram_received(reply, ("10.6.6.6", 6), net.now)  # right id and key, wrong address
    assert a.drops.counts()["reply from another address"] == 1
    assert a.events() == []
    a.datagram_received(reply, b_addr, net.now)
    assert [event.op_id for event in a.events()] == [op]


def test_replies_to_unverified_addresses_do_not_amplify() -> None:
    net, nodes = network(30)
    _target_addr, target = nodes[3]
    stranger = Identity.generate(b"s" * 32)
    spoofed: Address = ("10.66.66.66", 666)
    for message in (FindNode(bytes(20)), FindValue(bytes(20), 0), Ping(bytes(16))):
        request = encode_frame(
            Frame(message, b"r" * 8, stranger.public_key, stranger.node_id, Flags.NONE)
        )
        target.datagram_received(request, spoofed, net.now)
        replies = [d for d, dst in target.datagrams_to_send() if dst == spoofed]
        assert sum(len(r) for r in replies) <= AMPLIFICATION_FACTOR * len(request)
    assert len(target.table) > 20  # it had plenty of contacts it did not send


def test_sixty_nodes_every_node_finds_every_record() -> None:
    net, nodes = network(60)
    records = []
    for address, core in nodes:
        record = presence(core, net)
        put = net.wait(address, core.put(record, net.now))
        assert isinstance(put, PutResult) and put.stored >= 10
        records.append(record)
    for address, core in nodes[::6]:
        for record in records:
            got = net.wait(address, core.get(record.key, net.now))
            assert isinstance(got, GetResult)
            assert got.records == (record,)


def test_lookups_survive_dead_nodes() -> None:
    net, nodes = network(40)
    records = []
    for address, core in nodes:
        record = presence(core, net)
        net.wait(address, core.put(record, net.now))
        records.append(record)
    for address, _ in nodes[1::5]:
        net.down.add(address)
    alive = [(a, c) for a, c in nodes if a not in net.down]
    for address, core in alive[:5]:
        for record, (owner_addr, _) in zip(records, nodes, strict=True):
            got = net.wait(address, core.get(record.key, net.now), limit=20)
            assert isinstance(got, GetResult)
            assert got.records == (record,), owner_addr


def test_get_returns_newest_and_put_reports_zero_alone() -> None:
    net = MemNet()
    lonely_addr, lonely = net.add(config=DhtConfig(client_mode=True))
    put = net.wait(lonely_addr, lonely.put(presence(lonely, net), net.now))
    assert isinstance(put, PutResult) and put.stored == 0
    net2, nodes = network(10, seed=2)
    address, core = nodes[4]
    first, second = presence(core, net2, seq=1), presence(core, net2, seq=2)
    net2.wait(address, core.put(first, net2.now))
    net2.wait(address, core.put(second, net2.now))
    reader_addr, reader = nodes[7]
    got = net2.wait(reader_addr, reader.get(first.key, net2.now))
    assert isinstance(got, GetResult) and got.records == (second,)


def test_local_put_runs_acceptance() -> None:
    net, nodes = network(3)
    address, core = nodes[1]
    record = presence(core, net, seq=5)
    net.wait(address, core.put(record, net.now))
    older = presence(core, net, seq=4)
    put = net.wait(address, core.put(older, net.now))
    assert isinstance(put, PutResult) and put.stored == 0 and put.rejected == (("rollback", 1),)


def test_store_rate_limit_per_ip() -> None:
    net, nodes = network(2, store_rate=1.0, store_burst=3.0)
    _address, core = nodes[1]
    sender = Identity.generate(b"q" * 32)
    reasons = []
    for seq in range(6):
        record = sign_record(sender, RecordKind.PRESENCE, "x", b"", seq=seq, now=net.now, ttl=60)
        frame = Frame(
            Store(record.key, record.encoded),
            bytes([seq]) * 8,
            sender.public_key,
            sender.node_id,
            Flags.NONE,
        )
        core.datagram_received(encode_frame(frame), ("10.5.5.5", 5 + seq), net.now)
        for data, _ in core.datagrams_to_send():
            message = decode_frame(data).message
            if isinstance(message, StoreResult):
                reasons.append(message.reason)
    # One IP across ports; the budget is spent before the (unproven) sender's key is looked at.
    assert reasons == ["unproven"] * 3 + ["rate-limited"] * 3


def test_request_rate_limit_per_ip_across_ports() -> None:
    net = MemNet()
    _, core = net.add(config=DhtConfig(request_rate=1.0, request_burst=4.0))
    sender = Identity.generate(b"q" * 32)

    def answered(host: str, port: int) -> bool:
        frame = Frame(
            FindNode(bytes(20)), b"r" * 8, sender.public_key, sender.node_id, Flags.CLIENT
        )
        core.datagram_received(encode_frame(frame, pad_to=480), (host, port), net.now)
        return any(destination == (host, port) for _, destination in core.datagrams_to_send())

    assert [answered("10.5.5.5", port) for port in range(1, 7)] == [True] * 4 + [False] * 2
    assert answered("10.5.5.6", 1)  # another host has its own budget
    v6 = [answered(f"2001:db8:0:1::{n:x}", 7) for n in range(1, 7)]
    assert v6 == [True] * 4 + [False] * 2  # one /64 is one source
    assert answered("2001:db8:0:2::1", 7)
    assert answered("::ffff:10.5.5.6", 1)  # IPv4-mapped counts as its IPv4 address
    assert core.drops.counts()["rate limited"] == 4


def test_loopback_nodes_sharing_one_ip_configure_it() -> None:
    config = DhtConfig().sharing_ip(50)
    assert config.request_rate == 50 * DhtConfig().request_rate
    assert config.store_burst == 50 * DhtConfig().store_burst


def request(
    sender: Identity, message: Message, request_id: bytes = b"r" * 8, *, prove: bool = False
) -> bytes:
    """A raw client-mode request from ``sender`` (no DHT core behind it); ``prove``: flag
    ``PROVE`` (a STORE then asks for a signed receipt)."""
    flags = Flags.CLIENT | (Flags.PROVE if prove else Flags.NONE)
    return encode_frame(
        Frame(message, request_id, sender.public_key, sender.node_id, flags),
        pad_to=UNVERIFIED_PAD_TO,
    )


def store_reply(core: DhtCore, data: bytes, source: Address, now: float) -> StoreResult:
    """Feed one STORE to ``core`` and return its STORE_RESULT to ``source``."""
    core.datagram_received(data, source, now)
    replies = [
        decode_frame(d).message
        for d, destination in core.datagrams_to_send()
        if destination == source
    ]
    results = [m for m in replies if isinstance(m, StoreResult)]
    assert len(results) == 1, replies
    return results[0]


def proven_store(sender: Identity, record: SignedRecord, token: bytes, receiver: DhtCore) -> Store:
    """A STORE of ``record`` carrying ``sender``'s proof over ``token`` for ``receiver``."""
    proof = sign_store_proof(sender, token, receiver.identity.public_key)
    return Store(record.key, record.encoded, token, proof)


def test_unproven_store_is_refused_then_admitted_after_the_proof() -> None:
    net = MemNet()
    _, core = net.add()
    sender = Identity.generate(b"p" * 32)
    source: Address = ("10.5.5.5", 5)
    record = sign_record(sender, RecordKind.PRESENCE, "x", b"hi", seq=1, now=net.now, ttl=60)
    refused = store_reply(core, request(sender, Store(record.key, record.encoded)), source, net.now)
    assert refused.status is StoreStatus.UNPROVEN and refused.reason == "unproven"
    assert len(refused.token) == TOKEN_BYTES and refused.receipt == b""
    assert core.store.get(record.key, net.now) == []
    assert core.statistics().store_rejects == {"unproven": 1}
    store = proven_store(sender, record, refused.token, core)
    taken = store_reply(core, request(sender, store, b"s" * 8, prove=True), source, net.now)
    assert taken.status is StoreStatus.STORED and taken.token == b""
    assert receipt_valid(
        core.identity.public_key,
        taken.receipt,
        b"s" * 8,
        sender.public_key,
        record.key,
        record.encoded,
        StoreStatus.STORED,
    )
    assert core.store.get(record.key, net.now) == [record]
    assert core.statistics().store_rejects == {"unproven": 1}
    # Proven once per contact: the next STORE from this key at this address needs no proof.
    newer = sign_record(sender, RecordKind.PRESENCE, "x", b"hi", seq=2, now=net.now, ttl=60)
    plain = Store(newer.key, newer.encoded)
    again = store_reply(core, request(sender, plain), source, net.now)
    assert again.status is StoreStatus.STORED
    assert again.receipt == b""  # a receipt only when asked (PROVE): no signature spent
    elsewhere = store_reply(core, request(sender, plain), ("10.5.5.5", 6), net.now)
    assert elsewhere.reason == "unproven"  # another port is another contact
    assert sender.node_id not in core.table  # a client proving its key gets no table slot


def test_proof_for_another_key_replayed_or_old_token_fails() -> None:
    net = MemNet()
    _, core = net.add()
    _, other_core = net.add()
    alice, mallory = Identity.generate(b"a" * 32), Identity.generate(b"m" * 32)
    home: Address = ("10.5.5.5", 5)
    record = sign_record(alice, RecordKind.PRESENCE, "x", b"hi", seq=1, now=net.now, ttl=3600)
    token = store_reply(
        core, request(alice, Store(record.key, record.encoded)), home, net.now
    ).token

    def verdict(sender: Identity, store: Store, source: Address, now: float) -> tuple[str, str]:
        result = store_reply(core, request(sender, store), source, now)
        return result.status.name, result.reason

    # Alice's token in Mallory's proof (from Alice's address too): not issued to her key.
    stolen = proven_store(mallory, record, token, core)
    assert verdict(mallory, stolen, home, net.now) == ("UNPROVEN", "bad-proof")
    # Alice's whole proven STORE replayed from another address: the token names Alice's.
    genuine = proven_store(alice, record, token, core)
    assert verdict(alice, genuine, ("10.6.6.6", 5), net.now) == ("UNPROVEN", "bad-proof")
    assert verdict(alice, genuine, ("10.5.5.5", 6), net.now) == ("UNPROVEN", "bad-proof")
    # Signed by another key than the sender's.
    forged = dataclasses.replace(genuine, proof=proven_store(mallory, record, token, core).proof)
    assert verdict(alice, forged, home, net.now) == ("UNPROVEN", "bad-proof")
    # A proof made for another node does not carry over, nor does that node's token.
    elsewhere = proven_store(alice, record, token, other_core)
    assert verdict(alice, elsewhere, home, net.now) == ("UNPROVEN", "bad-proof")
    other_token = store_reply(other_core, request(alice, genuine), home, net.now).token
    assert verdict(alice, proven_store(alice, record, other_token, core), home, net.now) == (
        "UNPROVEN",
        "bad-proof",
    )
    # An old token: valid for at least one slot, never after two.
    later = net.now + 2 * TOKEN_SLOT
    assert verdict(alice, genuine, home, later) == ("UNPROVEN", "bad-proof")
    assert core.store.get(record.key, later) == []
    assert core.statistics().store_rejects == {"unproven": 1, "bad-proof": 7}
    # A fresh token makes the same STORE acceptable (so each refusal above was the proof's).
    fresh = store_reply(core, request(alice, genuine), home, later).token
    assert verdict(alice, proven_store(alice, record, fresh, core), home, later) == ("STORED", "")


def test_a_put_costs_one_store_and_one_answer_per_node() -> None:
    """Tokens from the lookup's NODES replies prove the putter: no retry, no extra trip."""
    net, nodes = network(30)
    address, core = nodes[7]
    seen: list[str] = []
    net.tap = lambda data, source, destination: seen.append(
        type(decode_frame(data).message).__name__
    )
    put = net.wait(address, core.put(presence(core, net), net.now))
    assert isinstance(put, PutResult) and put.stored >= put.contacted == 20 and put.rejected == ()
    assert seen.count("Store") == seen.count("StoreResult") == put.contacted
    assert core.store_retries == 0
    assert all(not c.store.rejects for _, c in nodes)


def test_a_store_without_a_token_is_retried_once_with_the_proof() -> None:
    net = MemNet()
    a_addr, a = net.add()
    b_addr, b = net.add()
    record = presence(a, net)
    reply = net.wait(a_addr, a.store_at(b_addr, record.key, record.encoded, net.now))
    assert isinstance(reply, StoreReply) and reply.status is StoreStatus.STORED
    assert a.store_retries == 1 and b.store.rejects == {"unproven": 1}
    assert b.store.get(record.key, net.now) == [record]
    again = net.wait(a_addr, a.store_at(b_addr, record.key, record.encoded, net.now))
    assert isinstance(again, StoreReply) and again.status is StoreStatus.DUPLICATE
    assert a.store_retries == 1  # the token from the refusal is kept for the next STORE


def test_a_store_answer_without_the_storers_receipt_does_not_count() -> None:
    """Someone answering for another node's key cannot sign its receipt."""
    net = MemNet()
    a_addr, a = net.add()
    victim = Identity.generate(b"v" * 32)
    impostor_addr, impostor = net.add()
    record = presence(a, net)
    # The impostor challenged a, so it admits a's STOREs without a token proof.
    net.wait(impostor_addr, impostor.ping(a_addr, net.now))

    def pose_as_victim(data: bytes, source: Address, destination: Address) -> None:
        frame = decode_frame(data)
        if source == impostor_addr and isinstance(frame.message, StoreResult):
            forged = dataclasses.replace(
                frame, sender_key=victim.public_key, sender_id=victim.node_id
            )
            net.inject(encode_frame(forged), source, destination)

    net.tap = pose_as_victim
    op = a.store_at(impostor_addr, record.key, record.encoded, net.now, victim.public_key)
    reply = net.wait(a_addr, op)
    assert isinstance(reply, StoreReply) and reply.status is None  # timed out
    assert a.drops.counts()["bad store receipt"] == 1
    assert impostor.store.get(record.key, net.now) == [record]  # it did store, and said so


def test_republish_before_expiry_and_replicate_to_newcomers() -> None:
    net, nodes = network(25, replicate_interval=30.0)
    address, core = nodes[2]
    record = presence(core, net, ttl=400)
    net.wait(address, core.put(record, net.now))
    net.run_until(lambda: False, limit=320)  # past 3/4 of the lifetime
    reader_addr, reader = nodes[9]
    got = net.wait(reader_addr, reader.get(record.key, net.now))
    assert isinstance(got, GetResult) and got.records[0].seq == 2
    # A newcomer whose id is closer to the key than every node receives it from a replica.
    holders_before = sum(1 for _, c in nodes if c.store.get(record.key, net.now))
    nearest = min(distance(c.own_id, record.key) for _, c in nodes)
    candidates = (Identity.generate(bytes([7, n]) * 16) for n in range(256))
    newcomer = next(i for i in candidates if distance(i.node_id, record.key) < nearest)
    late_addr, late = net.add(bootstrap=[nodes[0][0]], identity=newcomer)
    net.wait(late_addr, late.bootstrap(net.now))
    net.wait(late_addr, late.find_node(record.key, net.now))
    net.run_until(lambda: bool(late.store.get(record.key, net.now)), limit=120)
    assert late.store.get(record.key, net.now)
    assert holders_before >= 20


def test_extension_rpc_round_trip() -> None:
    net = MemNet()
    a_addr, a = net.add()
    b_addr, b = net.add()
    seen: list[Peer] = []

    def decode(fields: tuple[object, ...]) -> str:
        if len(fields) != 1 or not isinstance(fields[0], str):
            raise ValueError("want one string")
        return fields[0]

    def handle(request: str, peer: Peer, now: float) -> tuple[object, ...]:
        seen.append(peer)
        return (request.upper(),)

    b.register_extension(70, decode, handle)
    result = net.wait(a_addr, a.extension_request(b_addr, 70, ("hello",), net.now))
    assert isinstance(result, ExtensionResult) and result.fields == ("HELLO",)
    assert seen[0].public_key == a.identity.public_key
    bad = net.wait(a_addr, a.extension_request(b_addr, 70, (1, 2), net.now))
    assert isinstance(bad, ExtensionResult) and bad.fields is None  # dropped, timed out
    assert b.drops.counts()["bad extension request"] == 1
    assert dataclasses.is_dataclass(seen[0])


def test_rebootstrap_uses_saved_contacts() -> None:
    net, nodes = network(10)
    late_addr, late = net.add()  # no bootstrap address: only a saved contact
    saved = nodes[3][0]
    net.down.add(saved)
    result = net.wait(late_addr, late.bootstrap(net.now, [saved]))
    assert isinstance(result, BootstrapResult) and result.answered == 0
    net.down.discard(saved)
    net.run_until(lambda: late.healthy, limit=60)
    assert late.healthy and late.bootstrap_addresses == []
