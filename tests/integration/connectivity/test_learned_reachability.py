"""Reachability judged against supernodes found in the DHT, not servers given by hand.

A supernode advertises a STUN server with dial-back in its RELAY_ADVERT; a node
given no ``--stun`` finds three supernodes through the DHT, asks their dial-back
servers, and (on loopback its observed address is its own: public) promotes
itself. The verdict source never lowers ``min_agree`` to the servers it knows,
and keeps a decided status when fewer are known later (until the votes age out).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from nat.endpoint import StunService
from nat.reachability import Reachability
from p2pnode.app.node import P2PNode, RoleOptions
from p2pnode.connectivity.supernode import SupernodeConfig
from p2pnode.connectivity.verdicts import learned_stun_verdicts
from p2pnode.dht import DhtConfig, DhtNode
from p2pnode.identity import Identity
from relay.supernode import Hysteresis, Role

LOOP = "127.0.0.1"
WAIT = 60.0  # bound on any one wait, not a speed assertion


def test_learned_servers_decide_only_when_enough_agree_and_the_verdict_holds() -> None:
    async def scenario() -> None:
        services = [await StunService.start((LOOP, 0)) for _ in range(3)]
        try:
            known: list[tuple[str, int]] = []
            source = learned_stun_verdicts((), lambda: list(known), min_agree=3)

            verdict = await source()
            assert verdict.status is Reachability.UNKNOWN
            assert "no dial-back STUN servers known yet" in verdict.detail

            known[:] = [s.addresses[0] for s in services[:2]]
            verdict = await source()
            assert verdict.status is Reachability.UNKNOWN  # two agree; three must
            assert "2 of 2 servers voted (0 given, 2 found in the DHT), 3 must agree" in (
                verdict.detail
            )

            known[:] = [s.addresses[0] for s in services]
            verdict = await source()
            assert verdict.status is Reachability.PUBLIC
            assert verdict.ip == LOOP

            known[:] = [services[0].addresses[0]]  # the others left the DHT
            verdict = await source()
            assert verdict.status is Reachability.PUBLIC  # their votes still count
            assert sum(s.statistics().dial_backs for s in services) >= 6
        finally:
            for service in services:
                await service.close()

    asyncio.run(scenario())


def _roles(**changes: object) -> RoleOptions:
    config = SupernodeConfig(
        host=LOOP,
        port=0,
        capacity=4,
        allow_peers=("127.0.0.0/8",),
        check_interval=0.3,
        pending_check_interval=0.1,
        hysteresis=Hysteresis(promote_after=2, demote_after=2),
    )
    return RoleOptions(supernode=config, **changes)  # type: ignore[arg-type]


async def _wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _advertised(node: P2PNode) -> bool:
    put = node.supernode.last_put if node.supernode is not None else None
    return put is not None and put.stored > 0


@contextlib.asynccontextmanager
async def _running(node: P2PNode, tasks: asyncio.TaskGroup) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    async with asyncio.timeout(WAIT):
        await node.start()
    task = tasks.create_task(node.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await task
        await node.stop()


def test_a_node_without_stun_servers_is_promoted_by_supernodes_found_in_the_dht(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        config = DhtConfig().sharing_ip(16)
        seed = DhtNode(Identity.generate(), listen=(LOOP, 0), config=config)
        await seed.start()
        storers = [
            DhtNode(Identity.generate(), listen=(LOOP, 0), bootstrap=[seed.address], config=config)
            for _ in range(4)
        ]
        for storer in storers:
            async with asyncio.timeout(WAIT):
                await storer.start()

        def node(name: str, roles: RoleOptions) -> P2PNode:
            return P2PNode(
                tmp_path / name,
                listen=(LOOP, 0),
                bootstrap=[seed.address],
                config=config,
                roles=roles,
                create=True,
            )

        supers = [node(f"super{i}", _roles(public_ip=LOOP)) for i in range(3)]
        newcomer = node("newcomer", _roles(find_relays=True))
        try:
            async with asyncio.TaskGroup() as tasks, contextlib.AsyncExitStack() as stack:
                for sn in supers:
                    await stack.enter_async_context(_running(sn, tasks))
                for sn in supers:
                    await _wait_until(
                        functools.partial(_advertised, sn),
                        "each supernode's advert stored in the DHT",
                    )
                    status = sn.role()
                    assert status is not None and status.role is Role.SUPERNODE
                    assert status.dial_back, "a supernode advertises a dial-back STUN server"
                    advert = sn.supernode.advert() if sn.supernode else None
                    assert advert is not None and advert.stun == status.dial_back

                await stack.enter_async_context(_running(newcomer, tasks))
                await _wait_until(
                    lambda: (
                        (status := newcomer.role()) is not None and status.role is Role.SUPERNODE
                    ),
                    "the newcomer promoted by the supernodes' dial-back votes",
                )
                status = newcomer.role()
                assert status is not None
                assert "(0 given, 3 found in the DHT)" in status.reason, status.reason
                assert "3 must agree" in status.reason
                assert status.dial_back  # and it serves the next newcomer in turn
        finally:
            for storer in storers:
                await storer.close()
            await seed.close()

    asyncio.run(scenario())
