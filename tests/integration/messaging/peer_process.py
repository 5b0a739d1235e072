"""A real process for the crash tests: a mailbox supernode, alice (sender) or bob (recipient).

    peer_process.py mailbox SEED_HEX DB HOST PORT
    peer_process.py publish HOME SEED_HEX MAILBOXES BUNDLE_FILE
    peer_process.py alice HOME SEED_HEX MAILBOXES BUNDLE_FILE COUNT
    peer_process.py bob HOME SEED_HEX MAILBOXES SHOWN_FILE STOP_FILE

MAILBOXES is ``key_hex@host:port,...``. Every role prints one line per
milestone and flushes, so the test can kill it at a known point. Alice sends
``message {i}``, resuming after a restart at the count her store committed;
she exits 0 once every message is receipted. Receipts travel through alice's
own mailboxes (she polls them), so nothing here needs the signalling layer.
"""

from __future__ import annotations

import asyncio
import faulthandler
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from p2pnode.identity import Identity
from p2pnode.records.codec import decode_record
from p2pnode.sessions.crypto import PrekeyBundle
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import MailboxEntry
from p2pnode.sessions.mailbox_service import MailboxServer
from p2pnode.sessions.messaging import (
    MessageShown,
    MessagingConfig,
    MessagingEvent,
    MessagingService,
)
from p2pnode.sessions.outbox import RetryPolicy
from p2pnode.sessions.prekeys import bundle_from_record

POLICY = RetryPolicy(first=0.05, ceiling=0.5, held=120.0, online=2.0)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_mailboxes(text: str) -> tuple[MailboxEntry, ...]:
    entries = []
    for item in text.split(","):
        key, address = item.split("@")
        host, port = address.rsplit(":", 1)
        entries.append(MailboxEntry(bytes.fromhex(key), host, int(port)))
    return tuple(entries)


def read_text(path: str) -> str:
    return Path(path).read_text()


def write_text(path: str, text: str) -> None:
    Path(path).write_text(text)


def exists(path: str) -> bool:
    return Path(path).exists()


async def offline(peer: bytes, payload: bytes) -> bool:
    return False  # no online path in this test: everything goes by mailbox


def service(
    home: str,
    seed: bytes,
    mailboxes: tuple[MailboxEntry, ...],
    bundle: PrekeyBundle | None,
    on_event: Callable[[MessagingEvent], None] | None = None,
) -> MessagingService:
    async def resolve_bundle(peer: bytes) -> PrekeyBundle | None:
        return bundle

    async def resolve_mailboxes(peer: bytes) -> tuple[MailboxEntry, ...]:
        return mailboxes

    Path(home).mkdir(parents=True, exist_ok=True)
    return MessagingService(
        Identity.generate(seed),
        seed,
        Path(home) / "chat.db",
        MessagingConfig(mailboxes, policy=POLICY, drain_every=0.3, idle_wake=0.2),
        send_signal=offline,
        resolve_bundle=resolve_bundle,
        resolve_mailboxes=resolve_mailboxes,
        clock=time.time,
        on_event=on_event or (lambda event: None),
    )


async def mailbox(seed_hex: str, db: str, host: str, port: str) -> None:
    core = MailboxCore(Identity.generate(bytes.fromhex(seed_hex)).public_key, db)
    server = MailboxServer(core, time.time)
    await server.start(host, int(port))
    say(f"ready {server.address[1]}")
    await server.run_expiry()


async def publish(home: str, seed_hex: str, mailboxes: str, bundle_file: str) -> None:
    peer = service(home, bytes.fromhex(seed_hex), parse_mailboxes(mailboxes), None)
    write_text(bundle_file, peer.core.prekey_record(time.time()).encoded.hex())
    await peer.register()
    await peer.close()
    say("published")


async def alice(home: str, seed_hex: str, mailboxes: str, bundle_file: str, count: str) -> None:
    bundle = bundle_from_record(decode_record(bytes.fromhex(read_text(bundle_file))))
    peer = service(home, bytes.fromhex(seed_hex), parse_mailboxes(mailboxes), bundle)
    await peer.register()
    first = len(peer.core.store.history(bundle.identity_key, limit=10**6))
    say(f"resume {first}")

    async def sender() -> None:
        for index in range(first, int(count)):
            await peer.send(bundle.identity_key, f"message {index}")
            say(f"sent {index + 1}")
            if index % 20 == 0:
                await asyncio.sleep(0)  # let the pump deposit while we write
        for _ in range(3000):  # at most 300 s for the receipts
            if not peer.statistics().outbox:
                say("done")
                return
            await asyncio.sleep(0.1)
        say("gave up")

    async with asyncio.TaskGroup() as group:
        runner = group.create_task(peer.run())
        await sender()
        runner.cancel()


async def bob(home: str, seed_hex: str, mailboxes: str, shown_file: str, stop_file: str) -> None:
    shown = open_log(shown_file)

    def on_event(event: MessagingEvent) -> None:
        if isinstance(event, MessageShown):
            shown.write(event.message.text + "\n")
            shown.flush()

    peer = service(home, bytes.fromhex(seed_hex), parse_mailboxes(mailboxes), None, on_event)
    started = time.monotonic()
    drained = await peer.attach()
    say(f"attached {drained} {time.monotonic() - started:.3f}")
    async with asyncio.TaskGroup() as group:
        runner = group.create_task(peer.run())
        for _ in range(3000):  # at most 300 s
            if exists(stop_file):
                break
            await asyncio.sleep(0.1)
        await peer.drain()
        runner.cancel()
    shown.close()
    say("stopped")


def open_log(path: str) -> TextIO:
    return open(path, "a", encoding="utf-8")


ROLES = {"mailbox": mailbox, "publish": publish, "alice": alice, "bob": bob}

if __name__ == "__main__":
    faulthandler.dump_traceback_later(40, repeat=True)  # a hung role shows where, in its log
    asyncio.run(ROLES[sys.argv[1]](*sys.argv[2:]))  # type: ignore[operator]
