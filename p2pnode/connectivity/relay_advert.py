"""Payload of a RELAY_ADVERT record: what a supernode offers and how busy it is.

Wire form (one msgpack array, fields by position, shortest encodings)::

    [version=1, udp[[ip, port]...], tcp[[ip, port]...], dht[[ip, port]...],
     realm, capacity, load, uptime, software (, stun[[ip, port]...])]

``udp``/``tcp`` are where the STUN+TURN service listens; ``dht`` is where the
supernode's DHT node answers, so a peer can ask it for TURN credentials over
the DHT extension RPC without a further lookup; ``stun`` (optional tenth field,
absent when empty) is where it serves STUN *with dial-back*, so nodes can judge
their own reachability against supernodes found in the DHT instead of servers
configured by hand.

Invariants:
- ``decode_relay_advert`` is total: any bytes give a ``RelayAdvert`` or a
  ``RelayAdvertDecodeError`` (a ``ValueError``), never another exception; the
  msgpack limits keep a hostile payload from making us allocate more than it
  carries.
- Encoding is canonical: ``encode(decode(b)) == b`` for every accepted ``b``
  (addresses in compressed textual form), so equal adverts sign equal bytes.
- Everything is bounded by named constants so an advert always fits inside a
  record (``MAX_RECORD_BYTES``) with room to spare.
- The advert says nothing about trust: the owner's signature (records layer)
  binds it to a key, and peers health-check a relay before using it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import msgpack

from p2pnode.records.fields import FieldReader, Limits

__all__ = [
    "ADVERT_VERSION",
    "MAX_ADDRESSES",
    "MAX_CAPACITY",
    "MAX_REALM_BYTES",
    "MAX_SOFTWARE_BYTES",
    "MAX_STUN_ADDRESSES",
    "MAX_UPTIME",
    "RelayAdvert",
    "RelayAdvertDecodeError",
    "decode_relay_advert",
    "encode_relay_advert",
]

ADVERT_VERSION = 1
MAX_ADDRESSES = 4  # per transport: one IPv4, one IPv6 and an alternate of each
MAX_STUN_ADDRESSES = 2  # dial-back STUN: one IPv4, one IPv6 (keeps the advert under 800 bytes)
MAX_REALM_BYTES = 64
MAX_SOFTWARE_BYTES = 64
MAX_CAPACITY = 1_000_000  # allocations; far above what one Python process relays
MAX_UPTIME = 2**32 - 1  # seconds (136 years)
MAX_ADVERT_BYTES = 800  # well under a record's 1200 bytes with its envelope
_FIELD_COUNT = 9  # without ``stun``
_MAX_FIELD_COUNT = 10

Address = tuple[str, int]


class RelayAdvertDecodeError(ValueError):
    """Bytes that are not a well-formed, canonical relay advert."""


def _check_address(address: Address, name: str) -> Address:
    host, port = address
    try:
        canonical = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{name}: {host!r} is not an IP address") from None
    if canonical != host:
        raise ValueError(f"{name}: {host!r} is not in canonical form {canonical!r}")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"{name}: port {port!r} is not in 1..65535")
    return address


@dataclass(frozen=True, slots=True)
class RelayAdvert:
    """A supernode's offer. Construct it, and ``ValueError`` tells what is out of bounds."""

    udp: tuple[Address, ...]
    tcp: tuple[Address, ...]
    dht: tuple[Address, ...]
    realm: str
    capacity: int  # allocations it accepts in total
    load: int  # allocations live when the advert was signed
    uptime: int  # seconds the relay role has been running
    software: str
    stun: tuple[Address, ...] = ()  # STUN with dial-back (nat.reachability servers)

    def __post_init__(self) -> None:
        for name in ("udp", "tcp", "dht", "stun"):
            addresses: tuple[Address, ...] = getattr(self, name)
            limit = MAX_STUN_ADDRESSES if name == "stun" else MAX_ADDRESSES
            if len(addresses) > limit:
                raise ValueError(f"{name}: more than {limit} addresses")
            for address in addresses:
                _check_address(address, name)
        if not self.udp and not self.tcp:
            raise ValueError("a relay advert needs at least one UDP or TCP address")
        if len(self.realm.encode("utf-8")) > MAX_REALM_BYTES:
            raise ValueError(f"realm longer than {MAX_REALM_BYTES} bytes")
        if len(self.software.encode("utf-8")) > MAX_SOFTWARE_BYTES:
            raise ValueError(f"software longer than {MAX_SOFTWARE_BYTES} bytes")
        if not 1 <= self.capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be in 1..{MAX_CAPACITY}")
        if not 0 <= self.load <= MAX_CAPACITY:
            raise ValueError(f"load must be in 0..{MAX_CAPACITY}")
        if not 0 <= self.uptime <= MAX_UPTIME:
            raise ValueError(f"uptime must be in 0..{MAX_UPTIME}")

    @property
    def load_fraction(self) -> float:
        """Share of capacity in use; above 1.0 the relay is shedding load."""
        return self.load / self.capacity

    @property
    def has_room(self) -> bool:
        """False when the relay said it refuses new allocations."""
        return self.load < self.capacity


