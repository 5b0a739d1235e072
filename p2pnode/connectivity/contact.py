"""Payloads of CONTACT and PRESENCE records: how to reach a key now, and its status.

Wire forms (one msgpack array each, fields by position, shortest encodings)::

    CONTACT:  [version=1, homes[[home_key(bin 32), [dht_ip, port], [signal_ip, port]]...],
               nat(int), device(bin <= 16), capabilities(int), protocol(int)]
    PRESENCE: [version=1, status(int), note(str <= 140 bytes), since(unix seconds)]

A CONTACT lists the key's home supernodes: where their DHT node answers and where
their signalling service (``p2pnode.connectivity.attach``) accepts sealed
envelopes for it. A publicly reachable node is its own home (its own key and
addresses). CONTACT records are short-lived (``CONTACT_TTL``) and republished
whenever a home changes; a reader that finds a stale one learns it from a failed
send and fetches again.

Invariants:
- The decoders are total: any bytes give a value or ``ContactDecodeError`` (a
  ``ValueError``); msgpack limits bound what a hostile payload makes us allocate.
- Encoding is canonical: ``encode(decode(b)) == b`` for every accepted ``b``.
- Everything is bounded by named constants; an encoded CONTACT stays under
  ``MAX_CONTACT_BYTES``, far below a record's 1200 bytes.
- Attacker values are never formatted with ``repr`` in errors.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

import msgpack

from p2pnode.identity import PUBLIC_KEY_BYTES

__all__ = [
    "CONTACT_SUBJECT",
    "CONTACT_TTL",
    "MAX_DEVICE_BYTES",
    "MAX_HOMES",
    "MAX_NOTE_BYTES",
    "PRESENCE_SUBJECT",
    "PROTOCOL_VERSION",
    "Capability",
    "Contact",
    "ContactDecodeError",
    "HomeEntry",
    "NatVerdict",
    "Presence",
    "PresenceStatus",
    "decode_contact",
    "decode_presence",
    "encode_contact",
    "encode_presence",
]

CONTACT_VERSION = 1
PRESENCE_VERSION = 1
PROTOCOL_VERSION = 1  # of the home protocol (attach.py / homewire.py)
CONTACT_SUBJECT = "contact"
PRESENCE_SUBJECT = "presence"
CONTACT_TTL = 600  # seconds: a CONTACT says where a key is *now*; republished on change
MAX_HOMES = 4  # two homes plus room for a hand-over
MAX_DEVICE_BYTES = 16
MAX_NOTE_BYTES = 140
MAX_CONTACT_BYTES = 600
MAX_PRESENCE_BYTES = 200
MAX_TIMESTAMP = 2**40
_IP_TEXT_MAX = 45  # longest textual IPv6 address

Address = tuple[str, int]


class ContactDecodeError(ValueError):
    """Bytes that are not a well-formed, canonical CONTACT or PRESENCE payload."""


class NatVerdict(enum.IntEnum):
    """What the node concluded about its own reachability (nat.reachability)."""

    UNKNOWN = 0
    PUBLIC = 1  # dialled back by several servers: its own home
    BEHIND_NAT = 2  # reachable only through an attach session (cone NAT or unknown kind)
    SYMMETRIC = 3  # address-and-port-dependent mapping: direct paths are unlikely
    UDP_BLOCKED = 4  # TURN over TCP only


class Capability(enum.IntFlag):
    CHAT = 1
    AUDIO = 2
    VIDEO = 4
    SIP = 8


_ALL_CAPABILITIES = int(Capability.CHAT | Capability.AUDIO | Capability.VIDEO | Capability.SIP)


class PresenceStatus(enum.IntEnum):
    OFFLINE = 0
    ONLINE = 1
    AWAY = 2
    BUSY = 3


def _check_address(address: Address, name: str) -> Address:
    host, port = address
    try:
        canonical = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{name}: not an IP address") from None
    if canonical != host:
        raise ValueError(f"{name}: address not in canonical form")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"{name}: port not in 1..65535")
    return address


@dataclass(frozen=True, slots=True)
class HomeEntry:
    """One home supernode: its identity key, its DHT node and its signalling service."""

    key: bytes
    dht: Address
    signal: Address

    def __post_init__(self) -> None:
        if len(self.key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"a home key is {PUBLIC_KEY_BYTES} bytes")
        _check_address(self.dht, "dht")
        _check_address(self.signal, "signal")


@dataclass(frozen=True, slots=True)
class Contact:
    """How to reach a key now. Construct it, and ``ValueError`` tells what is out of bounds."""

    homes: tuple[HomeEntry, ...]
    nat: NatVerdict = NatVerdict.UNKNOWN
    device: bytes = b""
    capabilities: Capability = Capability.CHAT
    protocol: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if len(self.homes) > MAX_HOMES:
            raise ValueError(f"more than {MAX_HOMES} homes")
        if len({home.key for home in self.homes}) != len(self.homes):
            raise ValueError("a home is listed twice")
        if len(self.device) > MAX_DEVICE_BYTES:
            raise ValueError(f"device id longer than {MAX_DEVICE_BYTES} bytes")
        if not 0 <= int(self.capabilities) <= _ALL_CAPABILITIES:
            raise ValueError("unknown capability bits")
        if not 0 <= self.protocol <= 255:
            raise ValueError("protocol version not in 0..255")


@dataclass(frozen=True, slots=True)
class Presence:
    """A status, an optional note and since when (unix seconds)."""

    status: PresenceStatus
    note: str = ""
    since: int = 0

    def __post_init__(self) -> None:
        if len(self.note.encode("utf-8")) > MAX_NOTE_BYTES:
            raise ValueError(f"note longer than {MAX_NOTE_BYTES} bytes")
        if not 0 <= self.since <= MAX_TIMESTAMP:
            raise ValueError("since out of range")


def _pack(fields: list[object]) -> bytes:
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def encode_contact(contact: Contact) -> bytes:
    """The canonical wire bytes of ``contact``."""
    return _pack(
        [
            CONTACT_VERSION,
            [[h.key, [h.dht[0], h.dht[1]], [h.signal[0], h.signal[1]]] for h in contact.homes],
            int(contact.nat),
            contact.device,
            int(contact.capabilities),
            contact.protocol,
        ]
    )


def encode_presence(presence: Presence) -> bytes:
    """The canonical wire bytes of ``presence``."""
    return _pack([PRESENCE_VERSION, int(presence.status), presence.note, presence.since])


def _unpack(data: bytes, limit: int, max_str: int, max_bin: int, max_array: int) -> list[object]:
    if len(data) > limit:
        raise ContactDecodeError(f"payload is {len(data)} bytes, more than {limit}")
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=max_array,
            max_map_len=0,
            max_str_len=max_str,
            max_bin_len=max_bin,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises a zoo of types; all mean "not a payload"
        raise ContactDecodeError(f"not msgpack: {type(error).__name__}") from None
    if type(fields) is not list or not fields:
        raise ContactDecodeError("not a msgpack array")
    return fields


def _uint(value: object, name: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise ContactDecodeError(f"{name} is not an integer in 0..{maximum}")
    return value


def _address(value: object, name: str) -> Address:
    if type(value) is not list or len(value) != 2:
        raise ContactDecodeError(f"{name} is not [host, port]")
    host, port = value
    if type(host) is not str or type(port) is not int:
        raise ContactDecodeError(f"{name} is not [str, int]")
    try:
        return _check_address((host, port), name)
    except ValueError as error:
        raise ContactDecodeError(str(error)) from None


def _home(value: object) -> HomeEntry:
    if type(value) is not list or len(value) != 3:
        raise ContactDecodeError("a home is not [key, dht, signal]")
    key, dht, signal = value
    if type(key) is not bytes or len(key) != PUBLIC_KEY_BYTES:
        raise ContactDecodeError(f"a home key is not {PUBLIC_KEY_BYTES} bytes")
    return HomeEntry(key, _address(dht, "dht"), _address(signal, "signal"))


def decode_contact(data: bytes) -> Contact:
    """Parse a CONTACT payload, or raise ``ContactDecodeError``. Never anything else."""
    fields = _unpack(data, MAX_CONTACT_BYTES, _IP_TEXT_MAX, PUBLIC_KEY_BYTES, 6)
    if type(fields[0]) is not int or fields[0] != CONTACT_VERSION:
        raise ContactDecodeError("unsupported contact version")
    if len(fields) != 6:
        raise ContactDecodeError("a contact has 6 fields")
    _, homes, nat, device, capabilities, protocol = fields
    if type(homes) is not list or len(homes) > MAX_HOMES:
        raise ContactDecodeError(f"homes is not a list of at most {MAX_HOMES}")
    if type(device) is not bytes or len(device) > MAX_DEVICE_BYTES:
        raise ContactDecodeError(f"device is not at most {MAX_DEVICE_BYTES} bytes")
    try:
        verdict = NatVerdict(_uint(nat, "nat", 255))
    except ValueError:
        raise ContactDecodeError("unknown NAT verdict") from None
    try:
        contact = Contact(
            homes=tuple(_home(home) for home in homes),
            nat=verdict,
            device=device,
            capabilities=Capability(_uint(capabilities, "capabilities", _ALL_CAPABILITIES)),
            protocol=_uint(protocol, "protocol", 255),
        )
    except ContactDecodeError:
        raise
    except ValueError as error:
        raise ContactDecodeError(str(error)) from None
    if encode_contact(contact) != data:
        raise ContactDecodeError("non-canonical encoding")
    return contact


def decode_presence(data: bytes) -> Presence:
    """Parse a PRESENCE payload, or raise ``ContactDecodeError``. Never anything else."""
    fields = _unpack(data, MAX_PRESENCE_BYTES, MAX_NOTE_BYTES, 0, 4)
    if type(fields[0]) is not int or fields[0] != PRESENCE_VERSION:
        raise ContactDecodeError("unsupported presence version")
    if len(fields) != 4:
        raise ContactDecodeError("a presence has 4 fields")
    _, status, note, since = fields
    try:
        status_value = PresenceStatus(_uint(status, "status", 255))
    except ValueError:
        raise ContactDecodeError("unknown presence status") from None
    if type(note) is not str or len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise ContactDecodeError(f"note is not a string of at most {MAX_NOTE_BYTES} bytes")
    presence = Presence(status_value, note, _uint(since, "since", MAX_TIMESTAMP))
    if encode_presence(presence) != data:
        raise ContactDecodeError("non-canonical encoding")
    return presence
