"""The registration client against our registrar, wired in memory in virtual time."""
# ruff: noqa: S106, S107  (test credentials, on purpose)

from __future__ import annotations

import itertools
import random

from p2pnode.gateways.sip.client import RegistrationClient, RegistrationConfig, RegistrationState
from p2pnode.gateways.sip.digest import DigestServer, StoredCredentials, stored_credentials
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.message import SipRequest
from p2pnode.gateways.sip.parser import parse_datagram, serialize
from p2pnode.gateways.sip.registrar import Registrar, RegistrarConfig

DOMAIN = "gw.test"
ACCOUNT = stored_credentials("alice", DOMAIN, "right horse")
SOURCE = ("203.0.113.5", 41000)


def lookup(username: str) -> StoredCredentials | None:
    return ACCOUNT if username == "alice" else None


def setup(
    password: str = "right horse", *, expires: int = 600, min_expires: int = 60
) -> tuple[Registrar, RegistrationClient]:
    registrar = Registrar(
        RegistrarConfig(DOMAIN, min_expires=min_expires),
        DigestServer(DOMAIN, b"x" * 32, randbytes=random.Random(2).randbytes, nonce_lifetime=300),
        lookup,
    )
    client = RegistrationClient(
        RegistrationConfig(
            registrar=SipUri("sip", None, None, DOMAIN, None),
            aor=SipUri("sip", "alice", None, DOMAIN, None),
            username="alice",
            password=password,
            contact=SipUri("sip", "alice", None, "192.168.1.20", 5060),
            via="SIP/2.0/UDP 192.168.1.20:5060",
            expires=expires,
        ),
        call_id="client-1",
        tag="c1",
    )
    return registrar, client


_ids = itertools.count()


def exchange(
    registrar: Registrar, client: RegistrationClient, request: SipRequest, now: float
) -> int:
    """Run REGISTERs until the client sends no more; returns how many went out."""
    sent = 0
    next_request: SipRequest | None = request
    while next_request is not None and sent < 10:
        sent += 1
        wire = parse_datagram(serialize(next_request))  # through the wire format
        assert isinstance(wire, SipRequest)
        response = registrar.handle(wire, SOURCE, now).response
        index = next(_ids)
        next_request = client.on_response(response, now, branch_id=f"b{index}", cnonce=f"cn{index}")
    return sent


def test_register_answers_the_challenge_and_refreshes_before_expiry() -> None:
    registrar, client = setup()
    assert exchange(registrar, client, client.register(branch_id="b", cnonce="c"), 0.0) == 2
    assert client.state is RegistrationState.REGISTERED and client.granted == 600
    assert client.next_refresh() == 480.0
    (binding,) = registrar.bindings("alice", 1.0)
    assert binding.source == SOURCE and str(binding.contact) == "sip:alice@192.168.1.20:5060"
    # The refresh reuses the challenge with nc=2: one REGISTER, no new 401.
    assert exchange(registrar, client, client.register(branch_id="r", cnonce="c2"), 100.0) == 1
    assert client.state is RegistrationState.REGISTERED
    # Much later the nonce is stale: one 401 stale=true, then success.
    assert exchange(registrar, client, client.register(branch_id="s", cnonce="c3"), 480.0) == 2
    assert client.state is RegistrationState.REGISTERED
    assert registrar.bindings("alice", 1000.0)[0].expires_at == 1080.0


def test_wrong_password_fails_after_one_retry() -> None:
    registrar, client = setup(password="wrong horse")
    assert exchange(registrar, client, client.register(branch_id="b", cnonce="c"), 0.0) == 2
    assert client.state is RegistrationState.FAILED
    assert client.failure == "credentials refused"
    assert registrar.registered_accounts() == 0


def test_interval_too_brief_is_retried_with_min_expires() -> None:
    registrar, client = setup(expires=30, min_expires=120)
    exchange(registrar, client, client.register(branch_id="b", cnonce="c"), 0.0)
    assert client.state is RegistrationState.REGISTERED and client.granted == 120


def test_unregister_removes_the_binding() -> None:
    registrar, client = setup()
    exchange(registrar, client, client.register(branch_id="b", cnonce="c"), 0.0)
    exchange(registrar, client, client.unregister(branch_id="u", cnonce="c9"), 10.0)
    assert client.state is RegistrationState.UNREGISTERED and client.next_refresh() is None
    assert registrar.bindings("alice", 10.0) == ()
