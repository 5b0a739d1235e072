"""Identity: derived names, key file persistence, total peer-id parsing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.identity import (
    KEY_FILE_NAME,
    Identity,
    IdentityError,
    fingerprint_for,
    node_id_for,
    peer_id_for,
    public_key_from_peer_id,
    verify_signature,
)


def test_names_are_derived_from_the_key() -> None:
    identity = Identity.generate(bytes(32))
    assert identity.node_id == node_id_for(identity.public_key)
    assert len(identity.node_id) == 20
    assert identity.peer_id == peer_id_for(identity.public_key)
    assert public_key_from_peer_id(identity.peer_id) == identity.public_key
    assert public_key_from_peer_id(identity.peer_id.upper()) == identity.public_key
    assert identity.fingerprint == fingerprint_for(identity.public_key)
    assert len(identity.fingerprint) == 19 and identity.fingerprint.count("-") == 3
    other = Identity.generate(bytes([1]) * 32)
    assert other.node_id != identity.node_id and other.peer_id != identity.peer_id


def test_signatures_verify_only_for_their_key_and_data() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    signature = alice.sign(b"hello")
    assert verify_signature(alice.public_key, b"hello", signature)
    assert not verify_signature(bob.public_key, b"hello", signature)
    assert not verify_signature(alice.public_key, b"hellO", signature)
    assert not verify_signature(alice.public_key, b"hello", signature[:-1])
    assert not verify_signature(b"short", b"hello", signature)


def test_key_file_is_private_and_reloads_the_same_identity(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = Identity.load_or_create(home)
    mode = stat.S_IMODE(os.stat(home / KEY_FILE_NAME).st_mode)
    assert mode == 0o600
    again = Identity.load_or_create(home)
    assert again.public_key == first.public_key
    assert Identity.load(home).node_id == first.node_id
    assert b"pickle" not in (home / KEY_FILE_NAME).read_bytes()


def test_save_refuses_to_overwrite_another_identity(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path)
    with pytest.raises(IdentityError):
        Identity.generate().save(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"p2pnode-ed25519-seed-v1\nzz\n", b"p2pnode-ed25519-seed-v1\n00\n", b"\xff"],
)
def test_malformed_key_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / KEY_FILE_NAME).write_bytes(content)
    with pytest.raises(IdentityError):
        Identity.load(tmp_path)


def test_missing_identity_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="p2pnode init"):
        Identity.load(tmp_path)


@given(st.text(max_size=80))
def test_peer_id_parsing_is_total(text: str) -> None:
    try:
        key = public_key_from_peer_id(text)
    except ValueError:
        return
    assert peer_id_for(key) == text.strip().lower()


def test_secret_seed_is_the_seed_that_makes_the_identity(tmp_path: Path) -> None:
    seed = bytes(range(32))
    identity = Identity.generate(seed)
    assert identity.secret_seed() == seed
    other = Identity.generate()
    assert Identity.generate(other.secret_seed()).public_key == other.public_key
    other.save(tmp_path)
    assert other.secret_seed().hex() in (tmp_path / KEY_FILE_NAME).read_text()
    assert other.secret_seed().hex() not in repr(other)
