"""Checks of one decoded msgpack field, shared by the messaging decoders.

Why: ``chat_message`` and ``mailbox_wire`` both check "an integer in 0..max" and
"bytes, of this length" the same way and differ only in the error they raise (each
decoder raises its own one typed ``...DecodeError``). One ``FieldChecks`` bound to
that error type serves both, so the two stay the same check.

Messages name the field and the bound, never the value (no attacker data in errors).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FieldChecks"]


@dataclass(frozen=True, slots=True)
class FieldChecks:
    """Field checks raising ``error`` (a decoder's ``...DecodeError``) on a bad value."""

    error: type[ValueError]

    def integer(self, value: object, name: str, maximum: int) -> int:
        """``value`` if it is an ``int`` (not a bool) in 0..``maximum``."""
        if type(value) is not int or not 0 <= value <= maximum:
            raise self.error(f"{name} is not an integer in 0..{maximum}")
        return value

    def binary(self, value: object, name: str, length: int | None = None) -> bytes:
        """``value`` if it is ``bytes`` (of exactly ``length`` bytes when given)."""
        if type(value) is not bytes:
            raise self.error(f"{name} is not binary")
        if length is not None and len(value) != length:
            raise self.error(f"{name} is {len(value)} bytes, not {length}")
        return value
