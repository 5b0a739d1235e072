"""Passphrase-protected identity backups: the one thing a user must not lose with a device.

Why a file and a passphrase: Jami users lose their accounts with their devices;
a backup they can keep anywhere (a USB stick, a mail to themselves) must be
useless to whoever finds it. The seed is sealed with XSalsa20-Poly1305
(libsodium ``secretbox``) under a key from Argon2id (``crypto_pwhash``) at
libsodium's MODERATE limits (~1.3 s, 256 MiB here): slow enough that guessing
passphrases is expensive, and bounded on the way in (a file cannot make us
spend more than those limits). The peer id travels in clear so a person can
see whose backup a file is; it is checked against the decrypted key.

Format (UTF-8 JSON, one object)::

    {"format": "p2pnode-identity-backup/1", "peer_id": "...", "kdf": "argon2id13",
     "opslimit": 3, "memlimit": 268435456, "salt": "<hex 16>", "box": "<hex>"}

``open_backup`` is total: any bytes give a seed or a ``BackupDecodeError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing

from p2pnode.identity import KEY_FILE_NAME, peer_id_for

__all__ = [
    "BACKUP_FORMAT",
    "MAX_BACKUP_BYTES",
    "BackupDecodeError",
    "OpenedBackup",
    "open_backup",
    "read_seed",
    "seal_backup",
]

BACKUP_FORMAT = "p2pnode-identity-backup/1"
MAX_BACKUP_BYTES = 4096  # a backup is ~400 bytes; anything larger is not one
MAX_PASSPHRASE_BYTES = 1024
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
SALT_BYTES = nacl.pwhash.argon2id.SALTBYTES
SEED_BYTES = 32


class BackupDecodeError(ValueError):
    """Not a backup, damaged, or the wrong passphrase (the message says which)."""


@dataclass(frozen=True)
class OpenedBackup:
    peer_id: str
    seed: bytes


def _key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    secret = passphrase.encode("utf-8")
    if not secret or len(secret) > MAX_PASSPHRASE_BYTES:
        raise BackupDecodeError(f"the passphrase must be 1..{MAX_PASSPHRASE_BYTES} bytes")
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit
    )


def read_seed(home: Path) -> bytes:
    """The 32-byte seed of the home's identity file (``identity.Identity.save``'s format)."""
    words = (home / KEY_FILE_NAME).read_text(encoding="ascii").split()
    seed = bytes.fromhex(words[1])
    if len(seed) != SEED_BYTES:
        raise ValueError("the identity file does not hold a 32-byte seed")
    return seed


def seal_backup(
    seed: bytes,
    passphrase: str,
    salt: bytes,
    nonce: bytes,
    *,
    opslimit: int = OPSLIMIT,
    memlimit: int = MEMLIMIT,
) -> bytes:
    """The backup file for ``seed``; salt and nonce are parameters (random in use), and so
    are the Argon2id limits (tests use the smallest: the format is the same)."""
    if len(seed) != SEED_BYTES or len(salt) != SALT_BYTES:
        raise ValueError("seed must be 32 bytes and salt 16")
    box = nacl.secret.SecretBox(_key(passphrase, salt, opslimit, memlimit))
    sealed = bytes(box.encrypt(seed, nonce))
    peer_id = peer_id_for(bytes(nacl.signing.SigningKey(seed).verify_key))
    document = {
        "format": BACKUP_FORMAT,
        "peer_id": peer_id,
        "kdf": "argon2id13",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": salt.hex(),
        "box": sealed.hex(),
    }
    return json.dumps(document, indent=1).encode("utf-8") + b"\n"


def _field(document: dict[str, object], name: str, kind: type) -> object:
    value = document.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BackupDecodeError(f"field {name} is missing or of the wrong type")
    return value


def _hex(document: dict[str, object], name: str) -> bytes:
    text = _field(document, name, str)
    assert isinstance(text, str)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BackupDecodeError(f"field {name} is not hex") from None


def open_backup(data: bytes, passphrase: str) -> OpenedBackup:
    """The seed in a backup file; ``BackupDecodeError`` for anything else."""
    if len(data) > MAX_BACKUP_BYTES:
        raise BackupDecodeError("too large for a backup file")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BackupDecodeError("not a backup file (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != BACKUP_FORMAT:
        raise BackupDecodeError("not a p2pnode identity backup")
    if document.get("kdf") != "argon2id13":
        raise BackupDecodeError("unknown key derivation")
    opslimit = _field(document, "opslimit", int)
    memlimit = _field(document, "memlimit", int)
    assert isinstance(opslimit, int) and isinstance(memlimit, int)
    # bounded: a file cannot make us spend more than we would to write one
    if not 1 <= opslimit <= OPSLIMIT or not 8192 <= memlimit <= MEMLIMIT:
        raise BackupDecodeError("key derivation limits out of range")
    salt = _hex(document, "salt")
    sealed = _hex(document, "box")
    if len(salt) != SALT_BYTES:
        raise BackupDecodeError("bad salt length")
    claimed = _field(document, "peer_id", str)
    box = nacl.secret.SecretBox(_key(passphrase, salt, opslimit, memlimit))
    try:
        seed = box.decrypt(sealed)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise BackupDecodeError("wrong passphrase or damaged file") from None
    if len(seed) != SEED_BYTES:
        raise BackupDecodeError("the sealed key is not 32 bytes")
    peer_id = peer_id_for(bytes(nacl.signing.SigningKey(seed).verify_key))
    if peer_id != claimed:
        raise BackupDecodeError("the key does not match the peer id written on the file")
    return OpenedBackup(peer_id, seed)
