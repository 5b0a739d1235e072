"""The one error family of the SIP core.

Every malformed input is refused with :class:`SipDecodeError`, which carries
the status code a server answers with (400, 413, 416, 501, 505, 513): the
boundary that owns a socket turns it into a response exactly once (or drops
it, for a response or a message too broken to answer). Messages never echo
attacker bytes with ``repr``: ``reason`` is a fixed text chosen here.
"""

from __future__ import annotations

__all__ = ["SipDecodeError"]


class SipDecodeError(ValueError):
    """Bytes that are not an acceptable SIP message; ``status`` is the answer to send."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        # The raw (name, value) header fields of a request whose head could be
        # split into fields, so that a response can copy Via/From/To/Call-ID/CSeq
        # (RFC 3261 §8.2.6.2); empty when the message cannot be answered.
        self.request_headers: tuple[tuple[str, str], ...] = ()
