"""A node's identity: one Ed25519 key pair, and the names derived from its public key.

Invariants:
- Everything a peer is called by (node id in the DHT, peer id for people and
  logins, fingerprint) is a pure function of the public key, so nobody can pick
  where they sit in the id space or borrow another's name.
- The private key lives in ``<home>/identity.key`` as a hex seed with mode 0600,
  written atomically; never pickled.
- A node id's *puzzle bits* (``puzzle_bits``: leading zero bits of a second hash of
  the id) say how much work the key took to find. DHT servers need a few (S/Kademlia's
  static puzzle, ``p2pnode.dht.puzzle``) so that grinding ids near a key costs 2**bits
  more. ``generate`` stays instant (tests make thousands); ``generate_meeting`` grinds.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import nacl.exceptions
import nacl.public
import nacl.signing

__all__ = [
    "KEY_FILE_NAME",
    "NODE_ID_BYTES",
    "PUBLIC_KEY_BYTES",
    "PUZZLE_PERSON",
    "SIGNATURE_BYTES",
    "Identity",
    "IdentityError",
    "default_home",
    "fingerprint_for",
    "node_id_for",
    "peer_id_for",
    "public_key_from_peer_id",
    "puzzle_bits",
    "verify_signature",
]

NODE_ID_BYTES = 20
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_FILE_NAME = "identity.key"
_KEY_FILE_HEADER = "p2pnode-ed25519-seed-v1"
_PEER_ID_LENGTH = 52  # base32 of 32 bytes without padding
PUZZLE_PERSON = b"p2pnode-idpuzzle"  # its own domain: not the node id's hash again
GRIND_REPORT_EVERY = 4096  # tries between two progress calls of ``generate_meeting``


class IdentityError(Exception):
    """The identity file is missing, unreadable or malformed."""


def node_id_for(public_key: bytes) -> bytes:
    """The Kademlia node id bound to a key: BLAKE2b-160 with a domain-separating person."""
    return hashlib.blake2b(public_key, digest_size=NODE_ID_BYTES, person=b"p2pnode-nodeid").digest()


def puzzle_bits(node_id: bytes) -> int:
    """Leading zero bits of BLAKE2b-64(``node_id``) under ``PUZZLE_PERSON``: the work
    the key took. Any bit count c costs 2**c key generations on average to reach."""
    digest = hashlib.blake2b(node_id, digest_size=8, person=PUZZLE_PERSON).digest()
    value = int.from_bytes(digest, "big")
    return 64 - value.bit_length()


def peer_id_for(public_key: bytes) -> str:
    """Printable peer id: the whole public key in lowercase base32, so it can be verified."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    return base64.b32encode(public_key).decode("ascii").rstrip("=").lower()


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Inverse of ``peer_id_for``; ``ValueError`` for anything that is not a peer id."""
    text = peer_id.strip().lower()
    if len(text) != _PEER_ID_LENGTH or not text.isascii():
        raise ValueError(f"not a peer id (want {_PEER_ID_LENGTH} base32 characters): {peer_id!r}")
    try:
        key = base64.b32decode(text.upper() + "====")
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a peer id: {peer_id!r}") from error
    if peer_id_for(key) != text:  # reject non-canonical trailing bits
        raise ValueError(f"not a canonical peer id: {peer_id!r}")
    return key


def fingerprint_for(public_key: bytes) -> str:
    """Short form for people to compare aloud: 64 bits of a hash in four groups."""
    digest = hashlib.blake2b(public_key, digest_size=8, person=b"p2pnode-fprint").hexdigest()
    return "-".join(digest[i : i + 4] for i in range(0, 16, 4))


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature over ``data``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def default_home() -> Path:
    """``$P2PNODE_HOME``, else ``$XDG_DATA_HOME/p2pnode``, else ``~/.local/share/p2pnode``."""
    explicit = os.environ.get("P2PNODE_HOME")
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME")
    base = Path(data_home) if data_home else Path.home() / ".local" / "share"
    return base / "p2pnode"


class Identity:
    """An Ed25519 key pair with the names derived from it."""

    __slots__ = ("_signing_key", "fingerprint", "node_id", "peer_id", "public_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)
        self.node_id: bytes = node_id_for(self.public_key)
        self.peer_id: str = peer_id_for(self.public_key)
        self.fingerprint: str = fingerprint_for(self.public_key)

    @classmethod
    def generate(cls, seed: bytes | None = None) -> Identity:
        """A fresh key pair; a 32-byte ``seed`` makes it deterministic (tests only)."""
        if seed is None:
            return cls(nacl.signing.SigningKey.generate())
        if len(seed) != 32:
            raise ValueError("seed must be 32 bytes")
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def generate_meeting(
        cls,
        bits: int,
        *,
        progress: Callable[[int], None] | None = None,
        seeds: Callable[[int], bytes] = os.urandom,
    ) -> Identity:
        """A fresh key pair whose node id has at least ``bits`` puzzle bits (a DHT server's).

        2**bits tries on average (c = 16: ~65,000, about 2 s on one core here), each a
        key generation and two hashes. ``progress(tries)`` is called every
        ``GRIND_REPORT_EVERY`` tries, for people waiting on ``p2pnode init``.
        """
        if not 0 <= bits <= 64:
            raise ValueError("bits must be 0 to 64")
        tries = 0
        while True:
            key = nacl.signing.SigningKey(seeds(32))
            tries += 1
            if puzzle_bits(node_id_for(bytes(key.verify_key))) >= bits:
                return cls(key)
            if progress is not None and tries % GRIND_REPORT_EVERY == 0:
                progress(tries)

    @classmethod
    def load(cls, home: Path) -> Identity:
        """The identity stored in ``home``; ``IdentityError`` if absent or malformed."""
        path = home / KEY_FILE_NAME
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise IdentityError(f"no identity in {home} (run `p2pnode init`)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise IdentityError(f"cannot read {path}: {error}") from error
        lines = text.split()
        if len(lines) != 2 or lines[0] != _KEY_FILE_HEADER:
            raise IdentityError(f"{path} is not a p2pnode identity file")
        try:
            seed = bytes.fromhex(lines[1])
        except ValueError:
            raise IdentityError(f"{path}: the seed is not hex") from None
        if len(seed) != 32:
            raise IdentityError(f"{path}: the seed is not 32 bytes")
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def load_or_create(
        cls, home: Path, *, bits: int = 0, progress: Callable[[int], None] | None = None
    ) -> Identity:
        """Load the identity in ``home``, creating the directory and a new key if absent
        (one with ``bits`` puzzle bits: ``generate_meeting``). An existing key is kept
        whatever its bits: replacing an identity is the user's decision."""
        if (home / KEY_FILE_NAME).exists():
            return cls.load(home)
        identity = cls.generate_meeting(bits, progress=progress) if bits else cls.generate()
        identity.save(home)
        return identity

    def save(self, home: Path) -> None:
        """Write the seed with mode 0600, atomically; refuses to overwrite another key."""
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = home / KEY_FILE_NAME
        if path.exists() and Identity.load(home).public_key != self.public_key:
            raise IdentityError(f"{path} already holds a different identity")
        temporary = home / f".{KEY_FILE_NAME}.{os.getpid()}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            seed_hex = self.secret_seed().hex()
            os.write(descriptor, f"{_KEY_FILE_HEADER}\n{seed_hex}\n".encode("ascii"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)

    def secret_seed(self) -> bytes:
        """The 32-byte Ed25519 seed: SECRET material, the whole identity in 32 bytes.

        It exists because X3DH uses this very key as its identity key
        (``p2pnode.sessions.crypto``: ``IdentityKeyFormat.ED_25519``), and that library
        takes the seed, not a signing object. Pass it only to such key code and to
        ``save``; never log, print or send it.
        """
        return bytes(self._signing_key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature over ``data``."""
        return self._signing_key.sign(data).signature

    def x25519_private_key(self) -> nacl.public.PrivateKey:
        """The X25519 key derived from this Ed25519 key (RFC 7748 birational map), so peers
        can seal to ``public_key`` alone (libsodium ``crypto_sign_ed25519_sk_to_curve25519``)."""
        return self._signing_key.to_curve25519_private_key()

    def __repr__(self) -> str:
        return f"Identity(peer_id={self.peer_id!r}, fingerprint={self.fingerprint!r})"
