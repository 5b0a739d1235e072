"""RFC 3261 §17 transactions in virtual time: timer schedules, tables, a lossy seeded link."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest

from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.message import Header, SipMessage, SipRequest, SipResponse, build_response
from p2pnode.gateways.sip.parser import parse_datagram, serialize
from p2pnode.gateways.sip.transaction import (
    TABLES,
    Address,
    ClientKey,
    Effect,
    RequestReceived,
    ResponseReceived,
    ServerKey,
    StrayAck,
    Terminated,
    TimedOut,
    Transaction,
    TransactionStateError,
    Transmit,
    TxInput,
    TxState,
)
from p2pnode.gateways.sip.transaction_layer import TransactionLayer

UAC: Address = ("192.0.2.1", 5060)
UAS: Address = ("192.0.2.2", 5060)
BOB = SipUri("sip", "bob", None, "192.0.2.2", None)


def request(method: str, branch: str, *, cseq: int = 1) -> SipRequest:
    return SipRequest.build(
        method,
        BOB,
        (
            Header("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{branch};rport"),
            Header("Max-Forwards", "70"),
            Header("From", "<sip:alice@example.com>;tag=a1"),
            Header("To", "<sip:bob@example.com>"),
            Header("Call-ID", f"call-{branch}"),
            Header("CSeq", f"{cseq} {method}"),
            Header("Route", "<sip:proxy.example.com;lr>"),
            Header("Content-Length", "0"),
        ),
        b"",
    )


def new_key(effects: list[Effect]) -> ServerKey:
    """The key of the server transaction a new request created."""
    assert isinstance(effects[0], RequestReceived)
    return effects[0].key


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, Effect]]:
    """Advance to every deadline up to ``until``; effects stamped with their time."""
    timeline: list[tuple[float, Effect]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        timeline += [(deadline, effect) for effect in layer.advance(deadline)]
    return timeline


def transmit_times(timeline: list[tuple[float, Effect]]) -> list[float]:
    return [when for when, effect in timeline if isinstance(effect, Transmit)]


def test_client_invite_timer_a_doubles_and_timer_b_times_out() -> None:
    layer = TransactionLayer()
    key, effects = layer.send_request(request("INVITE", "ia"), UAS, 0.0, reliable=False)
    assert [type(effect) for effect in effects] == [Transmit]
    timeline = run_timers(layer, 100.0)
    assert transmit_times(timeline) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [(when, type(e)) for when, e in timeline if not isinstance(e, Transmit)] == [
        (32.0, TimedOut),
        (32.0, Terminated),
    ]
    assert layer.state(key) is TxState.TERMINATED


def test_client_non_invite_timer_e_caps_at_t2_and_faster_in_proceeding() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(request("OPTIONS", "ne"), UAS, 0.0, reliable=False)
    timeline = run_timers(layer, 100.0)
    assert transmit_times(timeline) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [type(e) for _, e in timeline if not isinstance(e, Transmit)] == [TimedOut, Terminated]

    layer = TransactionLayer()
    key, _ = layer.send_request(request("OPTIONS", "np"), UAS, 0.0, reliable=False)
    run_timers(layer, 0.6)  # one retransmission (at 0.5, next at 1.5)
    trying = build_response(request("OPTIONS", "np"), 100, "Trying")
    assert [type(e) for e in layer.receive(trying, UAS, 0.7, reliable=False)] == [ResponseReceived]
    assert layer.state(key) is TxState.PROCEEDING
    # §17.1.2.2: in Proceeding the retransmission interval is T2.
    assert transmit_times(run_timers(layer, 10.0)) == [1.5, 5.5, 9.5]


def test_reliable_transports_do_not_retransmit() -> None:
    layer = TransactionLayer()
    layer.send_request(request("INVITE", "ra"), UAS, 0.0, reliable=True)
    timeline = run_timers(layer, 100.0)
    assert transmit_times(timeline) == []
    assert [(when, type(e)) for when, e in timeline] == [(32.0, TimedOut), (32.0, Terminated)]


def test_client_invite_failure_acks_once_per_response_and_waits_timer_d() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", "f1", cseq=7)
    key, _ = layer.send_request(invite, UAS, 0.0, reliable=False)
    busy = build_response(invite, 486, "Busy Here", to_tag="b9")
    effects = layer.receive(busy, UAS, 0.2, reliable=False)
    assert [type(e) for e in effects] == [Transmit, ResponseReceived]
    ack = effects[0]
    assert isinstance(ack, Transmit) and isinstance(ack.message, SipRequest)
    assert ack.message.method == "ACK" and ack.destination == UAS
    assert ack.message.uri == invite.uri
    assert ack.message.top_via == invite.top_via  # same branch: same transaction
    assert ack.message.to.tag == "b9"
    assert (ack.message.cseq.number, ack.message.cseq.method) == (7, "ACK")
    assert ack.message.routes == invite.routes
    # A retransmitted final response is answered with the ACK again, not passed up.
    assert layer.receive(busy, UAS, 0.6, reliable=False) == [Transmit(ack.message, UAS)]
    timeline = run_timers(layer, 100.0)
    assert [(when, type(e)) for when, e in timeline] == [(32.2, Terminated)]
    assert layer.state(key) is TxState.TERMINATED


def test_client_invite_2xx_is_accepted_and_retransmissions_reach_the_tu() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", "ok")
    key, _ = layer.send_request(invite, UAS, 0.0, reliable=False)
    ok = build_response(invite, 200, "OK", to_tag="t")
    assert [type(e) for e in layer.receive(ok, UAS, 0.1, reliable=False)] == [ResponseReceived]
    assert layer.state(key) is TxState.ACCEPTED  # RFC 6026 §7.2
    assert [type(e) for e in layer.receive(ok, UAS, 1.0, reliable=False)] == [ResponseReceived]
    assert [(when, type(e)) for when, e in run_timers(layer, 100.0)] == [(32.1, Terminated)]


def test_server_invite_failure_retransmits_with_timer_g_until_h() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", "sg")
    effects = layer.receive(invite, UAC, 0.0, reliable=False)
    assert [type(e) for e in effects] == [RequestReceived, Transmit]  # 100 Trying at once
    received = effects[0]
    assert isinstance(received, RequestReceived)
    trying = effects[1]
    assert isinstance(trying, Transmit) and isinstance(trying.message, SipResponse)
    assert trying.message.status == 100
    # The INVITE retransmitted: the last provisional goes out again, the TU hears nothing.
    assert layer.receive(invite, UAC, 0.4, reliable=False) == [trying]
    final = build_response(invite, 603, "Decline", to_tag="d")
    layer.respond(received.key, final, 1.0)
    timeline = run_timers(layer, 100.0)
    assert transmit_times(timeline) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert [(when, type(e)) for when, e in timeline if not isinstance(e, Transmit)] == [
        (33.0, TimedOut),
        (33.0, Terminated),
    ]


def test_server_invite_ack_confirms_then_timer_i_terminates() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", "si")
    received = layer.receive(invite, UAC, 0.0, reliable=False)[0]
    assert isinstance(received, RequestReceived)
    final = build_response(invite, 486, "Busy Here", to_tag="x")
    layer.respond(received.key, final, 0.1)
    client = TransactionLayer()
    client.send_request(invite, UAS, 0.0, reliable=False)
    ack = client.receive(final, UAS, 0.2, reliable=False)[0]
    assert isinstance(ack, Transmit) and isinstance(ack.message, SipRequest)
    assert layer.receive(ack.message, UAC, 0.3, reliable=False) == []
    assert layer.state(received.key) is TxState.CONFIRMED
    assert layer.receive(ack.message, UAC, 0.4, reliable=False) == []  # absorbed
    assert [(when, type(e)) for when, e in run_timers(layer, 100.0)] == [(5.3, Terminated)]


def test_server_invite_2xx_accepted_passes_acks_up() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", "s2")
    received = layer.receive(invite, UAC, 0.0, reliable=False)[0]
    assert isinstance(received, RequestReceived)
    ok = build_response(invite, 200, "OK", to_tag="t")
    assert layer.respond(received.key, ok, 0.1) == [Transmit(ok, UAC)]
    assert layer.state(received.key) is TxState.ACCEPTED
    ack = SipRequest.build(
        "ACK",
        BOB,
        tuple(
            Header(h.name, "1 ACK" if h.name == "CSeq" else h.value)
            for h in invite.headers
            if h.name != "Route"
        ),
        b"",
    )
    assert [type(e) for e in layer.receive(ack, UAC, 0.2, reliable=False)] == [StrayAck]
    assert [(when, type(e)) for when, e in run_timers(layer, 100.0)] == [(32.1, Terminated)]


def test_server_non_invite_absorbs_then_replays_final_and_timer_j() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", "sn")
    received = layer.receive(options, UAC, 0.0, reliable=False)
    assert [type(e) for e in received] == [RequestReceived]
    key = new_key(received)
    assert layer.receive(options, UAC, 0.5, reliable=False) == []  # Trying: absorbed
    ok = build_response(options, 200, "OK", to_tag="t")
    layer.respond(key, ok, 0.6)
    assert layer.receive(options, UAC, 1.5, reliable=False) == [Transmit(ok, UAC)]
    assert [(when, type(e)) for when, e in run_timers(layer, 100.0)] == [(32.6, Terminated)]


def test_responses_go_to_the_source_port_only_with_rport() -> None:
    layer = TransactionLayer()
    with_rport = request("OPTIONS", "rp")
    source = ("198.51.100.7", 40000)
    key = new_key(layer.receive(with_rport, source, 0.0, reliable=False))
    ok = build_response(with_rport, 200, "OK")
    assert layer.respond(key, ok, 0.1) == [Transmit(ok, source)]
    plain = SipRequest.build(
        "OPTIONS",
        BOB,
        tuple(
            Header("Via", "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKnr") if h.name == "Via" else h
            for h in with_rport.headers
        ),
        b"",
    )
    key = new_key(layer.receive(plain, source, 0.0, reliable=False))
    ok = build_response(plain, 200, "OK")
    assert layer.respond(key, ok, 0.1) == [Transmit(ok, ("198.51.100.7", 5070))]


def test_transactions_are_bounded_and_overflow_is_refused_with_503() -> None:
    layer = TransactionLayer(max_transactions=2)
    layer.receive(request("OPTIONS", "b1"), UAC, 0.0, reliable=False)
    layer.receive(request("OPTIONS", "b2"), UAC, 0.0, reliable=False)
    (refusal,) = layer.receive(request("OPTIONS", "b3"), UAC, 0.0, reliable=False)
    assert isinstance(refusal, Transmit) and isinstance(refusal.message, SipResponse)
    assert refusal.message.status == 503 and refusal.message.header("Retry-After") == "5"
    assert layer.statistics().servers == 2 and layer.statistics().refused_overload == 1
    with pytest.raises(OverflowError):
        layer.send_request(request("OPTIONS", "b4"), UAS, 0.0, reliable=False)


def test_tu_misuse_is_an_error_not_a_silent_drop() -> None:
    layer = TransactionLayer()
    received = layer.receive(request("OPTIONS", "tu"), UAC, 0.0, reliable=False)[0]
    assert isinstance(received, RequestReceived)
    ok = build_response(request("OPTIONS", "tu"), 200, "OK")
    layer.respond(received.key, ok, 0.1)
    with pytest.raises(TransactionStateError):
        layer.respond(received.key, ok, 0.2)  # a second final response
    with pytest.raises(ValueError, match="branch"):
        layer.send_request(request("ACK", "x"), UAS, 0.0, reliable=False)


def _message_for(event: TxInput, invite: SipRequest) -> SipMessage | None:
    if event in (TxInput.PROVISIONAL, TxInput.TU_PROVISIONAL):
        return build_response(invite, 180, "Ringing", to_tag="t")
    if event in (TxInput.SUCCESS, TxInput.TU_SUCCESS):
        return build_response(invite, 200, "OK", to_tag="t")
    if event in (TxInput.FAILURE, TxInput.TU_FAILURE):
        return build_response(invite, 486, "Busy Here", to_tag="t")
    if event in (TxInput.REQUEST, TxInput.ACK):
        return invite
    return None


@pytest.mark.parametrize("machine", sorted(TABLES))
def test_every_state_input_pair_is_defined_or_refused(machine: str) -> None:
    """Walk the whole (state, input) square of each machine."""
    table = TABLES[machine]
    invite = request("INVITE" if "non" not in machine else "OPTIONS", "walk")
    for state in TxState:
        for event in TxInput:
            tx = Transaction(
                key=ClientKey("z9hG4bKw", "INVITE")
                if machine.startswith("client")
                else ServerKey("z9hG4bKw", UAC, "INVITE"),
                request=invite,
                peer=UAS,
                reliable=False,
                timers=TransactionLayer().timers,
                state=state,
                table=table,
                intervals={timer: 0.5 for timer in TxInput},
                last_response=build_response(invite, 180, "Ringing"),
                ack=invite,
            )
            message = _message_for(event, invite)
            if (state, event) in table:
                effects = tx.handle(event, 1.0, message)
                assert all(not isinstance(effect, RequestReceived) for effect in effects)
            else:
                with pytest.raises(TransactionStateError):
                    tx.handle(event, 1.0, message)
    assert not any(state is TxState.TERMINATED for state, _ in table)


@dataclass(order=True)
class _Delivery:
    when: float
    order: int
    to_server: bool = field(compare=False)
    data: bytes = field(compare=False)


@dataclass
class _Tally:
    finals_at_client: int = 0
    timeouts_at_client: int = 0
    requests_at_server: int = 0
    effects: list[Effect] = field(default_factory=list)


def lossy_exchange(seed: int, method: str, status: int, loss: float) -> _Tally:
    """One transaction across a lossy, jittery link; the UAS answers at once."""
    rng = random.Random(seed)
    client, server = TransactionLayer(), TransactionLayer()
    tally = _Tally()
    queue: list[_Delivery] = []
    order = 0

    def emit(effects: list[Effect], now: float, from_client: bool) -> None:
        nonlocal order
        for effect in effects:
            tally.effects.append(effect)
            if isinstance(effect, Transmit):
                if rng.random() < loss:
                    continue
                order += 1
                delay = rng.uniform(0.01, 0.2)
                heapq.heappush(
                    queue, _Delivery(now + delay, order, from_client, serialize(effect.message))
                )
            elif isinstance(effect, ResponseReceived) and effect.response.status >= 200:
                tally.finals_at_client += 1
            elif isinstance(effect, TimedOut) and from_client:
                tally.timeouts_at_client += 1
            elif isinstance(effect, RequestReceived):
                tally.requests_at_server += 1
                reply = build_response(effect.request, status, "Reply", to_tag="srv")
                emit(server.respond(effect.key, reply, now), now, from_client=False)

    outgoing = request(method, f"lossy{seed}")
    _, effects = client.send_request(outgoing, UAS, 0.0, reliable=False)
    emit(effects, 0.0, from_client=True)
    now = 0.0
    for _ in range(10_000):
        candidates = [d for d in (client.next_deadline(), server.next_deadline()) if d is not None]
        if queue:
            candidates.append(queue[0].when)
        if not candidates:
            break
        now = min(candidates)
        emit(client.advance(now), now, from_client=True)
        emit(server.advance(now), now, from_client=False)
        while queue and queue[0].when <= now:
            delivery = heapq.heappop(queue)
            message = parse_datagram(delivery.data)
            if delivery.to_server:
                emit(server.receive(message, UAC, now, reliable=False), now, from_client=False)
            else:
                emit(client.receive(message, UAS, now, reliable=False), now, from_client=True)
    assert client.statistics().clients == 0 and server.statistics().servers == 0
    assert now < 100.0  # every transaction ended within its timers
    return tally


@pytest.mark.parametrize(("method", "status"), [("OPTIONS", 200), ("INVITE", 486), ("BYE", 481)])
def test_lossy_link_exactly_once_to_each_tu(method: str, status: int) -> None:
    completed = 0
    for seed in range(40):
        tally = lossy_exchange(seed, method, status, loss=0.3)
        assert tally.requests_at_server <= 1  # retransmissions never reach the UAS twice
        if status < 300 and method == "INVITE":
            # 2xx retransmissions are the UAS core's job (§13.3.1.4); one may reach the UAC.
            assert tally.finals_at_client <= 1
        else:
            assert tally.finals_at_client <= 1
        assert tally.finals_at_client + tally.timeouts_at_client == 1
        completed += tally.finals_at_client
    # With 30 % loss each way, a transaction fails only if ~10 retransmissions all
    # lose: at least 36 of 40 must complete (typically all 40 do).
    assert completed >= 36


def test_lossless_link_always_completes() -> None:
    for seed in range(10):
        tally = lossy_exchange(seed, "INVITE", 486, loss=0.0)
        assert (tally.finals_at_client, tally.requests_at_server) == (1, 1)


def test_many_transactions_fire_in_deadline_order_and_leave_nothing_behind() -> None:
    layer = TransactionLayer(max_transactions=5000)
    for index in range(1000):
        layer.send_request(request("OPTIONS", f"m{index}"), UAS, index * 0.01, reliable=True)
    assert layer.next_deadline() == 32.0  # Timer F of the first one (reliable: no Timer E)
    fired = run_timers(layer, 1000.0)
    timeouts = [when for when, effect in fired if isinstance(effect, TimedOut)]
    assert len(timeouts) == 1000 and timeouts == sorted(timeouts)
    assert timeouts[-1] == pytest.approx(32.0 + 999 * 0.01)
    assert layer.statistics().clients == 0 and layer.next_deadline() is None


NETWORK_INPUTS = {
    "client-invite": (TxInput.PROVISIONAL, TxInput.SUCCESS, TxInput.FAILURE),
    "client-non-invite": (TxInput.PROVISIONAL, TxInput.SUCCESS, TxInput.FAILURE),
    "server-invite": (TxInput.REQUEST, TxInput.ACK),
    "server-non-invite": (TxInput.REQUEST,),
}


@pytest.mark.parametrize("machine", sorted(TABLES))
def test_network_input_is_defined_in_every_live_state(machine: str) -> None:
    """Whatever a peer sends, a live transaction has an entry for it (often: absorb)."""
    table = TABLES[machine]
    states = {state for state, _ in table}
    for state in states:
        for event in NETWORK_INPUTS[machine]:
            assert (state, event) in table, (machine, state, event)
