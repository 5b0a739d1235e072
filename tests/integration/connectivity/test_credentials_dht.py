"""The credentials RPC over real DHT nodes on loopback: proof of identity, then credentials."""

from __future__ import annotations

import asyncio

import pytest

from p2pnode.connectivity.credentials import (
    CredentialIssuer,
    CredentialsError,
    request_credentials,
)
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from relay.auth import rest_api_credentials

SECRET = b"integration-secret-0123456789"


async def _scenario(demoted: bool, client_mode: bool = False) -> None:
    supernode = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
    reason: list[str | None] = ["operator opted out" if demoted else None]
    issuer = CredentialIssuer(
        SECRET,
        "p2pnode",
        own_key=supernode.identity.public_key,
        unavailable=lambda: reason[0],
    )
    issuer.register(supernode)
    await supernode.start()
    peer_identity = Identity.generate()
    peer = DhtNode(
        peer_identity,
        listen=("127.0.0.1", 0),
        bootstrap=[supernode.address],
        client_mode=client_mode,
    )
    try:
        async with asyncio.timeout(10):
            await peer.start()
            if demoted:
                with pytest.raises(CredentialsError, match="operator opted out"):
                    await request_credentials(
                        peer, supernode.address, supernode.identity.public_key
                    )
                return
            credentials = await request_credentials(
                peer, supernode.address, supernode.identity.public_key
            )
            # A requester claiming another key at the supernode's address gets no answer
            # accepted (the reply comes from the supernode's key, not the one expected).
            with pytest.raises(CredentialsError, match="no answer"):
                await request_credentials(
                    peer,
                    supernode.address,
                    Identity.generate().public_key,
                    attempts=1,
                )
    finally:
        await peer.close()
        await supernode.close()
    assert credentials.peer_id == peer_identity.peer_id
    lookup = rest_api_credentials(SECRET)
    found = lookup(credentials.username, "p2pnode")
    assert found is not None and found.identity == peer_identity.peer_id
    assert issuer.outcomes["issued"] >= 1


def test_proven_peer_gets_credentials_over_the_dht() -> None:
    asyncio.run(_scenario(demoted=False))


def test_demoted_supernode_refuses() -> None:
    asyncio.run(_scenario(demoted=True))


def test_client_mode_peer_gets_credentials() -> None:
    """Client-mode peers are never challenged by the DHT: the request signature is the proof."""
    asyncio.run(_scenario(demoted=False, client_mode=True))
