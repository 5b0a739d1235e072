"""The sans-IO registrar: digest, Expires/Min-Expires, caps, removal, the source as path."""
# ruff: noqa: S106  (test credentials, on purpose)

from __future__ import annotations

import random

from p2pnode.gateways.sip.digest import (
    DigestServer,
    StoredCredentials,
    authorization,
    stored_credentials,
)
from p2pnode.gateways.sip.headers import SipUri, parse_auth
from p2pnode.gateways.sip.message import Header, SipRequest
from p2pnode.gateways.sip.registrar import (
    RegisterOutcome,
    Registrar,
    RegistrarConfig,
    RegistrationResult,
)

DOMAIN = "gw.test"
ACCOUNTS = {
    "alice": stored_credentials("alice", DOMAIN, "alice-secret"),
    "bob": stored_credentials("bob", DOMAIN, "bob-secret"),
}
SOURCE = ("203.0.113.7", 40001)


def lookup(username: str) -> StoredCredentials | None:
    return ACCOUNTS.get(username)


def make_registrar(**overrides: int) -> Registrar:
    config = RegistrarConfig(domain=DOMAIN, max_contacts=2, **overrides)
    return Registrar(
        config, DigestServer(DOMAIN, b"k" * 32, randbytes=random.Random(7).randbytes), lookup
    )


def register(
    registrar: Registrar,
    now: float,
    *,
    user: str = "alice",
    login: str | None = None,
    password: str | None = None,
    contacts: tuple[str, ...] = ("<sip:alice@10.0.0.2:5060>",),
    expires: str | None = "600",
    cseq: int = 1,
    call_id: str = "reg-1",
    extra: tuple[Header, ...] = (),
    authenticate: bool = True,
) -> tuple[SipRequest, RegisterOutcome]:
    """Send a REGISTER, answering the 401 once with digest when ``authenticate``."""
    uri = SipUri("sip", None, None, DOMAIN, None)

    def build(number: int, auth: tuple[Header, ...]) -> SipRequest:
        headers = (
            Header("Via", f"SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK{call_id}{number}"),
            Header("Max-Forwards", "70"),
            Header("From", f"<sip:{user}@{DOMAIN}>;tag=f{call_id}"),
            Header("To", f"<sip:{user}@{DOMAIN}>"),
            Header("Call-ID", call_id),
            Header("CSeq", f"{number} REGISTER"),
            *(Header("Contact", contact) for contact in contacts),
            *((Header("Expires", expires),) if expires is not None else ()),
            *extra,
            *auth,
            Header("Content-Length", "0"),
        )
        return SipRequest.build("REGISTER", uri, headers, b"")

    first = build(cseq, ())
    outcome = registrar.handle(first, SOURCE, now)
    if not authenticate or outcome.response.status != 401:
        return first, outcome
    challenge = parse_auth(outcome.response.header_values("WWW-Authenticate")[-1])  # MD5
    answer = authorization(
        challenge,
        method="REGISTER",
        uri=str(uri),
        username=login or user,
        password=password or f"{login or user}-secret",
        cnonce="abc",
    )
    second = build(cseq + 1, (Header("Authorization", answer),))
    return second, registrar.handle(second, SOURCE, now)


def test_challenge_then_register_keeps_the_source_as_path() -> None:
    registrar = make_registrar()
    _, first = register(registrar, 0.0, authenticate=False)
    assert first.response.status == 401
    algorithms = [
        parse_auth(value).get("algorithm")
        for value in first.response.header_values("WWW-Authenticate")
    ]
    assert algorithms == ["SHA-256", "MD5"]
    _, outcome = register(registrar, 0.0)
    assert outcome.result is RegistrationResult.REGISTERED
    response = outcome.response
    assert response.status == 200 and response.to.tag is not None
    assert [(str(c.uri), c.param("expires")) for c in response.contacts] == [
        ("sip:alice@10.0.0.2:5060", "600")
    ]
    (binding,) = registrar.bindings("alice", 1.0)
    assert (binding.source, binding.reliable) == (SOURCE, False)


def test_wrong_password_and_unknown_user_get_the_same_401() -> None:
    registrar = make_registrar()
    _, wrong = register(registrar, 0.0, password="guess")
    _, unknown = register(registrar, 0.0, user="mallory", login="mallory", password="guess")
    for outcome in (wrong, unknown):
        assert outcome.result is RegistrationResult.AUTH_FAILED
        assert outcome.response.status == 401
    assert wrong.reason == unknown.reason
    assert registrar.registered_accounts() == 0


def test_only_the_own_aor_may_be_registered() -> None:
    _, outcome = register(make_registrar(), 0.0, user="bob", login="alice")
    assert outcome.response.status == 403


