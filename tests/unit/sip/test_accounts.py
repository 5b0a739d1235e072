"""SIP accounts: HA1 only, generated passwords, logins validated, store bounded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import (
    GENERATED_PASSWORD_LENGTH,
    MAX_CACHED_ACCOUNTS,
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


def test_cached_lookups_follow_this_stores_writes_at_once(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "node.sqlite", "gw.test")
    rb = random.Random(5).randbytes
    assert store.get("alice") is None  # an unknown login is cached as unknown ...
    store.add("alice", "first-password-1", randbytes=rb)
    before = store.credentials("alice")  # ... and the add is seen at once
    assert before is not None
    assert before.ha1_md5 == ha1("alice", "gw.test", "first-password-1", Algorithm.MD5)
    store.reset_password("alice", "second-password-2", randbytes=rb)
    after = store.credentials("alice")
    assert after is not None
    assert after.ha1_md5 == ha1("alice", "gw.test", "second-password-2", Algorithm.MD5)
    assert store.remove("alice")
    assert store.get("alice") is None and store.credentials("alice") is None


def test_cached_lookups_follow_another_connections_commits(tmp_path: Path) -> None:
    """The CLI and the app write through their own connections (PRAGMA data_version)."""
    path = tmp_path / "node.sqlite"
    gateway_store = AccountStore(path, "gw.test")
    rb = random.Random(6).randbytes
    assert gateway_store.get("bob") is None
    cli_store = AccountStore(path, "gw.test")
    cli_store.add("bob", "bobs-password-123", randbytes=rb)
    assert gateway_store.get("bob") is not None
    cli_store.reset_password("bob", "bobs-new-password-4", randbytes=rb)
    credentials = gateway_store.credentials("bob")
    assert credentials is not None
    assert credentials.ha1_sha256 == ha1("bob", "gw.test", "bobs-new-password-4", Algorithm.SHA256)
    cli_store.remove("bob")
    assert gateway_store.get("bob") is None
    cli_store.close()
    gateway_store.close()


def test_the_lookup_cache_is_bounded() -> None:
    store = AccountStore(":memory:", "gw.test")
    store.add("alice", "alices-password-1", randbytes=random.Random(8).randbytes)
    for index in range(MAX_CACHED_ACCOUNTS + 10):  # a scan of made-up logins
        assert store.get(f"user{index}") is None
        assert len(store._cache) <= MAX_CACHED_ACCOUNTS
    assert store.get("alice") is not None
