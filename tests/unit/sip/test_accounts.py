"""SIP accounts: HA1 only, generated passwords, logins validated, store bounded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import (
    GENERATED_PASSWORD_LENGTH,
    AccountError,
    AccountStore,
    generate_password,
)
from p2pnode.gateways.sip.digest import Algorithm, ha1


def test_the_password_is_never_stored_only_its_digest_hashes(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = AccountStore(path, "gw.test")
    account, password = store.add("alice", None, randbytes=random.Random(1).randbytes)
    store.close()
    assert len(password) == GENERATED_PASSWORD_LENGTH
    assert password.encode() not in path.read_bytes()
    reopened = AccountStore(path, "gw.test")
    credentials = reopened.credentials("alice")
    assert credentials is not None
    assert credentials.ha1_md5 == ha1("alice", "gw.test", password, Algorithm.MD5)
    assert credentials.ha1_sha256 == ha1("alice", "gw.test", password, Algorithm.SHA256)
    assert reopened.get("alice") == account
    assert reopened.credentials("nobody") is None


def test_generated_passwords_use_the_whole_alphabet_and_differ() -> None:
    rng = random.Random(7)
    passwords = {generate_password(rng.randbytes) for _ in range(200)}
    assert len(passwords) == 200
    chars = set("".join(passwords))
    assert len(chars) == 57 and not chars & set("0O1lI")


def test_bad_logins_weak_passwords_duplicates_and_a_full_table_are_refused() -> None:
    store = AccountStore(":memory:", "gw.test", max_accounts=2)
    rb = random.Random(3).randbytes
    for login in ("", "A", "1abc", "al ice", "alice@x", "x" * 40):
        with pytest.raises(AccountError):
            store.add(login, None, randbytes=rb)
    with pytest.raises(AccountError):
        store.add("alice", "short", randbytes=rb)
    store.add("alice", "a-long-enough-password", randbytes=rb)
    with pytest.raises(AccountError):
        store.add("alice", None, randbytes=rb)
    store.add("bob", None, randbytes=rb)
    with pytest.raises(AccountError):
        store.add("carol", None, randbytes=rb)
    assert store.logins() == ("alice", "bob")
    assert store.remove("alice") and not store.remove("alice")
    assert store.logins() == ("bob",)
