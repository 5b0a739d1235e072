"""What a put and a join cost (issue 10): signatures spared where nothing is proven by
them, and one join per ``bootstrap`` call. In virtual time, cores wired in memory.

- A storer that holds the putter proven at its address says so (``PROVEN_YOU``) in
  its NODES reply: the putter's STORE then carries no token proof (no signature
  spent). A STORE asks for a signed receipt (``PROVE``) only from a storer the
  putter has not proven: from a proven one the answer to a random request id at
  its address proves as much as the receipt would.
- An explicit join blocks maintenance's re-bootstrap until it is done: a slow join
  (here 0.3 s per datagram) used to get a second whole join started beside it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.dht.config import BootstrapResult, DhtConfig, PutResult
from p2pnode.dht.keys import Address, Contact, node_id_of
from p2pnode.dht.messages import Flags, Ping, Store, StoreResult, decode_frame
from p2pnode.dht.protocol import DhtCore
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, sign_record
from tests.unit.dht.memnet import MemNet


def joined(size: int) -> tuple[MemNet, list[tuple[Address, DhtCore]]]:
    net = MemNet(seed=4)
    first = net.add()
    nodes = [first]
    for _ in range(size - 1):
        address, core = net.add(bootstrap=[first[0]])
        result = net.wait(address, core.bootstrap(net.now))
        assert isinstance(result, BootstrapResult) and result.answered == 1
        nodes.append((address, core))
    return net, nodes


def test_a_put_spends_no_signature_on_storers_that_hold_it_proven() -> None:
    net, nodes = joined(40)
    cores = dict(nodes)
    putter_address, putter = nodes[9]
    key = putter.identity.public_key
    stores: list[tuple[bool, bool, bool, bool]] = []  # proof, PROVE, storer proven us, we it
    receipts: list[tuple[bool, bool]] = []  # receipt present, storer proven by the putter

    def tap(data: bytes, source: Address, destination: Address) -> None:
        frame = decode_frame(data)
        message = frame.message
        if source == putter_address and isinstance(message, Store):
            storer = cores[destination]
            stores.append(
                (
                    bool(message.proof),
                    bool(frame.flags & Flags.PROVE),
                    storer.addresses.proven(key, putter_address),
                    putter.addresses.proven(storer.identity.public_key, destination),
                )
            )
        if destination == putter_address and isinstance(message, StoreResult):
            proven = putter.addresses.proven(frame.sender_key, source)
            receipts.append((bool(message.receipt), proven))

    net.tap = tap
    for item in range(3):
        record = sign_record(
            putter.identity, RecordKind.PRESENCE, f"p{item}", b"x", seq=1, now=net.now, ttl=600
        )
        put = net.wait(putter_address, putter.put(record, net.now))
        assert isinstance(put, PutResult) and put.stored >= 20 and put.rejected == ()
    assert putter.store_retries == 0  # nobody answered UNPROVEN: the flags told the truth
    assert len(stores) >= 60
    # Before PROVEN_YOU every STORE carried a signed proof; now only those to a storer
    # that had not proven the putter do.
    assert not any(proof for proof, _, storer_proved_us, _ in stores if storer_proved_us)
    assert sum(storer_proved_us for _, _, storer_proved_us, _ in stores) >= len(stores) // 2
    # A receipt is asked for exactly when the putter has not proven the storer ...
    assert all(prove == (not we_proved_it) for _, prove, _, we_proved_it in stores)
    # ... and signed only then.
    assert len(receipts) == len(stores)
    assert sum(present for present, _ in receipts) == sum(prove for _, prove, _, _ in stores)


def test_a_slow_join_is_not_doubled_by_a_re_bootstrap() -> None:
    # 0.3 s per datagram: the join (PING, then lookups) takes over the second after
    # which maintenance re-bootstraps a node whose table is not yet healthy.
    net = MemNet(latency=0.3)
    seed_address, _ = net.add()
    address, core = net.add(bootstrap=[seed_address], config=DhtConfig())
    pings: list[float] = []

    def tap(data: bytes, source: Address, destination: Address) -> None:
        if source == address and isinstance(decode_frame(data).message, Ping):
            pings.append(net.now)

    net.tap = tap
    started = net.now
    result = net.wait(address, core.bootstrap(net.now))
    assert isinstance(result, BootstrapResult) and result.answered == 1
    assert net.now - started > 1.0  # slower than maintenance's first re-bootstrap
    assert not core.healthy  # two nodes: maintenance would like to re-bootstrap
    assert len(pings) == 1  # one join: the seed was pinged once while it ran


@settings(max_examples=40, deadline=None)
@given(
    hosts=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3)), min_size=1, max_size=120),
    target=st.binary(min_size=20, max_size=20),
    count=st.integers(1, 25),
)
def test_a_reply_names_what_the_wide_scan_would(
    hosts: list[tuple[int, int]], target: bytes, count: int
) -> None:
    # Answers.closest asks the table for ``count`` contacts first and widens to 2 x count
    # only when the diversity limits dropped some: the same contacts either way.
    net = MemNet(seed=len(hosts))
    _, core = net.add()
    for number, (network, host) in enumerate(hosts):
        identity = Identity.generate(number.to_bytes(32, "big"))
        contact = Contact(
            node_id_of(identity.public_key), identity.public_key, (f"10.0.{network}.{host}", 1)
        )
        core.table.offer(contact, net.now)
    requester = Identity.generate(b"\xff" * 32)
    sender = Contact(node_id_of(requester.public_key), requester.public_key, ("10.9.9.9", 1))
    wide = core.table.closest(target, 2 * count, frozenset((sender.node_id,)))
    assert core.answers.closest(target, count, sender) == core.diversity.pick(wide, count)
