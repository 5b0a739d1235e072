"""A phone registers over TLS and a call reaches it over the same connection.

A throwaway CA signs the gateway's certificate; the "phone" is an asyncio TLS
stream that verifies it for real, registers (401, then digest, then 200),
and receives the INVITE of a call our UDP user agent places to it, and the
gateway's OPTIONS keep-alive. What the gateway sends on a TLS connection says
``SIP/2.0/TLS`` with the TLS port in its Via (RFC 3261 §18.1.1, §20.42; it
said TCP and the shared port before). The phone's own Via names TLS without a
port: its sent-by port is 5061 (§18.2.2).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.digest import authorization
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.message import SipRequest, SipResponse
from p2pnode.gateways.sip.parser import KeepAlive, SipStreamDecoder
from p2pnode.gateways.sip.useragent import SipUserAgent
from tests.harness.tls import make_certificates

DOMAIN = "gw.test"


def register(port: int, cseq: int, auth: str = "") -> bytes:
    lines = [
        "REGISTER sip:gw.test SIP/2.0",
        f"Via: SIP/2.0/TLS phone.invalid;branch=z9hG4bKtls{cseq}",  # no port: 5061
        "Max-Forwards: 70",
        "From: <sip:bob@gw.test>;tag=b1",
        "To: <sip:bob@gw.test>",
        "Call-ID: tls-reg-1",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:bob@127.0.0.1:{port};transport=tls>",
        "Expires: 300",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()


async def next_message(
    reader: asyncio.StreamReader, decoder: SipStreamDecoder
) -> SipRequest | SipResponse:
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "connection closed"
        for item in decoder.feed(data):
            if not isinstance(item, KeepAlive):
                return item


def test_register_over_tls_and_receive_a_call_on_the_connection(tmp_path: Path) -> None:
    files = make_certificates(tmp_path)

    async def scenario() -> None:
        store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
        _, alice_password = store.add("alice", None, randbytes=os.urandom)
        _, bob_password = store.add("bob", None, randbytes=os.urandom)
        config = GatewayConfig(
            DOMAIN,
            tls_port=0,
            tls_certificate=str(files.certificate),
            tls_key=str(files.key),
            keepalive_interval=0.2,  # an OPTIONS ping soon after the registration
        )
        gateway = SipGateway(config, store)
        await gateway.start()
        assert gateway.address is not None and gateway.tls_address is not None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.tls_address[1], ssl=files.client_context()
        )
        decoder = SipStreamDecoder()
        port = writer.get_extra_info("sockname")[1]
        alice = SipUserAgent("alice", alice_password, DOMAIN, gateway.address)
        try:
            writer.write(register(port, 1))
            challenge = await next_message(reader, decoder)
            assert isinstance(challenge, SipResponse) and challenge.status == 401
            (first, *_) = challenge.auth_headers("WWW-Authenticate")
            auth = authorization(
                first, method="REGISTER", uri="sip:gw.test", username="bob",
                password=bob_password, cnonce="c0ffee",
            )  # fmt: skip
            writer.write(register(port, 2, auth))
            ok = await next_message(reader, decoder)
            assert isinstance(ok, SipResponse) and ok.status == 200
            assert ok.top_via.transport == "TLS" and ok.top_via.sent_by == ("phone.invalid", 5061)
            (binding,) = gateway.registrar.bindings("bob", asyncio.get_running_loop().time())
            assert binding.reliable
            await alice.start()
            calling = asyncio.create_task(alice.call("bob"))
            seen: dict[str, SipRequest] = {}
            while set(seen) != {"INVITE", "OPTIONS"}:  # the call and the keep-alive ping
                request = await next_message(reader, decoder)
                assert isinstance(request, SipRequest)
                seen[request.method] = request
            assert seen["INVITE"].to.uri.user == "bob"  # type: ignore[union-attr]
            for request in seen.values():
                via = request.top_via
                assert (via.transport, via.sent_by) == ("TLS", gateway.tls_address)
            calling.cancel()
        finally:
            writer.close()
            await alice.close()
            await gateway.stop()

    asyncio.run(scenario())
