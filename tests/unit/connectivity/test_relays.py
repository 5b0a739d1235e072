"""Relay discovery: buckets and keys, advert filtering, selection in virtual time, STUN probes."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

import pytest

from nat.drops import DropCounter
from nat.stun import StunDecodeError, decode_message, encode_message
from nat.stun.server import handle_binding
from p2pnode.connectivity.relay_advert import RelayAdvert, encode_relay_advert
from p2pnode.connectivity.relays import (
    RELAY_BUCKETS,
    CandidateState,
    RelayCandidate,
    RelayFinder,
    RelaySelector,
    SelectorConfig,
    candidates_from_records,
    relay_bucket,
    relay_key,
    relay_subject,
    stun_probe,
)
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, record_key, sign_record

NOW = 1_800_000_000.0


def advert(
    load: int = 0, capacity: int = 10, port: int = 3478, stun: int | None = None
) -> RelayAdvert:
    return RelayAdvert(
        udp=(("127.0.0.1", port),),
        tcp=(),
        dht=(),
        realm="p2pnode",
        capacity=capacity,
        load=load,
        uptime=0,
        software="test",
        stun=(("127.0.0.1", stun),) if stun is not None else (),
    )


def candidate(
    n: int, load: int = 0, capacity: int = 10, seq: int = 1, *, stun: bool = False
) -> RelayCandidate:
    payload = advert(load, capacity, 3000 + n, 4000 + n if stun else None)
    return RelayCandidate(bytes([n]) * 32, payload, seq, int(NOW) + 3600)


def drops() -> DropCounter:
    return DropCounter(logging.getLogger("test"), lambda: NOW)


def signed(identity: Identity, payload: bytes, *, subject: str = "relays/3", seq: int = 1,
           kind: RecordKind = RecordKind.RELAY_ADVERT, ttl: int = 600) -> SignedRecord:  # fmt: skip
    return sign_record(identity, kind, subject, payload, seq=seq, now=NOW, ttl=ttl)


# -- buckets and keys ---------------------------------------------------------


def test_bucket_subject_and_key() -> None:
    assert relay_bucket(bytes([0x37]) + bytes(19)) == 0x37 % 16
    assert relay_subject(15) == "relays/15"
    with pytest.raises(ValueError):
        relay_subject(16)
    with pytest.raises(ValueError):
        relay_bucket(b"")
    keys = {relay_key(b) for b in range(RELAY_BUCKETS)}
    assert len(keys) == RELAY_BUCKETS
    # Contested kind: every owner's advert of a bucket meets under one key.
    a, b = Identity.generate(bytes(32)), Identity.generate(bytes([1]) * 32)
    ra = signed(a, encode_relay_advert(advert()), subject="relays/3")
    rb = signed(b, encode_relay_advert(advert()), subject="relays/3")
    assert ra.key == rb.key == relay_key(3)
    assert relay_key(3) == record_key(RecordKind.RELAY_ADVERT, a.public_key, "relays/3")


# -- candidates from records -----------------------------------------------------


def test_candidates_keep_newest_per_owner_and_drop_bad_ones() -> None:
    a, b, me = (Identity.generate(bytes([i]) * 32) for i in (1, 2, 3))
    counter = drops()
    records = [
        signed(a, encode_relay_advert(advert(load=1)), seq=1),
        signed(a, encode_relay_advert(advert(load=2)), seq=5),
        signed(a, encode_relay_advert(advert(load=3)), seq=4),
        signed(b, b"\xc1 not an advert"),
        signed(b, encode_relay_advert(advert()), subject="elsewhere"),
        signed(b, encode_relay_advert(advert()), kind=RecordKind.PRESENCE),
        signed(me, encode_relay_advert(advert())),
    ]
    expired = signed(b, encode_relay_advert(advert()), ttl=10)
    found = candidates_from_records(
        [*records, expired], NOW + 11, counter, exclude_owner=me.public_key
    )
    assert [(c.owner, c.seq, c.advert.load) for c in found] == [(a.public_key, 5, 2)]
    assert counter.counts() == {
        "advert-undecodable": 1,
        "advert-wrong-subject": 1,
        "advert-wrong-kind": 1,
        "advert-expired": 1,
    }


# -- the selector in virtual time -------------------------------------------------


def probe_all(selector: RelaySelector, now: float, rtts: dict[int, float | None]) -> list[int]:
    """Answer every due probe from a table of RTTs (None: no answer); returns who was probed."""
    probed = []
    for c in selector.probes_due(now):
        n = c.owner[0]
        probed.append(n)
        rtt = rtts.get(n)
        if rtt is None:
            selector.probe_failed(c.owner, now)
        else:
            selector.probe_succeeded(c.owner, rtt, now)
    return probed


def chosen(selector: RelaySelector) -> list[int]:
    return [c.owner[0] for c in selector.chosen()]


def test_keeps_the_best_two_by_rtt() -> None:
    selector = RelaySelector(SelectorConfig(max_in_flight=8))
    assert selector.needs_discovery(NOW)
    selector.add_candidates([candidate(n) for n in range(1, 6)], NOW)
    assert not selector.needs_discovery(NOW)
    assert chosen(selector) == []
    assert selector.next_deadline() == float("-inf")  # untested: probe now
    probed = probe_all(selector, NOW, {1: 0.050, 2: 0.010, 3: None, 4: 0.030, 5: 0.020})
    assert sorted(probed) == [1, 2, 3, 4, 5]
    assert chosen(selector) == [2, 5]
    assert selector.state_of(bytes([3]) * 32) is CandidateState.FAILED
    assert selector.rtt_of(bytes([2]) * 32) == 0.010


def test_load_weighs_against_rtt_and_full_relays_are_never_chosen() -> None:
    selector = RelaySelector(SelectorConfig(max_in_flight=8))
    selector.add_candidates(
        [candidate(1, load=9), candidate(2, load=0), candidate(3, load=10), candidate(4)], NOW
    )
    probe_all(selector, NOW, {1: 0.010, 2: 0.015, 3: 0.001, 4: 0.100})
    # 1: 10 ms * 1.9 = 19 ms; 2: 15 ms; 3 full; 4: 100 ms.
    assert chosen(selector) == [2, 1]


def test_choice_is_sticky_and_a_failed_relay_is_replaced_at_once() -> None:
    config = SelectorConfig(max_in_flight=8, recheck_interval=30.0, failure_backoff=60.0)
    selector = RelaySelector(config)
    selector.add_candidates([candidate(n) for n in (1, 2, 3)], NOW)
    probe_all(selector, NOW, {1: 0.030, 2: 0.020, 3: 0.040})
    assert chosen(selector) == [2, 1]
    # Nothing is due until the recheck interval; spare 3 is not re-probed while we are full.
    assert selector.probes_due(NOW + 29) == []
    assert selector.next_deadline() == NOW + 30
    # A new, slightly faster candidate does not displace a working choice.
    selector.add_candidates([candidate(4)], NOW + 31)
    probed = probe_all(selector, NOW + 31, {1: 0.030, 2: 0.020, 4: 0.025})
    assert sorted(probed) == [1, 2, 4]
    assert chosen(selector) == [2, 1]
    # Relay 2 stops answering: dropped and replaced by the best healthy spare (4).
    probed = probe_all(selector, NOW + 62, {1: 0.030, 2: None})
    assert sorted(probed) == [1, 2]
    assert chosen(selector) == [4, 1]
    # A much faster spare (less than half the worst chosen score) does displace the worst.
    selector.add_candidates([candidate(5)], NOW + 63)
    # (4, chosen now, is due for its recheck too: last checked at +31.)
    assert sorted(probe_all(selector, NOW + 63, {5: 0.010, 4: 0.025})) == [4, 5]
    assert chosen(selector) == [5, 4]
    assert selector.state_of(bytes([2]) * 32) is CandidateState.FAILED
    # Backoff: 2 is retried after 60 s, then 120 s after a second failure.
    assert 2 not in probe_all(selector, NOW + 100, {5: 0.01, 4: 0.025})
    assert 2 in probe_all(selector, NOW + 122, {2: None, 5: 0.01, 4: 0.025})
    assert 2 not in probe_all(selector, NOW + 200, {5: 0.01, 4: 0.025})
    assert 2 in probe_all(selector, NOW + 243, {2: 0.015, 5: 0.01, 4: 0.025})
    assert chosen(selector) == [5, 4]  # 2 is healthy again, but not better enough to switch


def test_in_flight_bound_and_probing_state() -> None:
    selector = RelaySelector(SelectorConfig(max_in_flight=2))
    selector.add_candidates([candidate(n, load=n) for n in range(1, 6)], NOW)
    first = selector.probes_due(NOW)
    assert [c.owner[0] for c in first] == [1, 2]  # least loaded untested first
    assert selector.probes_due(NOW) == []  # two in flight already
    assert selector.state_of(first[0].owner) is CandidateState.PROBING
    selector.probe_succeeded(first[0].owner, 0.01, NOW)
    assert [c.owner[0] for c in selector.probes_due(NOW)] == [3]


def test_candidates_are_bounded_and_expired_adverts_forgotten() -> None:
    selector = RelaySelector(SelectorConfig(max_candidates=4, max_in_flight=8))
    selector.add_candidates([candidate(1), candidate(2)], NOW)
    probe_all(selector, NOW, {1: 0.01, 2: 0.02})
    selector.add_candidates([candidate(n) for n in range(3, 20)], NOW)
    assert len(selector) == 4
    assert chosen(selector) == [1, 2]  # the chosen ones are never the ones forgotten
    short = RelayCandidate(bytes([1]) * 32, advert(), 2, int(NOW) + 10)
    selector.add_candidates([short], NOW)  # newer seq, shorter life
    selector.probes_due(NOW + 11)
    assert chosen(selector) == [2]
    assert len(selector) == 3


def test_rediscovery_when_short_and_interval_elapsed() -> None:
    selector = RelaySelector(SelectorConfig(rediscover_interval=300.0))
    selector.add_candidates([candidate(1)], NOW)
    probe_all(selector, NOW, {1: None})
    assert not selector.needs_discovery(NOW + 299)
    assert selector.needs_discovery(NOW + 300)
    selector.add_candidates([candidate(2), candidate(3)], NOW + 300)
    assert not selector.needs_discovery(NOW + 300)


def test_a_discovery_that_found_nothing_is_retried_soon_then_less_often() -> None:
    """A node started before any supernode advertised must not wait 300 s for one."""
    selector = RelaySelector(SelectorConfig(rediscover_interval=300.0, empty_rediscover=5.0))
    assert selector.needs_discovery(NOW)
    now = NOW
    waits = []
    for _ in range(8):
        selector.add_candidates([], now)
        deadline = selector.next_deadline()
        assert deadline is not None
        waits.append(deadline - now)
        assert not selector.needs_discovery(deadline - 0.01)
        assert selector.needs_discovery(deadline)
        now = deadline
    assert waits == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    selector.add_candidates([candidate(1)], now)  # found one: back to the full interval
    probe_all(selector, now, {1: 0.01})
    assert not selector.needs_discovery(now + 299)
    assert selector.needs_discovery(now + 300)


def test_dial_back_servers_healthy_first_never_failed_one_per_supernode() -> None:
    selector = RelaySelector(SelectorConfig(max_in_flight=8))
    selector.add_candidates(
        [candidate(n, stun=n != 4) for n in range(1, 7)], NOW
    )  # 4 advertises no dial-back server
    assert [a[1] for a in selector.dial_back_servers()] == [4001, 4002, 4003, 4005, 4006]
    probe_all(selector, NOW, {1: 0.030, 2: None, 3: 0.010, 4: 0.001, 5: 0.020, 6: 0.040})
    # healthy by RTT (3, 5, 1, 6); 2 failed its health check; 4 has none to offer
    assert [a[1] for a in selector.dial_back_servers()] == [4003, 4005, 4001, 4006]
    assert [a[1] for a in selector.dial_back_servers(limit=2)] == [4003, 4005]


def test_too_few_dial_back_servers_means_rediscovery_even_with_two_relays_chosen() -> None:
    config = SelectorConfig(max_in_flight=8, rediscover_interval=300.0, min_dial_back=3)
    selector = RelaySelector(config)
    selector.add_candidates([candidate(1, stun=True), candidate(2, stun=True)], NOW)
    probe_all(selector, NOW, {1: 0.01, 2: 0.02})
    assert chosen(selector) == [1, 2]
    assert not selector.needs_discovery(NOW + 299)
    assert selector.needs_discovery(NOW + 300)  # two relays suffice; two voters do not
    selector.add_candidates([candidate(3, stun=True)], NOW + 300)
    assert not selector.needs_discovery(NOW + 900)
    # without the wish, two chosen relays end the search
    plain = RelaySelector(SelectorConfig(max_in_flight=8, rediscover_interval=300.0))
    plain.add_candidates([candidate(1, stun=True), candidate(2, stun=True)], NOW)
    probe_all(plain, NOW, {1: 0.01, 2: 0.02})
    assert not plain.needs_discovery(NOW + 900)


def test_newer_advert_updates_load_used_for_new_choices() -> None:
    selector = RelaySelector(SelectorConfig(keep=1, max_in_flight=8))
    selector.add_candidates([candidate(1, load=10)], NOW)
    probe_all(selector, NOW, {1: 0.01})
    assert chosen(selector) == []  # full
    selector.add_candidates([candidate(1, load=3, seq=2)], NOW + 1)
    assert chosen(selector) == [1]


def test_random_walk_keeps_invariants() -> None:
    """Seeded random inputs: never more than keep chosen, chosen are healthy and known."""
    rng = random.Random(7)
    selector = RelaySelector(SelectorConfig(max_candidates=8, max_in_flight=3))
    now = NOW
    for _ in range(2000):
        now += rng.choice([0.0, 1.0, 10.0, 60.0])
        action = rng.random()
        if action < 0.2:
            selector.add_candidates(
                [candidate(rng.randrange(1, 20), load=rng.randrange(0, 12), seq=rng.randrange(5))],
                now,
            )
        else:
            for c in selector.probes_due(now):
                if rng.random() < 0.7:
                    selector.probe_succeeded(c.owner, rng.random(), now)
                else:
                    selector.probe_failed(c.owner, now)
        picked = selector.chosen()
        assert len(picked) <= 2
        assert len(selector) <= 8
        assert len({c.owner for c in picked}) == len(picked)
        for c in picked:
            assert selector.state_of(c.owner) in (CandidateState.HEALTHY, CandidateState.PROBING)


# -- the STUN probe, against a real socket on loopback ---------------------------------


class _Binding(asyncio.DatagramProtocol):
    def __init__(self, answer_after: int = 0) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.seen = 0
        self.answer_after = answer_after

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen += 1
        if self.seen <= self.answer_after:
            return  # lose the first requests: the client must retransmit
        try:
            request = decode_message(data)
        except StunDecodeError:
            return
        assert self.transport is not None
        local = self.transport.get_extra_info("sockname")
        self.transport.sendto(encode_message(handle_binding(request, addr, local)), addr)


def test_stun_probe_udp_measures_rtt_and_survives_loss() -> None:
    asyncio.run(_stun_probe_udp_measures_rtt_and_survives_loss())


async def _stun_probe_udp_measures_rtt_and_survives_loss() -> None:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: _Binding(answer_after=1), local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        rtt = await stun_probe("udp", ("127.0.0.1", port), time_budget=3.0, attempts=3)
        assert rtt is not None and rtt > 0
        assert server.seen == 2  # the first request was lost, the retransmit answered
    finally:
        transport.close()


def test_stun_probe_udp_gives_none_when_nobody_answers() -> None:
    asyncio.run(_stun_probe_udp_gives_none_when_nobody_answers())


async def _stun_probe_udp_gives_none_when_nobody_answers() -> None:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: _Binding(answer_after=99), local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        assert await stun_probe("udp", ("127.0.0.1", port), time_budget=0.3, attempts=2) is None
        assert server.seen == 2
    finally:
        transport.close()


def test_stun_probe_tcp() -> None:
    asyncio.run(_stun_probe_tcp())


async def _stun_probe_tcp() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(20)
        body = await reader.readexactly(int.from_bytes(header[2:4], "big"))
        peer = writer.get_extra_info("peername")
        response = handle_binding(decode_message(header + body), peer, ("127.0.0.1", 1))
        writer.write(encode_message(response))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        assert await stun_probe("tcp", ("127.0.0.1", port)) is not None
    # Closed port: connection refused is "no answer", not an exception.
    assert await stun_probe("tcp", ("127.0.0.1", port), time_budget=1.0) is None


# -- the finder over an in-memory record table ------------------------------------------


def test_finder_discovers_checks_and_keeps_two() -> None:
    asyncio.run(_finder_discovers_checks_and_keeps_two())


async def _finder_discovers_checks_and_keeps_two() -> None:
    identities = [Identity.generate(bytes([i]) * 32) for i in range(1, 5)]
    table: dict[bytes, list[SignedRecord]] = {}
    for i, ident in enumerate(identities):
        bucket = relay_bucket(ident.node_id)
        payload = encode_relay_advert(advert(port=4000 + i))
        table.setdefault(relay_key(bucket), []).append(
            signed(ident, payload, subject=relay_subject(bucket))
        )
    fetched: list[bytes] = []

    async def fetch(key: bytes) -> Sequence[SignedRecord]:
        fetched.append(key)
        if key == relay_key(0):
            raise OSError("this bucket's storers are down")
        return table.get(key, [])

    rtts = {4000: 0.03, 4001: None, 4002: 0.01, 4003: 0.02}

    async def probe(transport: str, address: tuple[str, int]) -> float | None:
        assert transport == "udp"
        return rtts[address[1]]

    finder = RelayFinder(fetch, probe=probe, own_key=identities[3].public_key, clock=lambda: NOW)
    learnt = await finder.discover(range(RELAY_BUCKETS))
    assert learnt == 3  # own advert excluded; bucket 0's failure is survived
    picked = await finder.refresh()
    assert [c.advert.udp[0][1] for c in picked] == [4002, 4000]
    assert len(fetched) == RELAY_BUCKETS


async def _finder_run_loop_keeps_relays_fresh_until_stopped() -> None:
    ident = Identity.generate(bytes([7]) * 32)
    bucket = relay_bucket(ident.node_id)
    record = signed(ident, encode_relay_advert(advert(port=4100)), subject=relay_subject(bucket))
    probes: list[tuple[str, int]] = []

    async def fetch(key: bytes) -> Sequence[SignedRecord]:
        return [record] if key == relay_key(bucket) else []

    async def probe(transport: str, address: tuple[str, int]) -> float | None:
        probes.append(address)
        return 0.01

    clock = [NOW]
    finder = RelayFinder(
        fetch,
        probe=probe,
        config=SelectorConfig(keep=1, recheck_interval=0.02),
        buckets_per_fetch=RELAY_BUCKETS,
        clock=lambda: clock[0],
    )
    stop = asyncio.Event()
    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        group.create_task(finder.run(stop))
        for _ in range(200):
            await asyncio.sleep(0.01)
            clock[0] += 0.01
            if len(probes) >= 3:
                break
        stop.set()
    assert [c.owner for c in finder.chosen()] == [ident.public_key]
    assert len(probes) >= 3  # the chosen relay is re-checked on schedule


def test_finder_run_loop_keeps_relays_fresh_until_stopped() -> None:
    asyncio.run(_finder_run_loop_keeps_relays_fresh_until_stopped())