def test_expires_bounds_and_caps() -> None:
    registrar = make_registrar()
    _, brief = register(registrar, 0.0, expires="30")
    assert brief.response.status == 423
    assert brief.response.header("Min-Expires") == "60"
    _, long = register(registrar, 0.0, expires="100000")
    assert long.response.contacts[0].param("expires") == "3600"
    _, two = register(
        registrar, 1.0, contacts=("<sip:alice@10.0.0.3>;expires=120",), call_id="reg-2"
    )
    assert len(two.response.contacts) == 2
    _, three = register(registrar, 2.0, contacts=("<sip:alice@10.0.0.4>",), call_id="reg-3")
    assert three.response.status == 503
    assert len(registrar.bindings("alice", 2.0)) == 2


def test_removal_by_expires_zero_and_star() -> None:
    registrar = make_registrar()
    register(registrar, 0.0)
    register(registrar, 0.0, contacts=("<sip:alice@10.0.0.3>",), call_id="reg-2")
    _, removed = register(registrar, 1.0, expires="0", call_id="reg-1", cseq=5)
    assert [str(c.uri) for c in removed.response.contacts] == ["sip:alice@10.0.0.3"]
    _, bad_star = register(registrar, 2.0, contacts=("*",), expires="10", call_id="x")
    assert bad_star.response.status == 400
    _, star = register(registrar, 2.0, contacts=("*",), expires="0", call_id="x")
    assert star.response.status == 200 and star.response.contacts == ()
    assert registrar.bindings("alice", 2.0) == ()


def test_query_out_of_order_and_expiry() -> None:
    registrar = make_registrar()
    register(registrar, 0.0, cseq=10)
    _, query = register(registrar, 5.0, contacts=(), call_id="q")
    assert query.result is RegistrationResult.QUERIED
    assert query.response.contacts[0].param("expires") == "595"
    _, stale_cseq = register(registrar, 6.0, cseq=3)  # same Call-ID, lower CSeq: §10.3 step 7
    assert stale_cseq.response.status == 500
    assert registrar.next_expiry() == 600.0
    assert registrar.expire(599.0) == []
    gone = registrar.expire(600.0)
    assert [(user, str(b.contact)) for user, b in gone] == [("alice", "sip:alice@10.0.0.2:5060")]
    assert registrar.registered_accounts() == 0 and registrar.next_expiry() is None


def test_foreign_domain_unsupported_extension_and_stale_nonce() -> None:
    registrar = make_registrar()
    request, _ = register(registrar, 0.0, authenticate=False)
    foreign = SipRequest.build(
        "REGISTER",
        request.uri,
        tuple(
            Header(h.name, h.value.replace(DOMAIN, "elsewhere.test"))
            if h.name in ("To", "From")
            else h
            for h in request.headers
        ),
        b"",
    )
    assert registrar.handle(foreign, SOURCE, 0.0).response.status == 404
    _, extension = register(
        registrar, 0.0, extra=(Header("Require", "nothingSupportsThis"),), authenticate=False
    )
    assert extension.response.status == 420
    assert extension.response.header("Unsupported") == "nothingSupportsThis"
    # A correct answer to a nonce older than its lifetime: 401 with stale=true, no failure.
    late = make_registrar()
    first, challenge = register(late, 0.0, authenticate=False)
    value = challenge.response.header_values("WWW-Authenticate")[-1]
    answer = authorization(
        parse_auth(value),
        method="REGISTER",
        uri=str(first.uri),
        username="alice",
        password="alice-secret",
        cnonce="z",
    )
    retry = SipRequest.build(
        "REGISTER",
        first.uri,
        (*first.headers[:-1], Header("Authorization", answer), first.headers[-1]),
        b"",
    )
    outcome = late.handle(retry, SOURCE, 1000.0)
    assert outcome.result is RegistrationResult.CHALLENGED
    assert parse_auth(outcome.response.header_values("WWW-Authenticate")[0]).get("stale") == "true"


def test_remove_one_binding() -> None:
    registrar = make_registrar()
    register(registrar, 0.0)
    register(registrar, 0.0, contacts=("<sip:alice@10.0.0.3>",), call_id="reg-2")
    assert registrar.remove("alice", SipUri("sip", "alice", None, "10.0.0.2", 5060))
    assert not registrar.remove("alice", SipUri("sip", "alice", None, "10.0.0.9", None))
    assert [str(b.contact) for b in registrar.bindings("alice", 1.0)] == ["sip:alice@10.0.0.3"]


def test_digest_uri_must_name_the_request_uri_compared_as_a_uri() -> None:
    registrar = make_registrar()
    first, challenge = register(registrar, 0.0, authenticate=False)
    value = challenge.response.header_values("WWW-Authenticate")[-1]
    for digest_uri, status in (("SIP:GW.TEST", 200), ("sip:elsewhere.test", 401)):
        answer = authorization(
            parse_auth(value),
            method="REGISTER",
            uri=digest_uri,
            username="alice",
            password="alice-secret",
            cnonce=digest_uri,
        )
        retry = SipRequest.build(
            "REGISTER",
            first.uri,
            (*first.headers[:-1], Header("Authorization", answer), first.headers[-1]),
            b"",
        )
        outcome = registrar.handle(retry, SOURCE, 1.0)
        assert outcome.response.status == status
    assert outcome.reason == "uri mismatch"
