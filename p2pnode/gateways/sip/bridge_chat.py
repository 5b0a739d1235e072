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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.message import SipRequest, build_response
from p2pnode.gateways.sip.transaction import RequestReceived
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError

__all__ = [
    "MAX_PENDING",
    "MAX_PHONE_BODY_BYTES",
    "MAX_TEXT_BYTES",
    "ChatBridge",
    "ChatBridgeStatistics",
    "MessageUserAgent",
    "phone_parts",
]

_LOG = logging.getLogger(__name__)
MAX_PENDING = 64
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
        peer: bytes,
        send_chat: Callable[[bytes, str], Awaitable[bytes]],
    ) -> None:
        self.ua = ua
        self.hosted_login = hosted_login
        self.peer = peer
        self._send_chat = send_chat
        self._to_phones: asyncio.Queue[str] = asyncio.Queue(MAX_PENDING)
        self._to_chat = self._phones = self._refused = self._failed = 0
        self._progress = asyncio.Event()  # set whenever a message went either way

    def chat_shown(self, peer: bytes, text: str) -> bool:
        """A chat message arrived for the hosted identity; False when it is not ours or full."""
        if peer != self.peer or self._to_phones.full():
            return False
        self._to_phones.put_nowait(text)
        return True

    def statistics(self) -> ChatBridgeStatistics:
        return ChatBridgeStatistics(self._to_chat, self._phones, self._refused, self._failed)

    async def wait_to_phones(self, count: int) -> None:
        """Until ``count`` chat messages were accepted by the gateway for the phones."""
        while self._phones < count:
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._from_phones())
            group.create_task(self._to_phones_loop())

    async def _from_phones(self) -> None:
        while True:
            effect = await self.ua.pending_messages.get()
            request = effect.request
            status, reason = self._check(request)
            if status == 202:
                text = request.body.decode("utf-8")
                try:
                    await self._send_chat(self.peer, text)
                    self._to_chat += 1
                # No prekey bundle, the directory timing out or unreachable, a bundle
                # that does not verify: the peer cannot be reached now.
                except (LookupError, TimeoutError, OSError, ValueError) as error:
                    status, reason = 480, "Temporarily Unavailable"
                    self._failed += 1
                    _LOG.info("phone text not sent to chat: %s", type(error).__name__)
            else:
                self._refused += 1
            response = build_response(request, status, reason, to_tag=self.ua.token())
            self.ua.stack.respond(effect.key, response)

    def _check(self, request: SipRequest) -> tuple[int, str]:
        sender = request.from_.uri
        if not isinstance(sender, SipUri) or sender.user != self.hosted_login:
            return 403, "Forbidden"  # only the hosted login's phones speak as it
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
            text = await self._to_phones.get()
            for part in phone_parts(text):
                try:
                    status = await self.ua.send_message(self.hosted_login, part)
                except (UaError, OSError, TimeoutError):
                    status = 408
                if not 200 <= status < 300:
                    self._failed += 1  # the rest of this text is not sent: no gap inside it
                    _LOG.info("chat to phones not accepted: status %d", status)
                    break
            else:
                self._phones += 1
                self._progress.set()
