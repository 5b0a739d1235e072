"""The asyncio SIP adapter on loopback (port 0): UDP and TCP, keep-alives, refusals."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from p2pnode.gateways.sip.message import SipResponse, build_response
from p2pnode.gateways.sip.parser import SipStreamDecoder, parse_datagram
from p2pnode.gateways.sip.transaction import Effect, RequestReceived
from p2pnode.gateways.sip.transport import SipStack
from tests.harness.tls import make_certificates

OPTIONS = (
    b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/%s 10.1.1.1:5060;branch=z9hG4bK%s;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:probe@example.org>;tag=p\r\n"
    b"To: <sip:gw@127.0.0.1>\r\n"
    b"Call-ID: %s\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def answer_options(stack: SipStack, effect: Effect) -> None:
    if isinstance(effect, RequestReceived):
        stack.respond(effect.key, build_response(effect.request, 200, "OK", to_tag="gw"))


async def _udp_exchange(port: int, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, payload)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)


def test_udp_answer_stamped_with_the_real_source_and_505_for_another_version() -> None:
    async def scenario() -> None:
        stack = SipStack(answer_options)
        _, port = await stack.start("127.0.0.1")
        try:
            reply = parse_datagram(await _udp_exchange(port, OPTIONS % (b"UDP", b"u1", b"c1")))
            assert isinstance(reply, SipResponse) and reply.status == 200
            assert reply.to.tag == "gw"
            assert reply.top_via.received == "127.0.0.1"
            assert reply.top_via.param("rport") not in (None, "")  # our source port
            bad = (OPTIONS % (b"UDP", b"u2", b"c2")).replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)
            refusal = parse_datagram(await _udp_exchange(port, bad))
            assert isinstance(refusal, SipResponse) and refusal.status == 505
            assert stack.transport.drops.total == 1
        finally:
            await stack.close()

    asyncio.run(scenario())


def test_tcp_messages_byte_by_byte_keepalive_pong_and_framing_error_closes() -> None:
    async def scenario() -> None:
        stack = SipStack(answer_options)
        _, port = await stack.start("127.0.0.1")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
            for byte in OPTIONS % (b"TCP", b"t1", b"c3"):
                writer.write(bytes([byte]))
                await writer.drain()
            decoder = SipStreamDecoder()
            items: list[object] = []
            while not items:
                items = list(decoder.feed(await asyncio.wait_for(reader.read(4096), 5)))
            (reply,) = items
            assert isinstance(reply, SipResponse) and reply.status == 200
            writer.write(b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
            writer.close()
        finally:
            await stack.close()

    asyncio.run(scenario())


def test_tls_listener_answers_and_pongs(tmp_path: Path) -> None:
    files = make_certificates(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(files.certificate, files.key)

    async def scenario() -> None:
        stack = SipStack(answer_options)
        await stack.start("127.0.0.1")
        _, port = await stack.transport.start_tls("127.0.0.1", 0, server_context)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=files.client_context()
            )
            writer.write(b"\r\n\r\n" + OPTIONS % (b"TLS", b"s1", b"c4"))
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
            decoder = SipStreamDecoder()
            items: list[object] = []
            while not items:
                items = list(decoder.feed(await asyncio.wait_for(reader.read(4096), 5)))
            (reply,) = items
            assert isinstance(reply, SipResponse) and reply.status == 200
            assert reply.top_via.transport == "TLS"
            writer.close()
        finally:
            await stack.close()

    asyncio.run(scenario())


def test_connections_are_capped_and_idle_ones_closed() -> None:
    async def scenario() -> None:
        stack = SipStack(answer_options)
        stack.transport.max_connections = 1
        stack.transport.idle_timeout = 0.2
        _, port = await stack.start("127.0.0.1")
        try:
            first_reader, first_writer = await asyncio.open_connection("127.0.0.1", port)
            first_writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(first_reader.readexactly(2), 5) == b"\r\n"
            second_reader, second_writer = await asyncio.open_connection("127.0.0.1", port)
            # Over the cap: the gateway aborts the connection at once.
            assert await asyncio.wait_for(second_reader.read(), 5) == b""
            assert stack.transport.drops.counts()["tcp connection over capacity"] == 1
            # The first one, silent for two idle periods, is closed by the gateway.
            assert await asyncio.wait_for(first_reader.read(), 5) == b""
            first_writer.close()
            second_writer.close()
        finally:
            await stack.close()

    asyncio.run(scenario())
