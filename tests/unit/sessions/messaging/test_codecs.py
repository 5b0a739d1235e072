"""Envelope, body, mailbox RPC, prekey and mailbox-list codecs: round trips and total decoders."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.identity import Identity
from p2pnode.sessions.chat_message import (
    GENESIS_HASH,
    MAX_ENVELOPE_BYTES,
    MAX_TEXT_BYTES,
    Body,
    BodyKind,
    ChatDecodeError,
    Envelope,
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
)
from p2pnode.sessions.crypto import InitHeader, KeyAgreement, RatchetHeader, RatchetSession
from p2pnode.sessions.mailbox_list import (
    MailboxEntry,
    MailboxListDecodeError,
    decode_mailbox_list,
    encode_mailbox_list,
    mailbox_list_record,
    mailboxes_from_record,
)
from p2pnode.sessions.mailbox_wire import (
    AckRequest,
    DepositRequest,
    FetchRequest,
    MailboxDecodeError,
    MailboxItem,
    MailboxResponse,
    RegisterRequest,
    RequestKind,
    Status,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    sign_ack,
    sign_deposit,
    sign_fetch,
    signature_valid,
)
from p2pnode.sessions.prekeys import (
    PrekeyDecodeError,
    bundle_from_record,
    decode_prekey_payload,
    prekey_record,
)

K = bytes(range(32))


def _envelope(init: bool) -> Envelope:
    header = InitHeader(K, os.urandom(32), os.urandom(32), None) if init else None
    return Envelope(K, os.urandom(32), header, RatchetHeader(os.urandom(32), 3, 7), os.urandom(90))


BODIES = [
    Body(BodyKind.TEXT, os.urandom(16), 1, GENESIS_HASH, 1_700_000_000_000, "hello ✓"),
    Body(BodyKind.TEXT, os.urandom(16), 9, os.urandom(32), 0, "x" * MAX_TEXT_BYTES),
    Body(BodyKind.DELIVERED, os.urandom(16), 0, GENESIS_HASH, 5, "", (os.urandom(16),)),
    Body(
        BodyKind.READ,
        os.urandom(16),
        0,
        GENESIS_HASH,
        5,
        "",
        tuple(os.urandom(16) for _ in range(9)),
    ),
]


@pytest.mark.parametrize("body", BODIES)
def test_body_round_trip_and_trailing_data(body: Body) -> None:
    data = encode_body(body)
    assert decode_body(data) == body
    with pytest.raises(ChatDecodeError):
        decode_body(data + b"\x00")
    with pytest.raises(ChatDecodeError):
        decode_body(data[:-1])


def test_body_bounds() -> None:
    with pytest.raises(ValueError, match="longer"):
        Body(BodyKind.TEXT, os.urandom(16), 1, GENESIS_HASH, 0, "x" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(ValueError):
        Body(BodyKind.DELIVERED, os.urandom(16), 0, GENESIS_HASH, 0)


@pytest.mark.parametrize("init", [True, False])
def test_envelope_round_trip(init: bool) -> None:
    envelope = _envelope(init)
    data = encode_envelope(envelope)
    assert decode_envelope(data) == envelope
    for cut in range(len(data)):
        with pytest.raises(ChatDecodeError):
            decode_envelope(data[:cut])


def test_envelope_init_must_be_the_sender() -> None:
    envelope = _envelope(True)
    assert envelope.init is not None
    other = Envelope(
        os.urandom(32), envelope.recipient, envelope.init, envelope.header, envelope.ciphertext
    )
    with pytest.raises(ChatDecodeError, match="sender"):
        decode_envelope(encode_envelope(other))


@given(st.binary(max_size=400))
def test_chat_decoders_are_total(data: bytes) -> None:
    for decoder in (decode_body, decode_envelope):
        with contextlib.suppress(ChatDecodeError):
            decoder(data)


@given(st.binary(max_size=400))
def test_mailbox_decoders_are_total(data: bytes) -> None:
    for decoder in (decode_request, decode_response):
        with contextlib.suppress(MailboxDecodeError):
            decoder(data)


@given(st.binary(max_size=200))
def test_record_payload_decoders_are_total(data: bytes) -> None:
    with contextlib.suppress(PrekeyDecodeError):
        decode_prekey_payload(data)
    with contextlib.suppress(MailboxListDecodeError):
        decode_mailbox_list(data)


def test_requests_round_trip_and_signatures_bind_the_mailbox() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    mailbox, other_mailbox = os.urandom(32), os.urandom(32)
    requests: list[DepositRequest | FetchRequest | AckRequest] = [
        sign_deposit(alice, mailbox, 7, bob.public_key, (b"a", b"bc"), 1000),
        sign_fetch(bob, mailbox, 8, 1000, 50),
        sign_ack(bob, mailbox, 9, 1000, (os.urandom(16),)),
    ]
    for request in requests:
        data = encode_request(request)
        assert decode_request(data) == request
        assert signature_valid(mailbox, request)
        assert not signature_valid(other_mailbox, request)
        with pytest.raises(MailboxDecodeError):
            decode_request(data + b"\x00")
    register = RegisterRequest(1, b"record")
    assert decode_request(encode_request(register)) == register


def test_response_round_trip() -> None:
    response = MailboxResponse(
        RequestKind.FETCH,
        3,
        Status.OK,
        (Status.OK, Status.RECIPIENT_FULL_BYTES),
        (MailboxItem(os.urandom(16), b"env", 12),),
        True,
    )
    assert decode_response(encode_response(response)) == response


def test_prekey_record_round_trip_and_forgery() -> None:
    identity = Identity.generate()
    agreement = KeyAgreement.create(os.urandom(32))  # a different key than the record owner
    record = prekey_record(identity, agreement.bundle(), created_at=5, seq=1, now=10)
    with pytest.raises(PrekeyDecodeError, match="owner"):
        bundle_from_record(record)
    seed = os.urandom(32)
    identity = Identity.generate(seed)
    agreement = KeyAgreement.create(seed)
    record = prekey_record(identity, agreement.bundle(), created_at=5, seq=1, now=10)
    bundle = bundle_from_record(record)
    assert bundle.signed_prekey == agreement.bundle().signed_prekey


def test_mailbox_list_round_trip() -> None:
    entries = tuple(MailboxEntry(os.urandom(32), "127.0.0.1", 4000 + i) for i in range(3))
    assert decode_mailbox_list(encode_mailbox_list(entries)) == entries
    record = mailbox_list_record(Identity.generate(), entries, seq=1, now=100)
    assert mailboxes_from_record(record) == entries
    with pytest.raises(ValueError):
        encode_mailbox_list(entries + entries[:1])


VALID = [encode_body(b) for b in BODIES[:1] + BODIES[2:]] + [
    encode_envelope(_envelope(True)),
    encode_request(sign_deposit(Identity.generate(), K, 1, K, (b"e",), 5)),
    encode_response(MailboxResponse(RequestKind.DEPOSIT, 1, Status.OK, (Status.OK,))),
]


@given(st.sampled_from(VALID), st.integers(0, 10_000), st.integers(0, 255))
def test_decoders_total_on_mutated_valid_input(data: bytes, where: int, value: int) -> None:
    mutated = bytearray(data)
    mutated[where % len(mutated)] = value
    for decoder, error in (
        (decode_body, ChatDecodeError),
        (decode_envelope, ChatDecodeError),
        (decode_request, MailboxDecodeError),
        (decode_response, MailboxDecodeError),
    ):
        with contextlib.suppress(error):
            decoder(bytes(mutated))


def test_largest_text_fits_an_envelope_and_one_byte_more_does_not() -> None:
    alice, bob = KeyAgreement.create(os.urandom(32)), KeyAgreement.create(os.urandom(32))
    text = "é" * (MAX_TEXT_BYTES // 2)  # 2 bytes each: exactly the limit in UTF-8
    body = Body(BodyKind.TEXT, os.urandom(16), 1, GENESIS_HASH, 0, text)
    _, _, header, ciphertext = RatchetSession.initiate(alice, bob.bundle(), encode_body(body))
    envelope = Envelope(K, os.urandom(32), None, header, ciphertext)
    assert decode_envelope(encode_envelope(envelope)) == envelope
    assert len(encode_envelope(envelope)) <= MAX_ENVELOPE_BYTES
    with pytest.raises(ValueError):
        Body(BodyKind.TEXT, os.urandom(16), 1, GENESIS_HASH, 0, text + "x")
    with pytest.raises(ValueError):
        Envelope(K, os.urandom(32), None, header, ciphertext + bytes(MAX_ENVELOPE_BYTES))
