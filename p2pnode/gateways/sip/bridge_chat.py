"""SIP MESSAGE <-> end-to-end chat for one hosted identity and one P2P login.

The bridge's user agent is the registered device of the login that stands for
a P2P peer at this gateway (say ``bob``). A phone of the hosted login
(``alice``) sends ``MESSAGE sip:bob@domain``: the gateway delivers it to that
device, and the bridge sends its text to bob's P2P identity as an E2E chat
message from alice's identity (RFC 3428 §7: answered 202, the message is
queued in the chat outbox before the answer goes out, so a 202 is a promise).

Back: a chat message from bob to alice becomes ``MESSAGE sip:alice@domain``
from ``bob@domain`` through the gateway, which delivers it to every device of
alice and queues it while none is registered (delivered on registration -
the gateway's message queue does that, not this module).

Bounds: at most :data:`MAX_PENDING` messages wait each way; a MESSAGE body
over :data:`MAX_TEXT_BYTES` or not text/plain UTF-8 is refused (413/415).

A chat text may be far longer than a phone takes in one MESSAGE: RFC 3428 §4
keeps a MESSAGE over UDP under 1300 bytes (fragments rarely survive NATs), so
a longer text goes to the phones as several MESSAGEs of at most
:data:`MAX_PHONE_BODY_BYTES` each, cut between characters, sent one after the
other (each waits for its final answer, so they arrive in order).

A chat that cannot be sent - no prekey bundle, the directory timing out or
unreachable, a bundle that does not verify - answers 480 and is counted as
failed; it never stops the bridge. The gateway then holds that MESSAGE for
the bridge's login (its only device refused it), answers the phone 202, and
hands it to the bridge again when the bridge next registers.

Under ``p2pnode run`` (``app/sip_bridge_chat.py``) one bridge speaks for a
hosted identity to every P2P peer, through the gateway's bridge account:

* ``peer=None`` and ``resolve``: the MESSAGE's To user (a login, peer id or
  number, as for calls) is resolved to the peer; nobody: 404; the directory
  failing: 480. The gateway never holds texts to or from the bridge, so that
  480 reaches the phone (RFC 3428: it learns the text did not go), and a 202
  means the text is in the chat outbox, on disk. Phones of other logins get
  ``not_mine`` (``NOT_THIS_BRIDGE``: the answer of the bridge that does take
  them wins the gateway's fork).
* ``held`` (:class:`HeldTexts`, SQLite, ``synchronous=FULL``): a chat text for
  the phones is written there when shown and deleted only when a phone took
  it (2xx); while none is registered (480) it waits there, across restarts,
  and goes out on the hosted login's next REGISTER (``registered``) or every
  :data:`RETRY_EVERY` seconds. The MESSAGE comes from ``"login"
  <sip:PEERID@domain>``: a reply reaches that same peer, whatever the login
  says by then (the display name is the login the phone wrote to, if any).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.message import SipRequest, build_response
from p2pnode.gateways.sip.transaction import RequestReceived
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError
from p2pnode.identity import peer_id_for, public_key_from_peer_id

__all__ = [
    "MAX_HELD",
    "MAX_PENDING",
    "MAX_PHONE_BODY_BYTES",
    "MAX_TEXT_BYTES",
    "RESOLVE_TIMEOUT",
    "RETRY_EVERY",
    "ChatBridge",
    "ChatBridgeStatistics",
    "HeldText",
    "HeldTexts",
    "MessageUserAgent",
    "phone_parts",
]

_LOG = logging.getLogger(__name__)
MAX_PENDING = 64
MAX_HELD = 1000  # chat texts waiting for the phones of one hosted login; beyond, refused
RESOLVE_TIMEOUT = 10.0  # seconds for the directory and the prekey bundle of one text
RETRY_EVERY = 60.0  # held texts are tried again this often even without a REGISTER
MAX_LOGINS = 1024  # peer -> login the phone wrote to (display names), newest kept
MAX_TEXT_BYTES = 4096  # one chat message; SIP over UDP keeps MESSAGE well under 1300 bytes anyway
# One MESSAGE body to the phones: with the gateway's ~500 bytes of headers under 1300 (RFC 3428 §4).
MAX_PHONE_BODY_BYTES = 800


def phone_parts(text: str, limit: int = MAX_PHONE_BODY_BYTES) -> tuple[str, ...]:
    """``text`` cut into pieces of at most ``limit`` UTF-8 bytes, never inside a character."""
    parts: list[str] = []
    start = size = 0
    for index, char in enumerate(text):
        width = len(char.encode("utf-8"))
        if size + width > limit:
            parts.append(text[start:index])
            start, size = index, 0
        size += width
    parts.append(text[start:])
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class ChatBridgeStatistics:
    to_chat: int
    to_phones: int
    refused: int
    failed: int
    held: int = 0  # chat texts waiting for a phone (on disk with ``HeldTexts``)


@dataclass(frozen=True, slots=True)
class HeldText:
    row: int
    peer: bytes
    text: str


class HeldTexts:
    """Chat texts for the phones not yet taken by one, on disk (see the module docstring).

    Keyed by the chat message id, so a text shown twice is held once.
    """

    def __init__(self, path: Path, *, limit: int = MAX_HELD) -> None:
        self.limit = limit
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a held text survives a power cut
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS held (row INTEGER PRIMARY KEY AUTOINCREMENT, "
            "message_id BLOB UNIQUE NOT NULL, peer BLOB NOT NULL, text TEXT NOT NULL)"
        )

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM held").fetchone()[0])

    def put(self, message_id: bytes, peer: bytes, text: str) -> bool:
        """Hold one text; False when ``limit`` texts wait already."""
        if len(self) >= self.limit:
            return False
        self._db.execute(
            "INSERT OR IGNORE INTO held (message_id, peer, text) VALUES (?, ?, ?)",
            (message_id, peer, text),
        )
        return True

    def oldest(self, count: int) -> list[HeldText]:
        rows = self._db.execute(
            "SELECT row, peer, text FROM held ORDER BY row LIMIT ?", (count,)
        ).fetchall()
        return [HeldText(int(r[0]), bytes(r[1]), str(r[2])) for r in rows]

    def remove(self, row: int) -> None:
        self._db.execute("DELETE FROM held WHERE row = ?", (row,))


class MessageUserAgent(SipUserAgent):
    """Our UA whose incoming MESSAGEs wait in a bounded queue for the bridge's answer."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Unlike the base UA (200 at once), the bridge answers after the chat is queued.
        self.pending_messages: asyncio.Queue[RequestReceived] = asyncio.Queue(MAX_PENDING)

    def _incoming(self, effect: RequestReceived) -> None:
        request = effect.request
        if request.method != "MESSAGE":
            super()._incoming(effect)
            return
        if self.pending_messages.full():
            self.stack.respond(effect.key, build_response(request, 503, "Service Unavailable"))
            return
        self.pending_messages.put_nowait(effect)


