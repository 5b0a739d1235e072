"""Call signalling messages: invite, ringing, answer, decline, busy, cancel, hangup, dtmf, caller.

These ride inside the sealed, authenticated envelopes of the connectivity
layer, so the sender's peer id is known and is not repeated here. A message
names its call (16 random bytes chosen by the caller) and carries SDP where the
kind needs one (INVITE, ANSWER and the mid-call REOFFER/REANSWER used to move
a call onto another path). ``generation`` counts media re-negotiations so a
late answer to an older offer is recognised and dropped.

Wire format: a msgpack array ``[version, kind, call_id, generation, sdp,
reason]`` with ``nil`` for the absent fields. A DTMF signal (a digit the far
end keyed during the call, e.g. a phone behind the SIP bridge sending RFC 4733
events) appends a seventh field ``[sequence, digit, duration_ms]``; every other
kind keeps the six-field layout byte for byte, so older peers read them as
before and drop (and count) only the DTMF kind they do not know. ``sequence``
counts a call's digits from 0 so the receiver reports them once and in order
even if the transport repeats or reorders signals. A CALLER signal (a gateway
saying who placed the call on its side, e.g. a SIP From it could not verify)
appends ``[uri, verified]`` the same way. The decoder is total: any
bytes give a ``CallSignal`` or one ``CallSignalDecodeError`` naming the reason,
never an attacker's value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

__all__ = [
    "CALL_ID_BYTES",
    "DTMF_DIGITS",
    "MAX_DTMF_DURATION_MS",
    "MAX_DTMF_SEQUENCE",
    "MAX_GENERATION",
    "MAX_RELAYED_CALLER_CHARS",
    "MAX_SDP_BYTES",
    "MAX_SIGNAL_BYTES",
    "SIGNAL_VERSION",
    "CallSignal",
    "CallSignalDecodeError",
    "DeclineReason",
    "Dtmf",
    "RelayedCaller",
    "SignalKind",
    "decode_signal",
    "encode_signal",
]

SIGNAL_VERSION = 1
CALL_ID_BYTES = 16
MAX_SDP_BYTES = 16 * 1024  # aiortc's audio+video offer with relay candidates is ~3 KB
MAX_SIGNAL_BYTES = MAX_SDP_BYTES + 256
MAX_GENERATION = 0xFFFF
DTMF_DIGITS = "0123456789*#ABCD"  # RFC 4733 §3.2 events 0..15
MAX_DTMF_DURATION_MS = 0xFFFF  # RFC 4733's 16-bit duration at 8 kHz is ~8 s; this bounds it
MAX_DTMF_SEQUENCE = 0xFFFFFFFF
MAX_RELAYED_CALLER_CHARS = 256  # a SIP From URI as a gateway relays it


class SignalKind(enum.IntEnum):
    INVITE = 1
    RINGING = 2
    ANSWER = 3
    DECLINE = 4
    BUSY = 5
    CANCEL = 6
    HANGUP = 7
    REOFFER = 8  # mid-call: the caller moves the media to a new path
    REANSWER = 9
    DTMF = 10  # mid-call: one keyed digit, in order (a phone's RFC 4733 event)
    CALLER = 11  # after INVITE: who placed the call behind the calling gateway


class DeclineReason(enum.IntEnum):
    DECLINED = 1  # the user said no
    NO_ANSWER = 2  # the callee's device rang out
    REFUSED = 3  # policy: calls from non-contacts are refused


_WITH_SDP = frozenset(
    {SignalKind.INVITE, SignalKind.ANSWER, SignalKind.REOFFER, SignalKind.REANSWER}
)


@dataclass(frozen=True, slots=True)
class Dtmf:
    """One digit keyed during a call; ``sequence`` orders a call's digits from 0."""

    sequence: int
    digit: str
    duration_ms: int

    def __post_init__(self) -> None:
        if not 0 <= self.sequence <= MAX_DTMF_SEQUENCE:
            raise ValueError("dtmf sequence out of range")
        if len(self.digit) != 1 or self.digit not in DTMF_DIGITS:
            raise ValueError("dtmf digit is not one of 0-9 * # A-D")
        if not 0 <= self.duration_ms <= MAX_DTMF_DURATION_MS:
            raise ValueError("dtmf duration out of range")


@dataclass(frozen=True, slots=True)
class RelayedCaller:
    """Who placed a call on a gateway's far side; ``verified``: the gateway authenticated it.

    The signal's sender is the gateway's peer id (that much is proven); the
    ``uri`` is only what the gateway reports, printable ASCII so it can be
    shown without escaping.
    """

    uri: str
    verified: bool

    def __post_init__(self) -> None:
        if not 0 < len(self.uri) <= MAX_RELAYED_CALLER_CHARS:
            raise ValueError("relayed caller length out of range")
        if not (self.uri.isascii() and self.uri.isprintable()):
            raise ValueError("relayed caller is not printable ascii")


