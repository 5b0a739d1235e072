"""End-to-end sessions: X3DH key agreement, then a Double Ratchet with ChaCha20-Poly1305.

Built on the ``x3dh`` and ``doubleratchet`` packages (their async API runs here
synchronously: none of their coroutines awaits anything but other coroutines
of the same packages, so ``_run`` drives each to completion without a loop).

Invariants:
- Our Ed25519 identity seed *is* the X3DH identity key (``IdentityKeyFormat.ED_25519``):
  nobody has a second long-term key to lose or to verify.
- Every message key is used once: the AEAD nonce is derived from the message key,
  which the ratchet never hands out twice; the caller persists the state each
  call advanced in the same transaction as the message (see ``store.py``).
- A failed decryption leaves the session untouched (the package works on a copy
  and swaps it in on success only); a replay and a tampered ciphertext are
  both refused with ``SessionError`` and a ``SessionFailure`` reason.
- Skipped keys are bounded: at most ``MAX_SKIPPED_KEYS`` kept, and a header
  asking to skip more than ``MAX_SKIP_PER_STEP`` is refused.
- Until the initiator hears back, each of its messages carries the X3DH header,
  so the first one to arrive (in any order) opens the session at the responder.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import doubleratchet
import x3dh
import xeddsa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from doubleratchet.recommended import HashFunction as RatchetHash
from doubleratchet.recommended import diffie_hellman_ratchet_curve25519, kdf_hkdf
from x3dh.identity_key_pair import IdentityKeyPairSeed

__all__ = [
    "MAX_SKIPPED_KEYS",
    "MAX_SKIP_PER_STEP",
    "InitHeader",
    "KeyAgreement",
    "PrekeyBundle",
    "RatchetHeader",
    "RatchetSession",
    "SessionError",
    "SessionFailure",
    "session_id_for",
]

MAX_SKIPPED_KEYS = 1000  # message keys kept for late or re-ordered messages, per session
MAX_SKIP_PER_STEP = 1000  # keys one header may make us derive (DoS bound)
KEY_BYTES = 32
_X3DH_INFO = b"p2pnode-x3dh-v1"
_CHAIN_CONSTANT = b"\x02\x01"
_T = TypeVar("_T")


class SessionFailure(enum.Enum):
    """Why a message could not be decrypted or a session not opened."""

    TAMPERED = "tampered"  # AEAD tag did not verify (wrong key, changed bytes, wrong AD)
    REPLAY = "replay"  # this message key was already used
    TOO_MANY_SKIPPED = "too-many-skipped"
    UNKNOWN_PREKEY = "unknown-prekey"  # signed or one-time prekey no longer held
    BAD_BUNDLE = "bad-bundle"  # signature on the signed prekey does not verify
    BAD_STATE = "bad-state"  # stored state does not parse


class SessionError(ValueError):
    """A message or key agreement refused; ``reason`` is the counted cause."""

    def __init__(self, reason: SessionFailure, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Drive a coroutine that never suspends (the packages' crypto) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    coroutine.close()
    raise RuntimeError("crypto coroutine suspended; it must never wait for I/O")


class _Aead(doubleratchet.AEAD):
    """ChaCha20-Poly1305; key and nonce come from HKDF over the one-use message key."""

    @staticmethod
    def _split(key: bytes) -> tuple[bytes, bytes]:
        material = HKDF(SHA256(), 44, salt=None, info=b"p2pnode-aead-v1").derive(key)
        return material[:32], material[32:]

    @staticmethod
    async def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
        aead_key, nonce = _Aead._split(key)
        return ChaCha20Poly1305(aead_key).encrypt(nonce, plaintext, associated_data)

    @staticmethod
    async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
        aead_key, nonce = _Aead._split(key)
        try:
            return ChaCha20Poly1305(aead_key).decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise doubleratchet.AuthenticationFailedException("tag mismatch") from None


class _RootKdf(kdf_hkdf.KDF):
    @staticmethod
    def _get_hash_function() -> RatchetHash:
        return RatchetHash.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return b"p2pnode-root-v1"


class _ChainKdf(kdf_hkdf.KDF):
    @staticmethod
    def _get_hash_function() -> RatchetHash:
        return RatchetHash.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return b"p2pnode-chain-v1"


class _DhRatchet(diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet):
    pass


class _DoubleRatchet(doubleratchet.DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: doubleratchet.Header) -> bytes:
        # length-prefixed AD, then the header in a fixed layout: a unique, reversible pair
        return (
            len(associated_data).to_bytes(2, "big")
            + associated_data
            + header.ratchet_pub
            + header.previous_sending_chain_length.to_bytes(4, "big")
            + header.sending_chain_length.to_bytes(4, "big")
        )


class _X3dhState(x3dh.BaseState):
    @staticmethod
    def _encode_public_key(key_format: x3dh.IdentityKeyFormat, pub: bytes) -> bytes:
        tag = b"\x01" if key_format is x3dh.IdentityKeyFormat.ED_25519 else b"\x02"
        return tag + pub


@dataclass(frozen=True, slots=True)
class PrekeyBundle:
    """What a peer publishes so others can open a session while it is offline."""

    identity_key: bytes  # Ed25519 public key (the peer's identity)
    signed_prekey: bytes  # X25519
    signed_prekey_signature: bytes  # XEdDSA/Ed25519 by the identity key
    one_time_prekeys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class InitHeader:
    """X3DH header carried by an initiator's messages until the responder answers."""

    identity_key: bytes
    ephemeral_key: bytes
    signed_prekey: bytes
    one_time_prekey: bytes | None


