"""Bounded msgpack decoding and typed field extraction, shared by every payload codec.

Why one helper: each codec once called ``msgpack.unpackb`` with its own limits
and formatted bad values into its error with ``!r``. msgpack itself accepts
arrays nested ~1,000 deep, and ``repr`` of such a value raises
``RecursionError`` (not a ``ValueError``), which escaped every "total" decoder
(issue 10, finding 1). Here:

- ``FieldReader.unpack`` scans the msgpack framing iteratively (no recursion)
  and refuses more than ``Limits.max_depth`` levels of nesting, truncated
  framing or trailing bytes BEFORE msgpack builds any object; then msgpack
  decodes with the per-type length limits, so a hostile payload allocates no
  more than it carries.
- Field extractors check exact types (``type(x) is int``: no bool, no
  subclasses) and ranges, and their errors name the field and the expected
  shape, never the attacker's value (``describe`` gives a type name only).
- Every failure is the codec's own ``...DecodeError`` (a ``ValueError``): the
  reader is built with that class, so callers catch one type.

API (kept small on purpose; the DHT message codec uses the same)::

    READ = FieldReader(MyDecodeError)
    fields = READ.unpack(data, Limits(max_bytes=1200, max_depth=3, max_array=9))
    items = READ.array(fields, "record", length=9)
    seq = READ.uint(items[4], "seq", 2**64 - 1)
    owner = READ.binary(items[2], "owner", length=32)
    subject = READ.text(items[3], "subject", max_bytes=255)

``nesting_depth`` is exposed for decoders that receive already-decoded values
from elsewhere and for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgpack

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "FieldReader",
    "Limits",
    "MsgpackFramingError",
    "describe",
    "nesting_depth",
]

DEFAULT_MAX_DEPTH = 4  # deepest of our payloads is 3 levels (an array of arrays of fields)


class MsgpackFramingError(ValueError):
    """Framing that is truncated, too deep, trailing, or uses a reserved byte."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one decode may hold: total bytes, nesting levels and per-object lengths."""

    max_bytes: int
    max_depth: int = DEFAULT_MAX_DEPTH
    max_array: int = 16
    max_str: int = 255  # bytes of one string
    max_bin: int = 1200  # bytes of one binary
    max_map: int = 0  # none of our formats uses maps


def describe(value: object) -> str:
    """A value's kind for an error message: its type name, never its content."""
    return type(value).__name__


# Fixed-size headers: first byte -> (bytes of length/count field, extra fixed bytes).
# Scalars with a fixed body: first byte -> total size.
_FIXED_SIZE = {
    0xC0: 1,  # nil
    0xC2: 1,  # false
    0xC3: 1,  # true
    0xCA: 5,  # float 32
    0xCB: 9,  # float 64
    0xCC: 2,  # uint 8
    0xCD: 3,
    0xCE: 5,
    0xCF: 9,
    0xD0: 2,  # int 8
    0xD1: 3,
    0xD2: 5,
    0xD3: 9,
    0xD4: 3,  # fixext 1 (type byte + 1)
    0xD5: 4,
    0xD6: 6,
    0xD7: 10,
    0xD8: 18,
}
# Variable bodies (str, bin, ext): first byte -> (length field bytes, extra bytes before body).
_SIZED = {
    0xC4: (1, 0),  # bin 8
    0xC5: (2, 0),
    0xC6: (4, 0),
    0xC7: (1, 1),  # ext 8 (+ type byte)
    0xC8: (2, 1),
    0xC9: (4, 1),
    0xD9: (1, 0),  # str 8
    0xDA: (2, 0),
    0xDB: (4, 0),
}
# Containers: first byte -> (count field bytes, children per count).
_CONTAINERS = {
    0xDC: (2, 1),  # array 16
    0xDD: (4, 1),
    0xDE: (2, 2),  # map 16: a key and a value per entry
    0xDF: (4, 2),
}


# Size of each object whose lead byte alone gives it (fixints, fixstr, fixed scalars); 0: other.
_LEAD_SIZE = bytes(
    1
    if lead <= 0x7F or lead >= 0xE0
    else 1 + (lead & 0x1F)
    if 0xA0 <= lead <= 0xBF
    else _FIXED_SIZE.get(lead, 0)
    for lead in range(256)
)


