"""X3DH + Double Ratchet sessions: order, skipped-key bounds, replay, tampering, persistence."""

from __future__ import annotations

import os

import pytest

from p2pnode.identity import Identity
from p2pnode.sessions.crypto import (
    MAX_SKIP_PER_STEP,
    KeyAgreement,
    PrekeyBundle,
    RatchetSession,
    SessionError,
    SessionFailure,
)


def _pair() -> tuple[KeyAgreement, KeyAgreement]:
    return KeyAgreement.create(os.urandom(32)), KeyAgreement.create(os.urandom(32))


def test_identity_key_is_our_ed25519_key() -> None:
    seed = os.urandom(32)
    assert KeyAgreement.create(seed).bundle().identity_key == Identity.generate(seed).public_key


def test_out_of_order_first_message_opens_the_session_and_all_decrypt() -> None:
    alice, bob = _pair()
    session_a, init, header, ciphertext = RatchetSession.initiate(alice, bob.bundle(), b"m0")
    later = [session_a.encrypt(f"m{i}".encode()) for i in range(1, 6)]
    # the fourth arrives first: it carries no init, so the app passes the session's init
    session_b, plaintext = RatchetSession.respond(bob, init, *later[3])
    assert plaintext == b"m4"
    assert session_b.session_id == session_a.session_id
    assert session_b.decrypt(header, ciphertext) == b"m0"
    for index in (4, 0, 2, 1):
        assert session_b.decrypt(*later[index]) == f"m{index + 1}".encode()


def test_replay_refused_and_state_unchanged() -> None:
    alice, bob = _pair()
    session_a, init, header, ciphertext = RatchetSession.initiate(alice, bob.bundle(), b"hi")
    session_b, _ = RatchetSession.respond(bob, init, header, ciphertext)
    second = session_a.encrypt(b"two")
    assert session_b.decrypt(*second) == b"two"
    with pytest.raises(SessionError) as caught:
        session_b.decrypt(*second)
    assert caught.value.reason is SessionFailure.REPLAY
    assert session_b.decrypt(*session_a.encrypt(b"three")) == b"three"


def test_tampered_ciphertext_and_header_refused() -> None:
    alice, bob = _pair()
    session_a, init, header, ciphertext = RatchetSession.initiate(alice, bob.bundle(), b"hi")
    session_b, _ = RatchetSession.respond(bob, init, header, ciphertext)
    header2, body = session_a.encrypt(b"secret")
    flipped = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(SessionError) as caught:
        session_b.decrypt(header2, flipped)
    assert caught.value.reason is SessionFailure.TAMPERED
    moved = type(header2)(
        header2.ratchet_key, header2.previous_chain_length, header2.message_number + 1
    )
    with pytest.raises(SessionError):
        session_b.decrypt(moved, body)
    assert session_b.decrypt(header2, body) == b"secret"  # the failures changed nothing


def test_skipping_too_many_keys_refused() -> None:
    alice, bob = _pair()
    session_a, init, header, ciphertext = RatchetSession.initiate(alice, bob.bundle(), b"hi")
    session_b, _ = RatchetSession.respond(bob, init, header, ciphertext)
    h, body = session_a.encrypt(b"far")
    far = type(h)(h.ratchet_key, h.previous_chain_length, h.message_number + MAX_SKIP_PER_STEP + 5)
    with pytest.raises(SessionError) as caught:
        session_b.decrypt(far, body)
    assert caught.value.reason in (SessionFailure.TOO_MANY_SKIPPED, SessionFailure.TAMPERED)


def test_forged_bundle_refused() -> None:
    alice, bob = _pair()
    mallory = KeyAgreement.create(os.urandom(32)).bundle()
    real = bob.bundle()
    forged = PrekeyBundle(real.identity_key, mallory.signed_prekey, mallory.signed_prekey_signature)
    with pytest.raises(SessionError) as caught:
        RatchetSession.initiate(alice, forged, b"x")
    assert caught.value.reason is SessionFailure.BAD_BUNDLE


def test_state_round_trips_and_reply_clears_pending_init() -> None:
    alice, bob = _pair()
    session_a, init, header, ciphertext = RatchetSession.initiate(alice, bob.bundle(), b"hi")
    assert session_a.pending_init == init
    session_b, _ = RatchetSession.respond(bob, init, header, ciphertext)
    session_a = RatchetSession.from_json(session_a.to_json())
    session_b = RatchetSession.from_json(session_b.to_json())
    bob = KeyAgreement.from_json(bob.to_json())
    reply = session_b.encrypt(b"reply")
    assert session_a.decrypt(*reply) == b"reply"
    assert session_a.pending_init is None
    assert session_b.decrypt(*session_a.encrypt(b"after")) == b"after"


def test_one_time_prekey_used_once_then_forgotten() -> None:
    alice, bob = _pair()
    bob.add_one_time_prekeys(2)
    bundle = bob.bundle()
    one_time = bundle.one_time_prekeys[0]
    _, init, header, ciphertext = RatchetSession.initiate(alice, bundle, b"hi", one_time)
    RatchetSession.respond(bob, init, header, ciphertext)
    assert one_time not in bob.bundle().one_time_prekeys
    with pytest.raises(SessionError) as caught:
        RatchetSession.respond(bob, init, header, ciphertext)
    assert caught.value.reason is SessionFailure.UNKNOWN_PREKEY


def test_rotated_signed_prekey_answers_one_more_period() -> None:
    alice, bob = _pair()
    old_bundle = bob.bundle()
    bob.rotate_signed_prekey()
    _, init, header, ciphertext = RatchetSession.initiate(alice, old_bundle, b"old")
    assert RatchetSession.respond(bob, init, header, ciphertext)[1] == b"old"
    bob.rotate_signed_prekey()
    _, init, header, ciphertext = RatchetSession.initiate(alice, old_bundle, b"older")
    with pytest.raises(SessionError) as caught:
        RatchetSession.respond(bob, init, header, ciphertext)
    assert caught.value.reason is SessionFailure.UNKNOWN_PREKEY


def test_corrupt_state_is_one_error() -> None:
    with pytest.raises(SessionError) as caught:
        RatchetSession.from_json("{not json")
    assert caught.value.reason is SessionFailure.BAD_STATE
    with pytest.raises(SessionError):
        KeyAgreement.from_json('{"version": 9}')