def encode_relay_advert(advert: RelayAdvert) -> bytes:
    """The canonical wire bytes of ``advert``."""
    fields: list[object] = [
        ADVERT_VERSION,
        [[host, port] for host, port in advert.udp],
        [[host, port] for host, port in advert.tcp],
        [[host, port] for host, port in advert.dht],
        advert.realm,
        advert.capacity,
        advert.load,
        advert.uptime,
        advert.software,
    ]
    if advert.stun:  # canonical: the field is absent when empty
        fields.append([[host, port] for host, port in advert.stun])
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


_READ = FieldReader(RelayAdvertDecodeError)
_LIMITS = Limits(
    max_bytes=MAX_ADVERT_BYTES,
    max_depth=3,  # advert array -> address list -> [host, port]
    max_array=_MAX_FIELD_COUNT,
    max_str=max(MAX_REALM_BYTES, MAX_SOFTWARE_BYTES, 45),
    max_bin=0,
)


def _addresses(value: object, name: str, limit: int = MAX_ADDRESSES) -> tuple[Address, ...]:
    found: list[Address] = []
    for item in _READ.array(value, name, max_length=limit):
        host, port = _READ.array(item, f"{name} address", length=2)
        address = (_READ.text(host, f"{name} host"), _READ.uint(port, f"{name} port", 65535))
        try:
            found.append(_check_address(address, name))
        except ValueError:  # its message quotes the host: never echo a peer's value
            raise RelayAdvertDecodeError(
                f"{name}: an address is not a canonical IP address and port 1..65535"
            ) from None
    return tuple(found)


def decode_relay_advert(data: bytes) -> RelayAdvert:
    """Parse a RELAY_ADVERT payload, or raise ``RelayAdvertDecodeError``. Never anything else."""
    if len(data) > MAX_ADVERT_BYTES:
        raise RelayAdvertDecodeError(f"advert is {len(data)} bytes, more than {MAX_ADVERT_BYTES}")
    fields = _READ.unpack(data, _LIMITS)
    if type(fields) is not list or not fields:
        raise RelayAdvertDecodeError("not a msgpack array")
    _READ.exact(fields[0], "advert version", ADVERT_VERSION)
    if len(fields) not in (_FIELD_COUNT, _MAX_FIELD_COUNT):
        raise RelayAdvertDecodeError(f"not an array of {_FIELD_COUNT} or {_MAX_FIELD_COUNT} fields")
    _, udp, tcp, dht, realm, capacity, load, uptime, software = fields[:_FIELD_COUNT]
    stun = fields[_FIELD_COUNT] if len(fields) == _MAX_FIELD_COUNT else []
    try:
        advert = RelayAdvert(
            udp=_addresses(udp, "udp"),
            tcp=_addresses(tcp, "tcp"),
            dht=_addresses(dht, "dht"),
            realm=_READ.text(realm, "realm", max_bytes=MAX_REALM_BYTES),
            capacity=_READ.uint(capacity, "capacity", MAX_CAPACITY),
            load=_READ.uint(load, "load", MAX_CAPACITY),
            uptime=_READ.uint(uptime, "uptime", MAX_UPTIME),
            software=_READ.text(software, "software", max_bytes=MAX_SOFTWARE_BYTES),
            stun=_addresses(stun, "stun", MAX_STUN_ADDRESSES),
        )
    except ValueError as error:
        raise RelayAdvertDecodeError(str(error)) from None
    if encode_relay_advert(advert) != data:
        raise RelayAdvertDecodeError("non-canonical encoding")
    return advert
