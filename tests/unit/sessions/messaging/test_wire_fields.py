"""FieldChecks: one check of a decoded field, raising the decoder's own error type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.sessions.chat_message import ChatDecodeError
from p2pnode.sessions.mailbox_wire import MailboxDecodeError
from p2pnode.sessions.wire_fields import FieldChecks

ERRORS = (ChatDecodeError, MailboxDecodeError)


@pytest.mark.parametrize("error", ERRORS)
def test_each_decoder_gets_its_own_error_type(error: type[ValueError]) -> None:
    checks = FieldChecks(error)
    assert checks.integer(7, "seq", 7) == 7
    assert checks.binary(b"ab", "id", 2) == b"ab"
    assert checks.binary(b"", "ciphertext") == b""
    for bad in (True, -1, 8, 1.0, b"7", None):
        with pytest.raises(error, match=r"^seq is not an integer in 0\.\.7$"):
            checks.integer(bad, "seq", 7)
    with pytest.raises(error, match=r"^id is not binary$"):
        checks.binary(bytearray(b"ab"), "id", 2)
    with pytest.raises(error, match=r"^id is 3 bytes, not 2$"):
        checks.binary(b"abc", "id", 2)


@given(st.one_of(st.integers(), st.booleans(), st.binary(max_size=4), st.none(), st.text()))
def test_checks_are_total(value: object) -> None:
    checks = FieldChecks(MailboxDecodeError)
    for check in (lambda: checks.integer(value, "n", 100), lambda: checks.binary(value, "b", 2)):
        try:
            result = check()
        except MailboxDecodeError:
            continue
        assert result is value
