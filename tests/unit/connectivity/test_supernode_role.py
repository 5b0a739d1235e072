"""The supernode role controller: decisions in virtual time, the allocation gate, and the
controller's actions on a real relay and DHT node with only the clock injected."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from aioice import stun as aioice_stun
from aioice.turn import create_turn_endpoint

from nat.reachability import Reachability
from nat.stun import (
    ErrorCode,
    StunClass,
    StunMessage,
    StunMethod,
    decode_message,
    encode_message,
)
from nat.stun.attributes import Lifetime, Nonce, Realm, RequestedTransport, Username
from nat.stun.message import long_term_key
from p2pnode.connectivity.relay_advert import decode_relay_advert
from p2pnode.connectivity.relays import relay_bucket, relay_key
from p2pnode.connectivity.supernode import AllocationGate, Supernode, SupernodeConfig
from p2pnode.connectivity.verdicts import Verdict, fixed_verdict
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from relay.allocation import FiveTuple, Transport
from relay.auth import static_users
from relay.messages import OpenRelay, ToClient
from relay.server import TurnConfig, TurnServer
from relay.supernode import Action, Event, Hysteresis, Role, RoleCore

NOW = 1_800_000_000.0
PUBLIC = Verdict(Reachability.PUBLIC, "127.0.0.1", "test")
NATTED = Verdict(Reachability.BEHIND_NAT, "10.0.0.2", "test")
UNKNOWN = Verdict(Reachability.UNKNOWN, None, "no servers")


def core(**hysteresis: float) -> RoleCore:
    return RoleCore(Hysteresis(**hysteresis), capacity=10, drain_limit=100.0, now=NOW)  # type: ignore[arg-type]


def role_of(c: RoleCore) -> Role:
    """The role now (a call, so mypy does not keep an earlier assert's narrowing)."""
    return c.role


def verdict(c: RoleCore, v: Verdict, now: float) -> tuple[Action, ...]:
    return c.verdict(v.status, v.detail, now)


# -- the decision core in virtual time ------------------------------------------------


def test_promotion_needs_consecutive_public_verdicts_and_unknown_never_promotes() -> None:
    c = core(promote_after=3)
    assert verdict(c, UNKNOWN, NOW) == ()
    assert role_of(c) is Role.CLIENT
    assert c.reason == "reachability unknown: no servers"
    assert verdict(c, PUBLIC, NOW + 1) == ()
    assert role_of(c) is Role.CANDIDATE
    assert "1 of 3 needed" in c.reason
    assert verdict(c, PUBLIC, NOW + 2) == ()
    assert "2 of 3 needed" in c.reason
    actions = verdict(c, PUBLIC, NOW + 3)
    assert actions == (Action.START_ROLES, Action.ACCEPT_ALLOCATIONS, Action.PUBLISH_ADVERT)
    assert role_of(c) is Role.SUPERNODE and c.since == NOW + 3
    assert "3 in a row" in c.reason


def test_a_flapping_verdict_never_promotes() -> None:
    c = core(promote_after=2)
    for i in range(20):
        verdict(c, PUBLIC if i % 2 == 0 else NATTED, NOW + i)
        assert c.role in (Role.CLIENT, Role.CANDIDATE)


def test_opt_out_wins_and_is_explained() -> None:
    c = core()
    c.feed(Event.OPT_OUT, NOW, "--no-relay")
    assert role_of(c) is Role.OPTED_OUT
    assert c.reason.endswith("--no-relay")
    for i in range(10):
        assert verdict(c, PUBLIC, NOW + i) == ()
    assert role_of(c) is Role.OPTED_OUT


def promoted(**hysteresis: float) -> RoleCore:
    c = core(promote_after=2, **hysteresis)
    verdict(c, PUBLIC, NOW)
    verdict(c, PUBLIC, NOW)
    assert role_of(c) is Role.SUPERNODE
    return c


def test_load_sheds_at_capacity_and_recovers_below_the_low_water_mark() -> None:
    c = promoted(load_low=0.8)
    assert c.load(9, NOW) == ()
    assert c.load(10, NOW) == (Action.REFUSE_ALLOCATIONS, Action.PUBLISH_ADVERT)
    assert role_of(c) is Role.SHEDDING and "10 of 10" in c.reason
    assert c.load(9, NOW) == ()  # between the marks: still shedding, no flapping
    assert c.load(8, NOW) == ()
    assert c.load(7, NOW) == (Action.ACCEPT_ALLOCATIONS, Action.PUBLISH_ADVERT)
    assert role_of(c) is Role.SUPERNODE


def test_drain_ends_when_empty_or_at_the_time_limit() -> None:
    c = promoted(demote_after=1)
    assert verdict(c, NATTED, NOW + 10) == (Action.REFUSE_ALLOCATIONS, Action.WITHDRAW_ADVERT)
    assert role_of(c) is Role.DRAINING
    assert c.drain(3, NOW + 50) == ()
    assert c.drain(3, NOW + 109) == ()
    assert c.drain(3, NOW + 110) == (Action.STOP_ROLES,)
    assert role_of(c) is Role.CLIENT and "3 allocations cut" in c.reason
    d = promoted(demote_after=1)
    verdict(d, NATTED, NOW)
    assert d.drain(0, NOW + 1) == (Action.STOP_ROLES,)
    assert role_of(d) is Role.CLIENT
    assert d.drain(0, NOW + 2) == ()  # not draining any more: nothing to do


def test_random_walk_never_stops_roles_with_the_gate_open() -> None:
    """Seeded random inputs: roles only stop from a draining role, after REFUSE."""
    rng = random.Random(3)
    c = core(promote_after=2, demote_after=2)
    running = accepting = False
    now = NOW
    for _ in range(3000):
        now += rng.choice([0.0, 1.0, 50.0])
        pick = rng.random()
        if pick < 0.5:
            actions = verdict(c, rng.choice([PUBLIC, NATTED, UNKNOWN]), now)
        elif pick < 0.8:
            actions = c.load(rng.randrange(0, 13), now)
        else:
            actions = c.drain(rng.randrange(0, 2), now)
        for action in actions:
            if action is Action.START_ROLES:
                assert not running
                running = True
            elif action is Action.STOP_ROLES:
                assert running and not accepting
                running = False
            elif action is Action.ACCEPT_ALLOCATIONS:
                accepting = True
            elif action is Action.REFUSE_ALLOCATIONS:
                accepting = False
        assert accepting <= running


# -- the gate in front of the TURN core (sans-IO) -----------------------------------------


def allocate_request(transaction_id: bytes) -> bytes:
    message = StunMessage(
        StunMethod.ALLOCATE,
        StunClass.REQUEST,
        transaction_id,
        (RequestedTransport(17), Lifetime(600)),
    )
    return encode_message(message)


def test_closed_gate_answers_508_to_new_allocations_inside_the_core() -> None:
    gate = AllocationGate()
    config = TurnConfig(
        realm="r", credentials=static_users({"u": "p"}), relay_ip="127.0.0.1", admission=gate
    )
    server = TurnServer(config, random.Random(1), NOW)
    client = FiveTuple(Transport.UDP, ("198.51.100.7", 5000), ("127.0.0.1", 3478))
    # Unauthenticated: the core asks for credentials (401) whatever the gate says.
    gate.accepting = False
    (challenge,) = server.handle_client(client, allocate_request(b"a" * 12), NOW)
    assert isinstance(challenge, ToClient)
    error = decode_message(challenge.data).get(ErrorCode)
    assert error is not None and error.code == 401
    assert gate.refused == 0
    # Authenticated while closed: 508 from the core's own response path, integrity-protected.
    closed = _authenticated_allocate(server, client, challenge.data, b"b" * 12)
    assert closed.transaction_id == b"b" * 12 and closed.cls is StunClass.ERROR
    error = closed.get(ErrorCode)
    assert error is not None and error.code == 508
    assert gate.refused == 1 and server.statistics().refused(508) == 1
    # Open again: the same client gets its allocation.
    gate.accepting = True
    opened = _authenticated_allocate(server, client, challenge.data, b"c" * 12)
    assert opened.cls is StunClass.SUCCESS
    # Binding never meets the gate.
    binding = encode_message(StunMessage(StunMethod.BINDING, StunClass.REQUEST, b"d" * 12))
    (answer,) = server.handle_client(client, binding, NOW)
    assert isinstance(answer, ToClient)
    assert decode_message(answer.data).cls is StunClass.SUCCESS


def _authenticated_allocate(
    server: TurnServer, client: FiveTuple, challenge: bytes, transaction_id: bytes
) -> StunMessage:
    """An Allocate with the long-term credential (RFC 8489 §9.2) answering ``challenge``."""
    asked = decode_message(challenge)
    realm, nonce = asked.get(Realm), asked.get(Nonce)
    assert realm is not None and nonce is not None
    key = long_term_key("u", realm.value, "p")
    message = StunMessage(
        StunMethod.ALLOCATE,
        StunClass.REQUEST,
        transaction_id,
        (RequestedTransport(17), Lifetime(600), Username("u"), realm, nonce),
    )
    outputs = server.handle_client(client, encode_message(message, integrity_key=key), NOW)
    answers = [o for o in outputs if isinstance(o, ToClient)]
    if not answers:  # the runner opens the relayed socket first, then the core answers
        (opening,) = outputs
        assert isinstance(opening, OpenRelay)
        opened = server.relay_opened(client, opening.address, NOW)
        answers = [o for o in opened if isinstance(o, ToClient)]
    return decode_message(answers[0].data)


# -- the controller on a real relay and DHT node, only the clock injected ----------------------


class Clock:
    """Virtual time near the real one: the DHT refuses records issued in its future."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


async def _opted_out_never_serves() -> None:
    async with DhtNode(Identity.generate(), listen=("127.0.0.1", 0)) as dht:
        supernode = Supernode(
            dht.identity,
            dht,
            SupernodeConfig(host="127.0.0.1", port=0, opt_out=True),
            verdicts=fixed_verdict(Reachability.PUBLIC, "127.0.0.1"),
        )
        for _ in range(5):
            status = await supernode.check_reachability()
        assert status.role is Role.OPTED_OUT and supernode.relay is None
        assert "--no-relay" in status.describe()


def test_opted_out_never_serves() -> None:
    asyncio.run(_opted_out_never_serves())


async def _port_in_use_is_reported_not_fatal() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        async with DhtNode(Identity.generate(), listen=("127.0.0.1", 0)) as dht:
            supernode = Supernode(
                dht.identity,
                dht,
                SupernodeConfig(
                    host="127.0.0.1", port=port, hysteresis=Hysteresis(promote_after=2)
                ),
                verdicts=fixed_verdict(Reachability.PUBLIC, "127.0.0.1"),
            )
            await supernode.check_reachability()
            status = await supernode.check_reachability()
            assert status.role is Role.OPTED_OUT and supernode.relay is None
            assert f"cannot listen on 127.0.0.1:{port}" in status.reason
    finally:
        taken.close()


def test_port_in_use_is_reported_not_fatal() -> None:
    asyncio.run(_port_in_use_is_reported_not_fatal())


async def _status_never_says_supernode_before_the_relay_runs() -> None:
    async with DhtNode(Identity.generate(), listen=("127.0.0.1", 0)) as dht:
        supernode = Supernode(
            dht.identity,
            dht,
            SupernodeConfig(host="127.0.0.1", port=0, hysteresis=Hysteresis(promote_after=2)),
            verdicts=fixed_verdict(Reachability.PUBLIC, "127.0.0.1"),
        )
        await supernode.check_reachability()  # candidate
        seen = []
        promotion = asyncio.create_task(supernode.check_reachability())
        while not promotion.done():  # what `p2pnode run` would print at every moment
            seen.append(supernode.status())
            await asyncio.sleep(0)
        seen.append(promotion.result())
        try:
            roles = [status.role for status in seen]
            assert Role.CANDIDATE in roles and roles[-1] is Role.SUPERNODE
            for status in seen:
                if status.role is Role.SUPERNODE:
                    assert status.udp and status.accepting and status.dial_back, status
        finally:
            await supernode.close()


def test_status_never_says_supernode_before_the_relay_runs() -> None:
    asyncio.run(_status_never_says_supernode_before_the_relay_runs())


async def _drain_time_limit_cuts_remaining_allocations() -> None:
    clock = Clock()
    verdict = [PUBLIC]

    async def verdicts() -> Verdict:
        return verdict[0]

    async with DhtNode(Identity.generate(), listen=("127.0.0.1", 0)) as dht:
        config = SupernodeConfig(
            host="127.0.0.1",
            port=0,
            capacity=5,
            drain_limit=600.0,
            advert_ttl=900,
            republish_interval=120.0,
            hysteresis=Hysteresis(promote_after=2, demote_after=1),
            secret=b"k" * 32,
        )
        supernode = Supernode(dht.identity, dht, config, verdicts=verdicts, clock=clock)
        try:
            await supernode.check_reachability()
            status = await supernode.check_reachability()
            assert status.role is Role.SUPERNODE
            first_seq = supernode.last_put
            # The advert is republished on schedule, with uptime from the injected clock.
            clock.now += 121
            await supernode.tick()
            assert supernode.last_put is not first_seq
            key = relay_key(relay_bucket(dht.identity.node_id))
            (record,) = (await dht.get(key)).records
            advert = decode_relay_advert(record.payload)
            assert advert.uptime == 121 and advert.has_room
            assert advert.udp == status.udp
            # One allocation, then demotion: it keeps running until the drain limit.
            credentials = supernode.issuer.credentials_for(b"\x01" * 32, clock.now, 3600)
            turn, _ = await create_turn_endpoint(
                asyncio.DatagramProtocol,
                status.udp[0],
                credentials.username,
                credentials.password,
            )
            try:
                verdict[0] = NATTED
                status = await supernode.check_reachability()
                assert status.role is Role.DRAINING and status.load == 1
                (record,) = (await dht.get(key)).records
                assert not decode_relay_advert(record.payload).has_room  # withdrawn: full
                with pytest.raises(aioice_stun.TransactionFailed, match="508"):
                    await create_turn_endpoint(
                        asyncio.DatagramProtocol,
                        status.udp[0],
                        credentials.username,
                        credentials.password,
                    )
                clock.now += 599
                assert (await supernode.tick()).role is Role.DRAINING
                clock.now += 1
                status = await supernode.tick()
                assert status.role is Role.CLIENT and supernode.relay is None
                assert "1 allocations cut" in status.reason
            finally:
                turn.close()
                await asyncio.sleep(0.05)
        finally:
            await supernode.close()


def test_drain_time_limit_cuts_remaining_allocations() -> None:
    asyncio.run(_drain_time_limit_cuts_remaining_allocations())


async def _run_loop_promotes_and_stops_on_request() -> None:
    """A long check interval, but a pending promotion is confirmed at the short interval."""
    async with DhtNode(Identity.generate(), listen=("127.0.0.1", 0)) as dht:
        supernode = Supernode(
            dht.identity,
            dht,
            SupernodeConfig(
                host="127.0.0.1",
                port=0,
                check_interval=3600.0,
                pending_check_interval=0.0,
                hysteresis=Hysteresis(promote_after=3),
            ),
            verdicts=fixed_verdict(Reachability.PUBLIC, "127.0.0.1"),
            load_interval=0.01,
        )
        stop = asyncio.Event()
        try:
            async with asyncio.timeout(10), asyncio.TaskGroup() as group:
                group.create_task(supernode.run(stop))
                for _ in range(500):
                    if supernode.status().role is Role.SUPERNODE:
                        break
                    await asyncio.sleep(0.01)
                stop.set()
            assert supernode.status().role is Role.SUPERNODE
        finally:
            await supernode.close()
        assert supernode.relay is None


def test_run_loop_promotes_and_stops_on_request() -> None:
    asyncio.run(_run_loop_promotes_and_stops_on_request())