def nesting_depth(data: bytes, limit: int) -> int:
    """The nesting depth of the single msgpack object in ``data`` (a scalar is 0).

    Iterative, so no input can exhaust the stack. Raises ``MsgpackFramingError``
    when the depth would exceed ``limit``, the framing is truncated or uses the
    reserved byte 0xC1, or bytes follow the object.
    """
    position = 0
    end = len(data)
    pending = [1]  # objects still to read: the top level, then per open container
    depth = 0
    while pending:
        if position >= end:
            raise MsgpackFramingError("msgpack data ends inside an object")
        lead = data[position]
        pending[-1] -= 1  # this object is one child of the innermost open container
        size = _LEAD_SIZE[lead]
        if size:
            position += size
        elif lead in _SIZED:
            width, extra = _SIZED[lead]
            header_end = position + 1 + width
            if header_end > end:
                raise MsgpackFramingError("msgpack data ends inside a length")
            position = header_end + extra + int.from_bytes(data[position + 1 : header_end], "big")
        else:
            if 0x80 <= lead <= 0x9F:  # fixmap, fixarray
                position += 1
                children = lead & 0x0F if lead >= 0x90 else 2 * (lead & 0x0F)
            elif lead in _CONTAINERS:
                width, per_entry = _CONTAINERS[lead]
                header_end = position + 1 + width
                if header_end > end:
                    raise MsgpackFramingError("msgpack data ends inside a count")
                children = per_entry * int.from_bytes(data[position + 1 : header_end], "big")
                position = header_end
            else:  # 0xC1 is reserved ("never used")
                raise MsgpackFramingError("reserved msgpack byte 0xc1")
            if len(pending) > limit:
                raise MsgpackFramingError(f"nested deeper than {limit} levels")
            depth = max(depth, len(pending))
            if children:
                pending.append(children)
        if position > end:
            raise MsgpackFramingError("msgpack data ends inside an object")
        while pending and not pending[-1]:
            pending.pop()
    if position != end:
        raise MsgpackFramingError("bytes after the msgpack object")
    return depth


class FieldReader:
    """Decodes and extracts fields, raising only ``error`` (the codec's decode error)."""

    __slots__ = ("_error",)

    def __init__(self, error: Callable[[str], ValueError]) -> None:
        self._error = error

    def fail(self, message: str) -> ValueError:
        """The codec's error with ``message`` (which must not contain attacker values)."""
        return self._error(message)

    def unpack(self, data: bytes, limits: Limits) -> object:
        """One msgpack object within ``limits``, checked for depth before it is built."""
        if len(data) > limits.max_bytes:
            raise self._error(f"{len(data)} bytes, more than {limits.max_bytes}")
        try:
            nesting_depth(data, limits.max_depth)
        except MsgpackFramingError as error:
            raise self._error(f"not msgpack: {error}") from None
        try:
            return msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_array_len=limits.max_array,
                max_map_len=limits.max_map,
                max_str_len=limits.max_str,
                max_bin_len=limits.max_bin,
                max_ext_len=0,
            )
        except Exception as error:  # msgpack raises a zoo of types; all mean "not ours"
            raise self._error(f"not msgpack: {type(error).__name__}") from None

    def array(
        self, value: object, name: str, *, length: int | None = None, max_length: int = 0
    ) -> list[object]:
        """``value`` as a list: exactly ``length`` items, or at most ``max_length`` if given."""
        if type(value) is not list:
            raise self._error(f"{name} is a {describe(value)}, not an array")
        if length is not None and len(value) != length:
            raise self._error(f"{name} has {len(value)} items, not {length}")
        if max_length and len(value) > max_length:
            raise self._error(f"{name} has more than {max_length} items")
        return value

    def uint(self, value: object, name: str, maximum: int, minimum: int = 0) -> int:
        """``value`` as an int (never a bool) in ``minimum..maximum``."""
        if type(value) is not int or not minimum <= value <= maximum:
            raise self._error(f"{name} is not an integer in {minimum}..{maximum}")
        return value

    def exact(self, value: object, name: str, expected: int) -> int:
        """``value`` must be the int ``expected`` (a format version, say)."""
        if type(value) is not int or value != expected:
            raise self._error(f"{name} is not {expected}")
        return value

    def binary(
        self, value: object, name: str, *, length: int | None = None, max_length: int = 0
    ) -> bytes:
        """``value`` as bytes: exactly ``length`` long, or at most ``max_length`` if given."""
        if type(value) is not bytes:
            raise self._error(f"{name} is a {describe(value)}, not binary")
        if length is not None and len(value) != length:
            raise self._error(f"{name} is {len(value)} bytes, not {length}")
        if max_length and len(value) > max_length:
            raise self._error(f"{name} is longer than {max_length} bytes")
        return value

    def text(self, value: object, name: str, *, max_bytes: int = 0) -> str:
        """``value`` as a str of at most ``max_bytes`` UTF-8 bytes if given."""
        if type(value) is not str:
            raise self._error(f"{name} is a {describe(value)}, not a string")
        if max_bytes and len(value.encode("utf-8")) > max_bytes:
            raise self._error(f"{name} is longer than {max_bytes} bytes")
        return value