class ChatBridge:
    """Carries texts between ``hosted_login``'s phones and the P2P ``peer``."""

    def __init__(
        self,
        ua: MessageUserAgent,
        *,
        hosted_login: str,
        peer: bytes | None,
        send_chat: Callable[[bytes, str], Awaitable[bytes]],
        resolve: Callable[[str], Awaitable[str | None]] | None = None,
        held: HeldTexts | None = None,
        not_mine: tuple[int, str] = (403, "Forbidden"),
    ) -> None:
        """``peer``: the one P2P peer (its login is the UA's); None: every peer, the To
        user resolved by ``resolve``. ``held``: texts for the phones kept on disk."""
        if peer is None and resolve is None:
            raise ValueError("a chat bridge for every peer needs resolve")
        self.ua = ua
        self.hosted_login = hosted_login
        self.peer = peer
        self._send_chat = send_chat
        self._resolve = resolve
        self._held = held
        self._not_mine = not_mine
        self._to_phones: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue(MAX_PENDING)
        self._to_chat = self._phones = self._refused = self._failed = 0
        self._progress = asyncio.Event()  # set whenever a message went either way
        self._wake = asyncio.Event()  # a held text may go now (new text, phone registered)
        self._logins: dict[bytes, str] = {}  # peer -> the login its phone wrote to

    def chat_shown(self, peer: bytes, text: str, message_id: bytes = b"") -> bool:
        """A chat message arrived for the hosted identity; False when it is not ours or full."""
        if self._held is not None:
            if not message_id or not self._held.put(message_id, peer, text):
                self._failed += 1
                _LOG.warning("chat text for the phones not held: %d wait", len(self._held))
                return False
            self._wake.set()
            return True
        if (self.peer is not None and peer != self.peer) or self._to_phones.full():
            return False
        self._to_phones.put_nowait((peer, text))
        return True

    def registered(self, login: str) -> None:
        """The gateway's registration listener: the hosted login's phone may take texts."""
        if login == self.hosted_login:
            self._wake.set()

    def statistics(self) -> ChatBridgeStatistics:
        held = len(self._held) if self._held is not None else self._to_phones.qsize()
        return ChatBridgeStatistics(self._to_chat, self._phones, self._refused, self._failed, held)

    async def wait_to_phones(self, count: int) -> None:
        """Until ``count`` chat messages were accepted by the gateway for the phones."""
        while self._phones < count:
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._from_phones())
            if self._held is not None:
                group.create_task(self._held_loop())
            else:
                group.create_task(self._to_phones_loop())

    async def _from_phones(self) -> None:
        while True:
            effect = await self.ua.pending_messages.get()
            request = effect.request
            status, reason = self._check(request)
            if status == 202:
                status, reason = await self._to_chat_now(request)
            elif self.peer is not None or (status, reason) != self._not_mine:
                self._refused += 1  # (another hosted login's text is not a refusal)
            response = build_response(request, status, reason, to_tag=self.ua.token())
            with contextlib.suppress(Exception):  # the transaction may have timed out
                self.ua.stack.respond(effect.key, response)

    async def _to_chat_now(self, request: SipRequest) -> tuple[int, str]:
        """Send the text as chat; 202 once it is in the outbox (on disk)."""
        text = request.body.decode("utf-8")
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                peer = self.peer
                if peer is None:
                    peer = await self._peer_of(request)
                    if peer is None:
                        self._refused += 1
                        return 404, "Not Found"
                await self._send_chat(peer, text)
            self._to_chat += 1
        # No prekey bundle, the directory timing out or unreachable, a bundle
        # that does not verify, the chat service stopping: not now.
        except (LookupError, TimeoutError, OSError, ValueError, RuntimeError) as error:
            self._failed += 1
            _LOG.info("phone text not sent to chat: %s", type(error).__name__)
            return 480, "Temporarily Unavailable"
        return 202, "Accepted"

    async def _peer_of(self, request: SipRequest) -> bytes | None:
        """The P2P peer the phone wrote to (its To user: a login, peer id or number)."""
        to = request.to.uri
        if not isinstance(to, SipUri) or not to.user or self._resolve is None:
            return None
        peer_id = await self._resolve(to.user)
        if peer_id is None:
            return None
        peer = public_key_from_peer_id(peer_id)
        if to.user.lower() != peer_id:  # a login or number: shown as the sender's name
            self._logins.pop(peer, None)
            self._logins[peer] = to.user
            while len(self._logins) > MAX_LOGINS:
                del self._logins[next(iter(self._logins))]
        return peer

    def _check(self, request: SipRequest) -> tuple[int, str]:
        sender = request.from_.uri
        if not isinstance(sender, SipUri) or sender.user != self.hosted_login:
            return self._not_mine  # only the hosted login's phones speak as it
        if self.peer is None and sender.host.lower() != self.ua.domain.lower():
            return self._not_mine  # a foreign network's From is not authenticated
        kind = (request.header("Content-Type") or "text/plain").split(";")[0].strip().lower()
        if kind != "text/plain":
            return 415, "Unsupported Media Type"
        if len(request.body) > MAX_TEXT_BYTES:
            return 413, "Request Entity Too Large"
        try:
            request.body.decode("utf-8")
        except UnicodeDecodeError:
            return 415, "Unsupported Media Type"
        return 202, "Accepted"

    async def _to_phones_loop(self) -> None:
        while True:
            peer, text = await self._to_phones.get()
            if await self._send_to_phones(peer, text) is None:
                self._phones += 1
                self._progress.set()
            else:
                self._failed += 1

    async def _send_to_phones(self, peer: bytes, text: str) -> int | None:
        """Every part of ``text`` to the hosted login's phones; None when all were taken,
        else the status that stopped it (the rest is not sent: no gap inside a text)."""
        sender = None if self.peer is not None else self._sender(peer)
        for part in phone_parts(text):
            try:
                status = await self.ua.send_message(self.hosted_login, part, sender=sender)
            except (UaError, OSError, TimeoutError):
                status = 408
            if not 200 <= status < 300:
                _LOG.info("chat to phones not accepted: status %d", status)
                return status
        return None

    def _sender(self, peer: bytes) -> str:
        """``"login" <sip:PEERID@domain>``: a reply goes back to this very peer."""
        uri = f"<sip:{peer_id_for(peer)}@{self.ua.domain}>"
        login = self._logins.get(peer)
        return f'"{login}" {uri}' if login else uri

    async def _held_loop(self) -> None:
        """Held texts, oldest first, until a phone refuses; then wait for a REGISTER."""
        assert self._held is not None
        while True:
            self._wake.clear()
            for held in self._held.oldest(MAX_PENDING):
                status = await self._send_to_phones(held.peer, held.text)
                if status is None:
                    self._held.remove(held.row)
                    self._phones += 1
                    self._progress.set()
                elif status in (480, 408, 503):  # nobody registered, or not now: wait
                    break
                else:  # refused for good (a part after a taken one may repeat: rare)
                    self._held.remove(held.row)
                    self._failed += 1
            else:
                if self._held.oldest(1):
                    continue  # more than one batch waited
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_EVERY):
                    await self._wake.wait()
