"""A small SIP user agent of our own: register, call, answer, PCMU tone RTP.

Why: the demo and ``p2pnode sip try-call`` must work on a machine without
Debian's SIP tools, and operators need a way to try a gateway with the three
settings a phone gets. It is deliberately small: UDP only, one audio stream,
PCMU (G.711 u-law) only, digest for 401 and 407, auto-answer.

Audio: :meth:`UaCall.play_tone` sends a sine as 20 ms PCMU packets (a few
seconds at most: it is a test signal); every packet received is decoded into
``UaCall.received`` (16-bit samples at 8 kHz) for an FFT.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from p2pnode.gateways.sip.dialog import Dialog
from p2pnode.gateways.sip.digest import authorization
from p2pnode.gateways.sip.headers import SipUri, parse_uri
from p2pnode.gateways.sip.message import Header, SipRequest, SipResponse, build_response
from p2pnode.gateways.sip.rtp import RtpDecodeError, RtpPacket, TelephoneEvent, dtmf_schedule
from p2pnode.gateways.sip.sdp import SdpDecodeError, parse_sdp
from p2pnode.gateways.sip.transaction import (
    MAGIC_COOKIE,
    ClientKey,
    Effect,
    RequestReceived,
    ResponseReceived,
    StrayAck,
    TimedOut,
)
from p2pnode.gateways.sip.transport import SipStack

__all__ = [
    "DTMF_PAYLOAD_TYPE",
    "MAX_TONE_SECONDS",
    "SipUserAgent",
    "UaCall",
    "UaError",
    "mulaw_decode",
    "mulaw_encode",
]

MAX_TONE_SECONDS = 30.0
_RATE = 8000
_FRAME = 160  # 20 ms at 8 kHz
_MAX_RECEIVED_FRAMES = int(MAX_TONE_SECONDS * 50)
_MAX_EVENTS = 1000
DTMF_PAYLOAD_TYPE = 101  # what our SDP offers for telephone-event

Samples = npt.NDArray[np.int16]


def mulaw_encode(samples: Samples) -> bytes:
    """ITU-T G.711 u-law (bias 0x84, clip 32635)."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return bytes(encoded.tobytes())


def mulaw_decode(data: bytes) -> Samples:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + 0x84) << exponent
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


class UaError(Exception):
    """A registration or call that did not succeed; ``status`` is the final answer (0: none)."""

    def __init__(self, what: str, status: int = 0) -> None:
        super().__init__(f"{what} failed with {status or 'no answer'}")
        self.status = status


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.call: UaCall | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.call is None:
            return
        try:
            packet = RtpPacket.decode(data)
        except RtpDecodeError:
            return
        if packet.payload_type == 0 and len(self.call.received) < _MAX_RECEIVED_FRAMES:
            self.call.received.append(mulaw_decode(packet.payload))
        elif packet.payload_type == DTMF_PAYLOAD_TYPE and len(self.call.events) < _MAX_EVENTS:
            try:
                self.call.events.append(TelephoneEvent.decode(packet.payload))
            except RtpDecodeError:
                return