@dataclass(frozen=True, slots=True)
class RatchetHeader:
    ratchet_key: bytes
    previous_chain_length: int
    message_number: int


def session_id_for(init: InitHeader) -> bytes:
    """A session is named by its X3DH ephemeral key: both sides compute the same id."""
    return hashlib.blake2b(init.ephemeral_key, digest_size=16, person=b"p2pnode-sessid").digest()


class KeyAgreement:
    """Our side of X3DH: identity, signed prekey (current and previous), one-time prekeys."""

    __slots__ = ("_state",)

    def __init__(self, state: _X3dhState) -> None:
        self._state = state

    @classmethod
    def create(cls, identity_seed: bytes) -> KeyAgreement:
        """A fresh state on our Ed25519 seed, with a new signed prekey and no one-time prekeys."""
        state = _X3dhState.create(
            x3dh.IdentityKeyFormat.ED_25519,
            x3dh.HashFunction.SHA_256,
            _X3DH_INFO,
            IdentityKeyPairSeed(identity_seed),
        )
        return cls(state)

    def to_json(self) -> str:
        return json.dumps(self._state.json, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KeyAgreement:
        try:
            state, _ = _X3dhState.from_json(
                json.loads(text),
                x3dh.IdentityKeyFormat.ED_25519,
                x3dh.HashFunction.SHA_256,
                _X3DH_INFO,
            )
        except Exception as error:  # pydantic and json raise many kinds: all mean corrupt
            raise SessionError(SessionFailure.BAD_STATE, type(error).__name__) from None
        return cls(state)

    def bundle(self) -> PrekeyBundle:
        raw = self._state.bundle
        return PrekeyBundle(
            identity_key=raw.identity_key,
            signed_prekey=raw.signed_pre_key,
            signed_prekey_signature=raw.signed_pre_key_sig,
            one_time_prekeys=tuple(sorted(raw.pre_keys)),
        )

    def rotate_signed_prekey(self) -> None:
        """New signed prekey; the previous one still answers for one more period."""
        self._state.rotate_signed_pre_key()

    def add_one_time_prekeys(self, count: int) -> None:
        self._state.generate_pre_keys(count)

    def forget_one_time_prekey(self, public: bytes) -> bool:
        """Delete a one-time prekey once a session used it: it opens nothing again."""
        deleted: bool = self._state.delete_pre_key(public)
        return deleted


def _bundle_for_package(bundle: PrekeyBundle, one_time: bytes | None) -> x3dh.Bundle:
    return x3dh.Bundle(
        identity_key=bundle.identity_key,
        signed_pre_key=bundle.signed_prekey,
        signed_pre_key_sig=bundle.signed_prekey_signature,
        pre_keys=frozenset() if one_time is None else frozenset({one_time}),
    )


def verify_bundle(bundle: PrekeyBundle) -> bool:
    """The signed prekey is signed by the identity key (XEdDSA over its encoding)."""
    return bool(
        xeddsa.ed25519_verify(
            bundle.signed_prekey_signature,
            bundle.identity_key,
            b"\x02" + bundle.signed_prekey,
        )
    )


class RatchetSession:
    """One Double Ratchet session with one peer; state serialises to JSON text."""

    __slots__ = ("_associated_data", "_init", "_ratchet", "session_id")

    def __init__(
        self,
        ratchet: _DoubleRatchet,
        associated_data: bytes,
        init: InitHeader | None,
        session_id: bytes,
    ) -> None:
        self._ratchet = ratchet
        self._associated_data = associated_data
        self._init = init  # set while we initiated and have not heard back
        self.session_id = session_id

    @property
    def pending_init(self) -> InitHeader | None:
        """The X3DH header our messages still carry (None once the peer answered)."""
        return self._init

    @classmethod
    def initiate(
        cls,
        ours: KeyAgreement,
        theirs: PrekeyBundle,
        plaintext: bytes,
        one_time_prekey: bytes | None = None,
    ) -> tuple[RatchetSession, InitHeader, RatchetHeader, bytes]:
        """Open a session to ``theirs`` with the first message; returns it encrypted."""
        if not verify_bundle(theirs):
            raise SessionError(SessionFailure.BAD_BUNDLE, "signed prekey signature invalid")
        try:
            secret, associated_data, header = _run(
                ours._state.get_shared_secret_active(
                    _bundle_for_package(theirs, one_time_prekey), require_pre_key=False
                )
            )
        except x3dh.KeyAgreementException as error:
            raise SessionError(SessionFailure.BAD_BUNDLE, str(error)) from None
        init = InitHeader(
            identity_key=header.identity_key,
            ephemeral_key=header.ephemeral_key,
            signed_prekey=header.signed_pre_key,
            one_time_prekey=header.pre_key,
        )
        ratchet, message = _run(
            _DoubleRatchet.encrypt_initial_message(
                _DhRatchet,
                _RootKdf,
                _ChainKdf,
                _CHAIN_CONSTANT,
                MAX_SKIP_PER_STEP,
                MAX_SKIPPED_KEYS,
                _Aead,
                secret,
                theirs.signed_prekey,
                plaintext,
                associated_data,
            )
        )
        session = cls(ratchet, associated_data, init, session_id_for(init))
        return session, init, _header_from(message.header), message.ciphertext

    @classmethod
    def respond(
        cls,
        ours: KeyAgreement,
        init: InitHeader,
        header: RatchetHeader,
        ciphertext: bytes,
    ) -> tuple[RatchetSession, bytes]:
        """Open the session an initiator's message asks for, decrypting that message."""
        package_header = x3dh.Header(
            identity_key=init.identity_key,
            ephemeral_key=init.ephemeral_key,
            signed_pre_key=init.signed_prekey,
            pre_key=init.one_time_prekey,
        )
        try:
            secret, associated_data, signed_prekey = _run(
                ours._state.get_shared_secret_passive(package_header, require_pre_key=False)
            )
        except x3dh.KeyAgreementException as error:
            raise SessionError(SessionFailure.UNKNOWN_PREKEY, str(error)) from None
        try:
            ratchet, plaintext = _run(
                _DoubleRatchet.decrypt_initial_message(
                    _DhRatchet,
                    _RootKdf,
                    _ChainKdf,
                    _CHAIN_CONSTANT,
                    MAX_SKIP_PER_STEP,
                    MAX_SKIPPED_KEYS,
                    _Aead,
                    secret,
                    signed_prekey.priv,
                    doubleratchet.EncryptedMessage(_package_header(header), ciphertext),
                    associated_data,
                )
            )
        except Exception as error:
            raise _decrypt_failure(error) from None
        if init.one_time_prekey is not None:
            ours.forget_one_time_prekey(init.one_time_prekey)
        return cls(ratchet, associated_data, None, session_id_for(init)), plaintext

    def encrypt(self, plaintext: bytes) -> tuple[RatchetHeader, bytes]:
        """Encrypt with the next sending key (persist the session before sending)."""
        message = _run(self._ratchet.encrypt_message(plaintext, self._associated_data))
        return _header_from(message.header), message.ciphertext

    def decrypt(self, header: RatchetHeader, ciphertext: bytes) -> bytes:
        """Decrypt; on any failure the session is unchanged and ``SessionError`` says why."""
        try:
            plaintext = _run(
                self._ratchet.decrypt_message(
                    doubleratchet.EncryptedMessage(_package_header(header), ciphertext),
                    self._associated_data,
                )
            )
        except Exception as error:
            raise _decrypt_failure(error) from None
        self._init = None  # the peer's answer proves it holds the session
        return plaintext

    def to_json(self) -> str:
        init = None
        if self._init is not None:
            init = [
                self._init.identity_key.hex(),
                self._init.ephemeral_key.hex(),
                self._init.signed_prekey.hex(),
                None if self._init.one_time_prekey is None else self._init.one_time_prekey.hex(),
            ]
        return json.dumps(
            {
                "ratchet": self._ratchet.json,
                "ad": self._associated_data.hex(),
                "init": init,
                "id": self.session_id.hex(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RatchetSession:
        try:
            data = json.loads(text)
            ratchet = _DoubleRatchet.from_json(
                data["ratchet"],
                _DhRatchet,
                _RootKdf,
                _ChainKdf,
                _CHAIN_CONSTANT,
                MAX_SKIP_PER_STEP,
                MAX_SKIPPED_KEYS,
                _Aead,
            )
            raw_init = data["init"]
            init = None
            if raw_init is not None:
                init = InitHeader(
                    identity_key=bytes.fromhex(raw_init[0]),
                    ephemeral_key=bytes.fromhex(raw_init[1]),
                    signed_prekey=bytes.fromhex(raw_init[2]),
                    one_time_prekey=None if raw_init[3] is None else bytes.fromhex(raw_init[3]),
                )
            return cls(ratchet, bytes.fromhex(data["ad"]), init, bytes.fromhex(data["id"]))
        except Exception as error:  # any corrupt state is one failure
            raise SessionError(SessionFailure.BAD_STATE, type(error).__name__) from None


def _package_header(header: RatchetHeader) -> doubleratchet.Header:
    return doubleratchet.Header(
        ratchet_pub=header.ratchet_key,
        previous_sending_chain_length=header.previous_chain_length,
        sending_chain_length=header.message_number,
    )


def _header_from(header: doubleratchet.Header) -> RatchetHeader:
    return RatchetHeader(
        ratchet_key=header.ratchet_pub,
        previous_chain_length=header.previous_sending_chain_length,
        message_number=header.sending_chain_length,
    )


def _decrypt_failure(error: Exception) -> SessionError:
    if isinstance(error, doubleratchet.DuplicateMessageException):
        return SessionError(SessionFailure.REPLAY, "message key already used")
    if isinstance(error, doubleratchet.DoSProtectionException):
        return SessionError(SessionFailure.TOO_MANY_SKIPPED, "header skips too many keys")
    return SessionError(SessionFailure.TAMPERED, type(error).__name__)
