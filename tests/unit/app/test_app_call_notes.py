"""What the app shows beside a call's state, and what the SIP equipment view relies on.

A call's notes keep every digit the peer keyed (bounded) and the first relayed
caller with the gateway's verdict; a device's User-Agent is kept printable and
bounded; a password reset gives new digests to the same hosted identity and
refuses unknown logins and short passwords.
"""

from __future__ import annotations

import os

import pytest

from p2pnode.app.peer_calls import MAX_KEPT_DIGITS, CallNotes, note_update
from p2pnode.gateways.sip.accounts import AccountError, AccountStore
from p2pnode.gateways.sip.digest import stored_credentials
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.registrar import MAX_USER_AGENT, _shown_user_agent
from p2pnode.sessions.call import CallDirection, CallState
from p2pnode.sessions.call_config import CallUpdate

CALL = b"\x01" * 16


def update(detail: str = "", dtmf: str | None = None, caller: str | None = None) -> CallUpdate:
    return CallUpdate(
        CALL, "peer", CallDirection.INCOMING, CallState.ANSWERED, None, None, detail, dtmf, caller
    )


def test_digits_accumulate_in_order_and_only_the_newest_are_kept() -> None:
    notes = CallNotes()
    for digit in "1234":
        notes = note_update(notes, update("duration_ms=100", dtmf=digit))
    assert notes.digits == "1234"
    for _ in range(MAX_KEPT_DIGITS):
        notes = note_update(notes, update(dtmf="9"))
    assert notes.digits == "9" * MAX_KEPT_DIGITS
    assert note_update(notes, update("first audio frame")).digits == notes.digits


@pytest.mark.parametrize(
    ("detail", "verified"), [("unverified", False), ("verified by the gateway", True)]
)
def test_the_relayed_caller_keeps_the_verdict_of_the_update_that_first_reported_it(
    detail: str, verified: bool
) -> None:
    notes = note_update(CallNotes(), update(detail, caller="sip:carrier@other.example"))
    assert notes.relayed_caller == "sip:carrier@other.example"
    assert notes.caller_verified is verified
    later = note_update(notes, update("first audio frame", caller="sip:carrier@other.example"))
    assert later.caller_verified is verified  # repeated on later updates, verdict unchanged
    assert note_update(CallNotes(), update("unverified")).relayed_caller is None


def test_a_user_agent_is_kept_printable_and_bounded() -> None:
    assert _shown_user_agent(None) == ""
    assert _shown_user_agent("Yealink SIP-T46S 66.86") == "Yealink SIP-T46S 66.86"
    assert _shown_user_agent("evil\x1b[31m\u202ephone") == "evil?[31m?phone"
    assert len(_shown_user_agent("x" * 10_000)) == MAX_USER_AGENT


def test_a_password_reset_gives_new_digests_to_the_same_identity() -> None:
    store = AccountStore(":memory:", "gw.test")
    account, old = store.add("alice", None, randbytes=os.urandom)
    new = store.reset_password("alice", None, randbytes=os.urandom)
    assert new != old
    after = store.get("alice")
    assert after is not None
    assert after.credentials == stored_credentials("alice", "gw.test", new)
    assert after.credentials != stored_credentials("alice", "gw.test", old)
    assert identity_of(after).peer_id == identity_of(account).peer_id
    assert store.reset_password("alice", "a-chosen-password", randbytes=os.urandom) == (
        "a-chosen-password"
    )
    with pytest.raises(AccountError):
        store.reset_password("nobody", None, randbytes=os.urandom)
    with pytest.raises(AccountError):
        store.reset_password("alice", "short", randbytes=os.urandom)
    store.close()