@dataclass(slots=True)
class UaCall:
    """One call of the user agent: its dialog, its RTP socket and what it heard."""

    ua: SipUserAgent
    dialog: Dialog
    destination: tuple[str, int]
    rtp: asyncio.DatagramTransport
    remote_media: tuple[str, int] | None
    received: list[Samples]
    ended: asyncio.Event
    events: list[TelephoneEvent] = field(default_factory=list)  # RFC 4733 packets heard

    def recording(self) -> Samples:
        return np.concatenate(self.received) if self.received else np.zeros(0, np.int16)

    async def play_tone(self, frequency: float, seconds: float) -> int:
        """Send a sine as PCMU at 20 ms pacing; returns the packets sent."""
        if self.remote_media is None:
            return 0
        frames = int(min(seconds, MAX_TONE_SECONDS) * 50)
        ssrc = int.from_bytes(self.ua.randbytes(4), "big")
        loop = asyncio.get_running_loop()
        start = loop.time()
        t = np.arange(frames * _FRAME) / _RATE
        pcm = (0.4 * 32767 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)
        for index in range(frames):
            payload = mulaw_encode(pcm[index * _FRAME : (index + 1) * _FRAME])
            packet = RtpPacket(0, index & 0xFFFF, index * _FRAME, ssrc, payload, index == 0)
            self.rtp.sendto(packet.encode(), self.remote_media)
            await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - loop.time()))
        return frames

    async def send_dtmf(self, digit: str) -> int:
        """One RFC 4733 digit (100 ms, three end packets) on payload type 101."""
        if self.remote_media is None:
            return 0
        schedule = dtmf_schedule(
            digit,
            payload_type=DTMF_PAYLOAD_TYPE,
            ssrc=int.from_bytes(self.ua.randbytes(4), "big"),
            first_sequence=0,
            timestamp=0,
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        for offset, packet in schedule:
            await asyncio.sleep(max(0.0, start + offset - loop.time()))
            self.rtp.sendto(packet.encode(), self.remote_media)
        return len(schedule)

    async def hangup(self) -> None:
        self.dialog, bye = self.dialog.create_request(
            "BYE", via=self.ua.via(), branch_id=self.ua.token()
        )
        await self.ua.transaction(bye, self.destination)
        self.close()

    def close(self) -> None:
        self.rtp.close()
        self.ended.set()


class SipUserAgent:
    """A UDP user agent for ``login`` at ``server`` (host:port of the gateway)."""

    def __init__(
        self,
        login: str,
        password: str,
        domain: str,
        server: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        randbytes: Callable[[int], bytes] = os.urandom,
        user_agent: str = "",
    ) -> None:
        self.login = login
        self.user_agent = user_agent  # sent as User-Agent when set (none by default)
        self.password = password
        self.domain = domain
        self.server = server
        self.host = host
        self.randbytes = randbytes
        self.stack = SipStack(self._on_event)
        self.address: tuple[str, int] | None = None
        self._waiting: dict[ClientKey, asyncio.Future[SipResponse]] = {}
        self._provisional: dict[ClientKey, Callable[[SipResponse], None]] = {}
        self._calls: dict[str, UaCall] = {}
        self.incoming: asyncio.Queue[UaCall] = asyncio.Queue(maxsize=8)
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=64)
        self.auto_answer = True
        self._tag = self.token()
        self._contact: str | None = None

    async def start(self) -> None:
        self.address = await self.stack.start(self.host)

    async def close(self) -> None:
        for call in list(self._calls.values()):
            call.close()
        await self.stack.close()

    def token(self) -> str:
        return self.randbytes(8).hex()

    def via(self) -> str:
        assert self.address is not None
        return f"SIP/2.0/UDP {self.address[0]}:{self.address[1]};rport"

    def contact(self) -> str:
        assert self.address is not None
        return self._contact or f"<sip:{self.login}@{self.address[0]}:{self.address[1]}>"

    # -- transactions ----------------------------------------------------------------------
    async def transaction(
        self,
        request: SipRequest,
        destination: tuple[str, int],
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> SipResponse:
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        key = self.stack.send_request(request, destination)
        self._waiting[key] = future
        if on_provisional is not None:
            self._provisional[key] = on_provisional
        try:
            return await future
        finally:
            self._waiting.pop(key, None)
            self._provisional.pop(key, None)

    def _request(
        self,
        method: str,
        uri: SipUri,
        to: str,
        call_id: str,
        cseq: int,
        *extra: Header,
        body: bytes = b"",
        sender: str | None = None,
    ) -> SipRequest:
        from_ = sender or f"<sip:{self.login}@{self.domain}>"
        headers = (
            Header("Via", f"{self.via()};branch={MAGIC_COOKIE}{self.token()}"),
            Header("Max-Forwards", "70"),
            Header("From", f"{from_};tag={self._tag}"),
            Header("To", to),
            Header("Call-ID", call_id),
            Header("CSeq", f"{cseq} {method}"),
            Header("Contact", self.contact()),
            *((Header("User-Agent", self.user_agent),) if self.user_agent else ()),
            *extra,
            Header("Content-Length", str(len(body))),
        )
        return SipRequest.build(method, uri, headers, body)

    async def _authenticated(
        self,
        build: Callable[[int, tuple[Header, ...]], SipRequest],
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> tuple[SipRequest, SipResponse]:
        """Send ``build(cseq, auth_headers)``; answer one 401/407 challenge."""
        request = build(1, ())
        response = await self.transaction(request, self.server, on_provisional)
        if response.status not in (401, 407):
            return request, response
        name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        challenge = response.auth_headers(name)[0]
        value = authorization(
            challenge,
            method=request.method,
            uri=str(request.uri),
            username=self.login,
            password=self.password,
            cnonce=self.token(),
        )
        request = build(2, (Header(answer, value),))
        return request, await self.transaction(request, self.server, on_provisional)

    # -- registration --------------------------------------------------------------------
    async def register(self, expires: int = 300, *, contact: str | None = None) -> SipResponse:
        """REGISTER (answering a 401); ``contact`` registers another address (a third party)."""
        self._contact = contact
        call_id = self.token() + "@ua"
        uri = SipUri("sip", None, None, self.domain, None)
        aor = f"<sip:{self.login}@{self.domain}>"

        def build(cseq: int, auth: tuple[Header, ...]) -> SipRequest:
            return self._request(
                "REGISTER", uri, aor, call_id, cseq, Header("Expires", str(expires)), *auth
            )

        _, response = await self._authenticated(build)
        self._contact = None
        if response.status != 200:
            raise UaError("REGISTER", response.status)
        return response

    # -- MESSAGE ---------------------------------------------------------------------------
    async def send_message(self, target: str, text: str, *, sender: str | None = None) -> int:
        """A page-mode MESSAGE (RFC 3428) to ``target``; returns the final status.

        ``sender``: another From name-addr (``"bob" <sip:ID@domain>``), for the bridge
        that stands for P2P users; it still authenticates as ``login``."""
        uri = parse_uri(target if ":" in target else f"sip:{target}@{self.domain}")
        assert isinstance(uri, SipUri)
        call_id = self.token() + "@ua"
        body = text.encode()

        def build(cseq: int, auth: tuple[Header, ...]) -> SipRequest:
            return self._request(
                "MESSAGE", uri, f"<{uri}>", call_id, cseq,
                Header("Content-Type", "text/plain"), *auth, body=body, sender=sender,
            )  # fmt: skip

        _, response = await self._authenticated(build)
        return response.status

    # -- calls ---------------------------------------------------------------------------
    async def _open_rtp(self) -> tuple[asyncio.DatagramTransport, _Rtp]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _Rtp, local_addr=(self.host, 0), family=socket.AF_INET
        )
        return transport, protocol

    def _sdp(self, port: int) -> bytes:
        session = self.token()[:8]
        return (
            f"v=0\r\no=- {int(session, 16)} 1 IN IP4 {self.host}\r\ns=-\r\n"
            f"c=IN IP4 {self.host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        ).encode()

    async def call(self, target: str) -> UaCall:
        """Call ``target`` (a login on the gateway or a SIP URI) and return the answered call."""
        uri = parse_uri(target if ":" in target else f"sip:{target}@{self.domain}")
        assert isinstance(uri, SipUri)
        rtp, protocol = await self._open_rtp()
        port = int(rtp.get_extra_info("sockname")[1])
        call_id = self.token() + "@ua"
        body = self._sdp(port)

        def build(cseq: int, auth: tuple[Header, ...]) -> SipRequest:
            return self._request(
                "INVITE", uri, f"<{uri}>", call_id, cseq,
                Header("Content-Type", "application/sdp"), *auth, body=body,
            )  # fmt: skip

        request, response = await self._authenticated(build)
        if not 200 <= response.status < 300:
            rtp.close()
            raise UaError("INVITE", response.status)
        dialog = Dialog.from_uac(request, response)
        _, ack = dialog.create_request(
            "ACK", via=self.via(), branch_id=self.token(), cseq=request.cseq.number
        )
        self.stack.transport.send(ack, self.server, reliable=False)
        call = UaCall(self, dialog, self.server, rtp, _media(response.body), [], asyncio.Event())
        protocol.call = call
        self._calls[call_id] = call
        return call

    async def _answer(self, effect: RequestReceived) -> None:
        request = effect.request
        rtp, protocol = await self._open_rtp()
        port = int(rtp.get_extra_info("sockname")[1])
        tag = self.token()
        dialog = Dialog.from_uas(request, tag, confirmed=True)
        call = UaCall(self, dialog, effect.source, rtp, _media(request.body), [], asyncio.Event())
        protocol.call = call
        self._calls[request.call_id] = call
        ringing = build_response(request, 180, "Ringing", ("Contact", self.contact()), to_tag=tag)
        self.stack.respond(effect.key, ringing)
        ok = build_response(
            request, 200, "OK", ("Contact", self.contact()),
            ("Content-Type", "application/sdp"), to_tag=tag, body=self._sdp(port),
        )  # fmt: skip
        self.stack.respond(effect.key, ok)
        if not self.incoming.full():
            self.incoming.put_nowait(call)

    def _on_event(self, stack: SipStack, effect: Effect) -> None:
        if isinstance(effect, ResponseReceived):
            if effect.response.status < 200:
                callback = self._provisional.get(effect.key)
                if callback is not None:
                    callback(effect.response)
                return
            future = self._waiting.get(effect.key)
            if future is not None and not future.done():
                future.set_result(effect.response)
        elif isinstance(effect, TimedOut) and isinstance(effect.key, ClientKey):
            future = self._waiting.get(effect.key)
            if future is not None and not future.done():
                future.set_exception(UaError(effect.key.method))
        elif isinstance(effect, RequestReceived):
            self._incoming(effect)
        elif isinstance(effect, StrayAck):
            pass  # the ACK of our 200: nothing to do

    def _incoming(self, effect: RequestReceived) -> None:
        request = effect.request
        call = self._calls.get(request.call_id)
        if request.method == "INVITE" and request.to.tag is None and self.auto_answer:
            asyncio.get_running_loop().create_task(self._answer(effect))
        elif request.method == "BYE" and call is not None:
            stack_response = build_response(request, 200, "OK")
            self.stack.respond(effect.key, stack_response)
            call.close()
            del self._calls[request.call_id]
        elif request.method == "MESSAGE" and request.to.tag is None:
            self.stack.respond(effect.key, build_response(request, 200, "OK", to_tag=self.token()))
            if not self.messages.full():
                self.messages.put_nowait((str(request.from_.uri), request.body))
        elif request.method == "OPTIONS":
            self.stack.respond(effect.key, build_response(request, 200, "OK"))
        else:
            self.stack.respond(effect.key, build_response(request, 481, "Call Does Not Exist"))


def _media(body: bytes) -> tuple[str, int] | None:
    """The first audio address and port of an SDP body, None without one."""
    if not body:
        return None
    try:
        sdp = parse_sdp(body)
    except SdpDecodeError:
        return None
    for media in sdp.media:
        host = sdp.address(media)
        if media.media == "audio" and media.port and host is not None:
            return host, media.port
    return None
