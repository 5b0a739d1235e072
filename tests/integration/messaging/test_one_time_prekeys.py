"""One-time prekeys over loopback TCP: three mailbox servers, bob, and initiators.

Bob attaches and uploads a batch at each mailbox. Alice opens a session with an
OPK taken from one of bob's mailboxes: bob decrypts, the key is gone from every
mailbox and from bob's state. Carol gets a different one. Dave then takes every
key left (a mailbox configured generously for the test, so one requester may
drain it); Erin's session falls back to the signed prekey, counted, and bob
still decrypts; bob's run loop then tops his mailboxes up again. Last, bob loses
his home (same identity): his next attach retires the keys he no longer holds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from p2pnode.identity import Identity
from p2pnode.sessions.chat_message import decode_envelope
from p2pnode.sessions.mailbox_service import MailboxClient
from p2pnode.sessions.mailbox_wire import Status, sign_take_prekey
from p2pnode.sessions.messaging import MessagingConfig, MessagingService
from p2pnode.sessions.one_time_prekeys import OPK_BATCH, TakeLimits
from tests.integration.messaging.loopback_mailboxes import OfflineServices, start_mailboxes

HOUR = 3600
DRAIN = TakeLimits(per_pair=(10_000, HOUR), per_requester=(10_000, HOUR), per_owner=(10_000, HOUR))


async def run_until(service: MessagingService, done: object, what: str) -> None:
    """Run ``service`` until ``done()`` holds (bounded at 20 s)."""
    assert callable(done)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(20):
            while not done():  # noqa: ASYNC110 - polled state of real servers
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.slow
def test_sessions_take_one_time_prekeys_from_the_mailboxes(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = time.time
        keys = [Identity.generate(bytes([80 + i]) * 32) for i in range(3)]
        servers, entries = await start_mailboxes(tmp_path, keys, clock, DRAIN)
        services = OfflineServices(tmp_path, clock)
        shown = services.shown

        def service(seed: int, name: str, drain_every: float = 60.0) -> MessagingService:
            config = MessagingConfig(entries, drain_every=drain_every)
            return services.service(bytes([seed]) * 32, name, config)

        bob = service(41, "bob", drain_every=0.2)
        bob_key = bob.identity.public_key

        def held() -> set[bytes]:
            return {p.public for s in servers for p in s.core.prekeys.held(bob_key)}

        await bob.attach()
        await bob.publish_records()
        assert [len(s.core.prekeys.held(bob_key)) for s in servers] == [OPK_BATCH] * 3
        assert bob.statistics().opk_uploaded == 3 * OPK_BATCH
        assert held() <= bob.core.own_one_time_prekeys()

        async def open_session(seed: int, name: str, text: str) -> bytes | None:
            """A new initiator sends ``text``; bob drains it; the OPK its session used."""
            sender = service(seed, name)
            await sender.attach()
            before = held()
            message_id = await sender.send(bob_key, text)
            row = sender.core.store.outbox_for_message(message_id)
            assert row is not None
            init = decode_envelope(row.envelope).init
            assert init is not None
            if init.one_time_prekey is not None:
                assert before - held() == {init.one_time_prekey}  # taken: gone at the mailbox
            await run_until(sender, lambda: sender.statistics().deposited >= 1, "deposit")
            await bob.drain()
            assert shown[-1] == text
            stats = sender.statistics()
            assert (stats.opk_sessions, stats.opk_fallbacks) == (
                (1, 0) if init.one_time_prekey is not None else (0, 1)
            )
            await sender.close()
            return init.one_time_prekey

        first = await open_session(42, "alice", "hello with a one-time prekey")
        assert first is not None
        assert first not in bob.core.own_one_time_prekeys()  # used: deleted at bob
        assert first not in held()
        second = await open_session(43, "carol", "another initiator, another key")
        assert second is not None and second != first
        assert second not in bob.core.own_one_time_prekeys()

        # dave takes every key left, from every mailbox
        dave = Identity.generate(bytes([44]) * 32)
        for entry in entries:
            client = MailboxClient(entry.host, entry.port)
            rid = 0
            while True:
                rid += 1
                response = await client.request(
                    sign_take_prekey(dave, entry.key, rid, bob_key, int(clock()))
                )
                if response.status is Status.NO_PREKEYS:
                    break
                assert response.status is Status.OK
            await client.close()
        assert held() == set()

        erin_key = await open_session(45, "erin", "no key left: the signed prekey alone")
        assert erin_key is None  # fell back, counted (open_session checked opk_fallbacks)
        # bob's run loop notices the empty mailboxes after a drain and tops them up
        await run_until(bob, lambda: len(held()) == 3 * OPK_BATCH, "top-up")
        assert held() <= bob.core.own_one_time_prekeys()
        frank_key = await open_session(46, "frank", "keys again after the top-up")
        assert frank_key is not None and frank_key not in bob.core.own_one_time_prekeys()
        # bob loses his home but keeps his identity: the keys his mailboxes hold open
        # nothing now, so his first attach retires them and uploads new ones
        await bob.close()
        bob = service(41, "bob-new-home")
        await bob.attach()
        await bob.publish_records()
        assert len(held()) == 3 * OPK_BATCH
        assert held() <= bob.core.own_one_time_prekeys()
        grace_key = await open_session(47, "grace", "after bob's new home")
        assert grace_key is not None
        assert shown == [
            "hello with a one-time prekey",
            "another initiator, another key",
            "no key left: the signed prekey alone",
            "keys again after the top-up",
            "after bob's new home",
        ]
        await bob.close()
        for server in servers:
            await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 90))
