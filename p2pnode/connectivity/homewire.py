"""Wire codec of the home protocol: attach, keepalive, sealed-envelope forwarding, watches.

Every datagram is one msgpack array whose first element is the message type.
Fields by position (txid: 8 random bytes chosen by the requester)::

    HELLO         [1, txid]                                           peer -> home
    CHALLENGE     [2, txid, nonce(16), home_key(32)]                  home -> peer
    ATTACH        [3, txid, peer_key(32), nonce(16), keepalive_ms, signature(64)]
    ATTACHED      [4, txid, code, token(8), keepalive_ms, observed_ip, observed_port]
    KEEPALIVE     [5, token]                                          peer -> home
    KEEPALIVE_ACK [6, token, code]                                    home -> peer
    DETACH        [7, token]                                          peer -> home
    SET           [8, txid, token, presence(bin), allow(nil | [key(32)...])]
    SET_ACK       [9, txid, code]
    SEND          [10, txid, envelope(bin)]                           anyone -> home
    SEND_RESULT   [11, txid, code]
    DELIVER       [12, deliver_id(8), envelope(bin)]                  home -> peer
    DELIVER_ACK   [13, deliver_id]                                    peer -> home
    WATCH         [14, txid, watcher_key(32), target_key(32), timestamp, signature(64)]
    WATCHED       [15, txid, code, target_key, attached(bool), presence(bin), watch_token(8)]
    NOTIFY        [16, target_key, attached(bool), presence(bin), seq, watch_token(8)]

The watch token is a random secret the home gives the watcher in WATCHED and
repeats in every NOTIFY of that watch, so an off-path sender cannot fake
presence by spoofing the home's address (the session token does the same for
KEEPALIVE_ACK).

Why one UDP socket and IP fragmentation for large envelopes: the attach session
*is* the peer's NAT mapping towards its home, so everything the home forwards
must come from the address the keepalives go to. An envelope (at most ~16.7 KB;
4-6 KB for an SDP offer with candidates) travels as one datagram: the kernel
fragments it and the NATs reassemble it (conntrack defragments; measured through the lab's
nftables NATs). A lost fragment loses the datagram, which the sender's
retransmission covers. Chunking would add a reassembly buffer per sender at the
home, which is exactly the state we want to bound.

Invariant: ``decode_message`` is total (a message or ``HomeWireDecodeError``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from p2pnode.connectivity.envelope import MAX_ENVELOPE_BYTES
from p2pnode.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES

__all__ = [
    "MAX_ALLOW",
    "MAX_DATAGRAM",
    "MAX_PRESENCE_FIELD",
    "NONCE_BYTES",
    "TOKEN_BYTES",
    "TXID_BYTES",
    "Attach",
    "Attached",
    "Challenge",
    "Code",
    "Datagram",
    "Deliver",
    "DeliverAck",
    "Detach",
    "Hello",
    "HomeMessage",
    "HomeWireDecodeError",
    "Keepalive",
    "KeepaliveAck",
    "Notify",
    "Send",
    "SendResult",
    "SetAck",
    "SetState",
    "Watch",
    "Watched",
    "decode_message",
    "encode_message",
    "is_request",
]

TXID_BYTES = 8
TOKEN_BYTES = 8
NONCE_BYTES = 16
MAX_ALLOW = 64  # keys a peer may name as allowed watchers
MAX_PRESENCE_FIELD = 200  # contact.MAX_PRESENCE_BYTES
MAX_DATAGRAM = MAX_ENVELOPE_BYTES + 64
MAX_KEEPALIVE_MS = 600_000
MAX_SEQ = 2**53

Address = tuple[str, int]


class HomeWireDecodeError(ValueError):
    """A datagram that is not a well-formed home-protocol message."""


class Code(enum.IntEnum):
    """Answer codes, the one vocabulary of refusals in the home protocol."""

    OK = 0
    NOT_ATTACHED = 1  # the recipient has no session here
    NO_ANSWER = 2  # forwarded, but the recipient did not acknowledge in time
    RATE_LIMITED = 3
    TOO_LARGE = 4
    FULL = 5  # this home holds its configured maximum of attached peers
    UNPROVEN = 6  # the challenge or signature does not check out
    FORBIDDEN = 7  # the target does not let this key watch it
    WATCH_LIMIT = 8  # too many watches by this watcher or on this target
    BAD_REQUEST = 9
    UNKNOWN_SESSION = 10  # keepalive for a session this home does not hold: attach again
    BUSY = 11  # too many deliveries in flight


@dataclass(frozen=True, slots=True)
class Datagram:
    data: bytes
    address: Address


@dataclass(frozen=True, slots=True)
class Hello:
    txid: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    txid: bytes
    nonce: bytes
    home_key: bytes


@dataclass(frozen=True, slots=True)
class Attach:
    txid: bytes
    peer_key: bytes
    nonce: bytes
    keepalive_ms: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Attached:
    txid: bytes
    code: Code
    token: bytes
    keepalive_ms: int
    observed: Address


@dataclass(frozen=True, slots=True)
class Keepalive:
    token: bytes


@dataclass(frozen=True, slots=True)
class KeepaliveAck:
    token: bytes
    code: Code


@dataclass(frozen=True, slots=True)
class Detach:
    token: bytes


@dataclass(frozen=True, slots=True)
class SetState:
    txid: bytes
    token: bytes
    presence: bytes
    allow: tuple[bytes, ...] | None  # None: anyone may watch


@dataclass(frozen=True, slots=True)
class SetAck:
    txid: bytes
    code: Code


@dataclass(frozen=True, slots=True)
class Send:
    txid: bytes
    envelope: bytes


@dataclass(frozen=True, slots=True)
class SendResult:
    txid: bytes
    code: Code


@dataclass(frozen=True, slots=True)
class Deliver:
    deliver_id: bytes
    envelope: bytes


@dataclass(frozen=True, slots=True)
class DeliverAck:
    deliver_id: bytes


@dataclass(frozen=True, slots=True)
class Watch:
    txid: bytes
    watcher_key: bytes
    target_key: bytes
    timestamp: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Watched:
    txid: bytes
    code: Code
    target_key: bytes
    attached: bool
    presence: bytes
    token: bytes  # the watch's token (zeros when refused; FORBIDDEN: the admission's)


@dataclass(frozen=True, slots=True)
class Notify:
    target_key: bytes
    attached: bool
    presence: bytes
    seq: int
    token: bytes


HomeMessage = (
    Hello
    | Challenge
    | Attach
    | Attached
    | Keepalive
    | KeepaliveAck
    | Detach
    | SetState
    | SetAck
    | Send
    | SendResult
    | Deliver
    | DeliverAck
    | Watch
    | Watched
    | Notify
)


def _fields(message: HomeMessage) -> list[object]:
    match message:
        case Hello():
            return [1, message.txid]
        case Challenge():
            return [2, message.txid, message.nonce, message.home_key]
        case Attach():
            m = message
            return [3, m.txid, m.peer_key, m.nonce, m.keepalive_ms, m.signature]
        case Attached():
            m2 = message
            host, port = m2.observed
            return [4, m2.txid, int(m2.code), m2.token, m2.keepalive_ms, host, port]
        case Keepalive():
            return [5, message.token]
        case KeepaliveAck():
            return [6, message.token, int(message.code)]
        case Detach():
            return [7, message.token]
        case SetState():
            allow = None if message.allow is None else list(message.allow)
            return [8, message.txid, message.token, message.presence, allow]
        case SetAck():
            return [9, message.txid, int(message.code)]
        case Send():
            return [10, message.txid, message.envelope]
        case SendResult():
            return [11, message.txid, int(message.code)]
        case Deliver():
            return [12, message.deliver_id, message.envelope]
        case DeliverAck():
            return [13, message.deliver_id]
        case Watch():
            w = message
            return [14, w.txid, w.watcher_key, w.target_key, w.timestamp, w.signature]
        case Watched():
            w2 = message
            return [15, w2.txid, int(w2.code), w2.target_key, w2.attached, w2.presence, w2.token]
        case Notify():
            n = message
            return [16, n.target_key, n.attached, n.presence, n.seq, n.token]


def encode_message(message: HomeMessage) -> bytes:
    """The wire bytes of ``message``."""
    encoded: bytes = msgpack.packb(_fields(message), use_bin_type=True)
    return encoded


# -- decoding -----------------------------------------------------------------


def _bin(value: object, name: str, exact: int | None = None, maximum: int = 0) -> bytes:
    if type(value) is not bytes:
        raise HomeWireDecodeError(f"{name} is not binary")
    if exact is not None and len(value) != exact:
        raise HomeWireDecodeError(f"{name} is not {exact} bytes")
    if exact is None and len(value) > maximum:
        raise HomeWireDecodeError(f"{name} is longer than {maximum} bytes")
    return value


def _uint(value: object, name: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise HomeWireDecodeError(f"{name} is not an integer in 0..{maximum}")
    return value


def _code(value: object) -> Code:
    try:
        return Code(_uint(value, "code", 255))
    except ValueError:
        raise HomeWireDecodeError("unknown answer code") from None


def _bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise HomeWireDecodeError(f"{name} is not a boolean")
    return value


def _txid(value: object) -> bytes:
    return _bin(value, "txid", TXID_BYTES)


def _token(value: object) -> bytes:
    return _bin(value, "token", TOKEN_BYTES)


def _key(value: object, name: str) -> bytes:
    return _bin(value, name, PUBLIC_KEY_BYTES)


def _signature(value: object) -> bytes:
    return _bin(value, "signature", SIGNATURE_BYTES)


def _presence(value: object) -> bytes:
    return _bin(value, "presence", maximum=MAX_PRESENCE_FIELD)


def _envelope(value: object) -> bytes:
    return _bin(value, "envelope", maximum=MAX_ENVELOPE_BYTES)


def _allow(value: object) -> tuple[bytes, ...] | None:
    if value is None:
        return None
    if type(value) is not list or len(value) > MAX_ALLOW:
        raise HomeWireDecodeError(f"allow is not nil or a list of at most {MAX_ALLOW} keys")
    return tuple(_key(item, "allowed key") for item in value)


def _observed(host: object, port: object) -> Address:
    if type(host) is not str or len(host) > 45:
        raise HomeWireDecodeError("observed host is not an address string")
    return (host, _uint(port, "observed port", 65535))


_DECODERS: dict[int, tuple[int, Callable[[list[object]], HomeMessage]]] = {
    1: (2, lambda f: Hello(_txid(f[1]))),
    2: (4, lambda f: Challenge(_txid(f[1]), _bin(f[2], "nonce", NONCE_BYTES), _key(f[3], "home"))),
    3: (
        6,
        lambda f: Attach(
            _txid(f[1]),
            _key(f[2], "peer key"),
            _bin(f[3], "nonce", NONCE_BYTES),
            _uint(f[4], "keepalive", MAX_KEEPALIVE_MS),
            _signature(f[5]),
        ),
    ),
    4: (
        7,
        lambda f: Attached(
            _txid(f[1]),
            _code(f[2]),
            _token(f[3]),
            _uint(f[4], "keepalive", MAX_KEEPALIVE_MS),
            _observed(f[5], f[6]),
        ),
    ),
    5: (2, lambda f: Keepalive(_token(f[1]))),
    6: (3, lambda f: KeepaliveAck(_token(f[1]), _code(f[2]))),
    7: (2, lambda f: Detach(_token(f[1]))),
    8: (5, lambda f: SetState(_txid(f[1]), _token(f[2]), _presence(f[3]), _allow(f[4]))),
    9: (3, lambda f: SetAck(_txid(f[1]), _code(f[2]))),
    10: (3, lambda f: Send(_txid(f[1]), _envelope(f[2]))),
    11: (3, lambda f: SendResult(_txid(f[1]), _code(f[2]))),
    12: (3, lambda f: Deliver(_bin(f[1], "deliver id", TXID_BYTES), _envelope(f[2]))),
    13: (2, lambda f: DeliverAck(_bin(f[1], "deliver id", TXID_BYTES))),
    14: (
        6,
        lambda f: Watch(
            _txid(f[1]),
            _key(f[2], "watcher"),
            _key(f[3], "target"),
            _uint(f[4], "timestamp", 2**40),
            _signature(f[5]),
        ),
    ),
    15: (
        7,
        lambda f: Watched(
            _txid(f[1]),
            _code(f[2]),
            _key(f[3], "target"),
            _bool(f[4], "attached"),
            _presence(f[5]),
            _token(f[6]),
        ),
    ),
    16: (
        6,
        lambda f: Notify(
            _key(f[1], "target"),
            _bool(f[2], "attached"),
            _presence(f[3]),
            _uint(f[4], "seq", MAX_SEQ),
            _token(f[5]),
        ),
    ),
}


_REQUEST_TYPES = frozenset({1, 3, 5, 7, 8, 10, 13, 14})  # what a home serves


def is_request(data: bytes) -> bool:
    """Whether ``data`` looks like a request to a home (a node that is both a home and a
    peer routes its datagrams by this): a fixarray whose first element is a request type.
    Only routing; the decoder still judges the datagram."""
    return len(data) >= 2 and 0x90 <= data[0] <= 0x9F and data[1] in _REQUEST_TYPES


def decode_message(data: bytes) -> HomeMessage:
    """Parse one datagram, or raise ``HomeWireDecodeError``. Never anything else."""
    if len(data) > MAX_DATAGRAM:
        raise HomeWireDecodeError("datagram too large")
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=MAX_ALLOW,
            max_map_len=0,
            max_str_len=45,
            max_bin_len=MAX_ENVELOPE_BYTES,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises a zoo of types; all mean "not ours"
        raise HomeWireDecodeError(f"not msgpack: {type(error).__name__}") from None
    if type(fields) is not list or not fields or type(fields[0]) is not int:
        raise HomeWireDecodeError("not a typed msgpack array")
    entry = _DECODERS.get(fields[0])
    if entry is None:
        raise HomeWireDecodeError("unknown message type")
    count, decoder = entry
    if len(fields) != count:
        raise HomeWireDecodeError(f"this message type has {count} fields")
    return decoder(fields)
