"""The TURN service's fail2ban-style refusal log, on loopback UDP with raw STUN.

Proves: a 401 challenge to a request without credentials (every client's first
Allocate) logs nothing; Allocates with a wrong password from two source
addresses log exactly one ``refused what=turn-auth reason=bad-credentials`` line
per source in the interval, however many were refused; a 403 (a permission for
a peer outside the allowed ranges) logs ``reason=forbidden`` for its source.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket

import pytest

from nat.stun import (
    ErrorCode,
    Nonce,
    Realm,
    RequestedTransport,
    StunClass,
    StunMessage,
    StunMethod,
    Username,
    decode_message,
    encode_message,
)
from nat.stun.message import long_term_key
from nat.stun.turn_attributes import XorPeerAddress
from relay.auth import static_users
from relay.policy import PeerAddressPolicy, parse_networks
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService

Address = tuple[str, int]
WRONG_TRIES = 4  # Allocates with a wrong password per source
WAIT = 5.0  # a bound on waiting for a loopback answer, not a speed assertion
LINE = re.compile(r"^refused what=(\S+) reason=(\S+) source=(\S+) count=(\d+)$")


async def _ask(sock: socket.socket, message: StunMessage, to: Address, key: bytes | None) -> int:
    """Send one request, return the answer's error code (0 for a success)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, encode_message(message, integrity_key=key), to)
    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), WAIT)
    answer = decode_message(data)
    error = answer.get(ErrorCode)
    return 0 if error is None else error.code


async def _challenge(sock: socket.socket, to: Address) -> tuple[str, str]:
    loop = asyncio.get_running_loop()
    request = StunMessage(
        StunMethod.ALLOCATE, StunClass.REQUEST, os.urandom(12), (RequestedTransport(17),)
    )
    await loop.sock_sendto(sock, encode_message(request), to)
    answer = decode_message(await asyncio.wait_for(loop.sock_recv(sock, 2048), WAIT))
    realm, nonce = answer.get(Realm), answer.get(Nonce)
    assert realm is not None and nonce is not None
    return realm.value, nonce.value


def _signed(method: StunMethod, realm: str, nonce: str, *extra: object) -> StunMessage:
    attributes = (Username("user"), Realm(realm), Nonce(nonce), *extra)
    return StunMessage(method, StunClass.REQUEST, os.urandom(12), attributes)  # type: ignore[arg-type]


def test_one_line_per_source_and_none_for_challenges(caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_scenario(caplog))


async def _scenario(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay.service")
    loop = asyncio.get_running_loop()
    config = TurnConfig(
        realm="test",
        credentials=static_users({"user": "pass"}),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
    )
    service = RelayService(
        TurnServer(config, random.Random(), loop.time()), udp=[("127.0.0.1", 0)], tcp=[]
    )
    address = (await service.start()).udp[0]
    sockets: list[socket.socket] = []
    try:
        for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
            sock.setblocking(False)
            sockets.append(sock)
        wrong = long_term_key("user", "test", "wrong")
        for sock in sockets[:2]:
            realm, nonce = await _challenge(sock, address)
            for _ in range(WRONG_TRIES):
                allocate = _signed(StunMethod.ALLOCATE, realm, nonce, RequestedTransport(17))
                assert await _ask(sock, allocate, address, wrong) == 401
        right = long_term_key("user", "test", "pass")
        realm, nonce = await _challenge(sockets[2], address)
        allocate = _signed(StunMethod.ALLOCATE, realm, nonce, RequestedTransport(17))
        assert await _ask(sockets[2], allocate, address, right) == 0
        permission = _signed(
            StunMethod.CREATE_PERMISSION, realm, nonce, XorPeerAddress(("192.0.2.1", 9))
        )
        assert await _ask(sockets[2], permission, address, right) == 403
    finally:
        for sock in sockets:
            sock.close()
        service.close()
    lines = [
        match.groups()
        for record in caplog.records
        if (match := LINE.match(record.getMessage())) is not None
    ]
    assert sorted(lines) == [
        ("turn-auth", "bad-credentials", "127.0.0.2", "1"),
        ("turn-auth", "bad-credentials", "127.0.0.3", "1"),
        ("turn-auth", "forbidden", "127.0.0.4", "1"),
    ]
    assert service.refusal_log.total == 2 * WRONG_TRIES + 1