class CallSignalDecodeError(ValueError):
    """Bytes that are not a valid call signal; the message says why, never what."""


@dataclass(frozen=True, slots=True)
class CallSignal:
    kind: SignalKind
    call_id: bytes
    generation: int = 0
    sdp: str | None = None
    reason: DeclineReason | None = None
    dtmf: Dtmf | None = None
    caller: RelayedCaller | None = None

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise ValueError(problem)


def _problem(signal: CallSignal) -> str | None:
    if len(signal.call_id) != CALL_ID_BYTES:
        return "call id must be 16 bytes"
    if not 0 <= signal.generation <= MAX_GENERATION:
        return "generation out of range"
    if (signal.sdp is not None) != (signal.kind in _WITH_SDP):
        return "sdp present on a kind without sdp, or missing"
    if signal.sdp is not None and len(signal.sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        return "sdp too long"
    if (signal.reason is not None) != (signal.kind is SignalKind.DECLINE):
        return "reason only and always on decline"
    if (signal.dtmf is not None) != (signal.kind is SignalKind.DTMF):
        return "dtmf only and always on a dtmf signal"
    if (signal.caller is not None) != (signal.kind is SignalKind.CALLER):
        return "caller only and always on a caller signal"
    return None


def encode_signal(signal: CallSignal) -> bytes:
    fields: list[object] = [
        SIGNAL_VERSION,
        int(signal.kind),
        signal.call_id,
        signal.generation,
        signal.sdp,
        None if signal.reason is None else int(signal.reason),
    ]
    if signal.dtmf is not None:
        fields.append([signal.dtmf.sequence, signal.dtmf.digit, signal.dtmf.duration_ms])
    if signal.caller is not None:
        fields.append([signal.caller.uri, signal.caller.verified])
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CallSignalDecodeError(f"{what} is not an integer")
    return value


def _dtmf(value: object) -> Dtmf:
    if not isinstance(value, list) or len(value) != 3:
        raise CallSignalDecodeError("dtmf is not a three-field array")
    sequence, digit, duration = value
    if not isinstance(digit, str):
        raise CallSignalDecodeError("dtmf digit is not text")
    try:
        return Dtmf(_int(sequence, "dtmf sequence"), digit, _int(duration, "dtmf duration"))
    except ValueError as error:
        if isinstance(error, CallSignalDecodeError):
            raise
        raise CallSignalDecodeError(str(error)) from error


def _caller(value: object) -> RelayedCaller:
    if not isinstance(value, list) or len(value) != 2:
        raise CallSignalDecodeError("caller is not a two-field array")
    uri, verified = value
    if not isinstance(uri, str) or not isinstance(verified, bool):
        raise CallSignalDecodeError("caller fields are not text and a boolean")
    try:
        return RelayedCaller(uri, verified)
    except ValueError as error:
        raise CallSignalDecodeError(str(error)) from error


def decode_signal(data: bytes) -> CallSignal:
    """Decode one signal; raises ``CallSignalDecodeError`` and nothing else."""
    if len(data) > MAX_SIGNAL_BYTES:
        raise CallSignalDecodeError("signal too long")
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_SDP_BYTES,
            max_bin_len=CALL_ID_BYTES,
            max_array_len=8,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises many types for bad input
        raise CallSignalDecodeError("not a msgpack signal") from error
    if not isinstance(fields, list) or len(fields) not in (6, 7):
        raise CallSignalDecodeError("not a six-field (or seven with dtmf/caller) array")
    version, kind, call_id, generation, sdp, reason = fields[:6]
    extra = fields[6] if len(fields) == 7 else None
    dtmf: Dtmf | None = None
    caller: RelayedCaller | None = None
    if extra is not None and kind == SignalKind.CALLER:
        caller = _caller(extra)
    elif extra is not None:
        dtmf = _dtmf(extra)
    if _int(version, "version") != SIGNAL_VERSION:
        raise CallSignalDecodeError("unsupported version")
    kind_number = _int(kind, "kind")
    try:
        signal_kind = SignalKind(kind_number)
    except ValueError as error:
        raise CallSignalDecodeError("unknown kind") from error
    if not isinstance(call_id, bytes):
        raise CallSignalDecodeError("call id is not bytes")
    if sdp is not None and not isinstance(sdp, str):
        raise CallSignalDecodeError("sdp is not text")
    decline_reason: DeclineReason | None = None
    if reason is not None:
        reason_number = _int(reason, "reason")
        try:
            decline_reason = DeclineReason(reason_number)
        except ValueError as error:
            raise CallSignalDecodeError("unknown decline reason") from error
    try:
        return CallSignal(
            signal_kind, call_id, _int(generation, "generation"), sdp, decline_reason, dtmf, caller
        )
    except ValueError as error:
        if isinstance(error, CallSignalDecodeError):
            raise
        raise CallSignalDecodeError(str(error)) from error
