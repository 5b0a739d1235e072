"""A small SDP model (RFC 4566) for the SIP gateway's offer/answer.

Why our own: aiortc's SDP parser drops ``a=ptime``/``maxptime`` and yields no
codec for a static payload type without ``a=rtpmap`` (``m=audio 4000 RTP/AVP
0 18``), which is exactly what desk phones send. This model keeps every line
it does not interpret (attributes in order, unknown session lines as text),
knows the RFC 3551 static payload types, and answers the questions a B2BUA
asks: which codecs, which address/port, which direction, which ptime, which
payload type carries RFC 4733 telephone-events.

``parse_sdp`` is total: any bytes give a :class:`SessionDescription` or an
``SdpDecodeError`` (bounded: size, media sections, attributes).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_MEDIA",
    "MAX_SDP_BYTES",
    "STATIC_PAYLOAD_TYPES",
    "Codec",
    "Direction",
    "MediaDescription",
    "Origin",
    "SdpDecodeError",
    "SessionDescription",
    "parse_sdp",
]

MAX_SDP_BYTES = 16_384
MAX_MEDIA = 16
MAX_ATTRIBUTES = 128


class SdpDecodeError(ValueError):
    """Bytes that are not an SDP description we accept (the SIP layer answers 488/400)."""


class Direction(enum.Enum):
    """RFC 4566 §6 / RFC 3264 §5.1 media direction attributes."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """The direction an answerer mirrors (sendonly <-> recvonly)."""
        return {
            Direction.SENDONLY: Direction.RECVONLY,
            Direction.RECVONLY: Direction.SENDONLY,
        }.get(self, self)


@dataclass(frozen=True, slots=True)
class Codec:
    payload_type: int
    name: str  # encoding name as written (PCMU, telephone-event, ...)
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def is_telephone_event(self) -> bool:
        return self.name.lower() == "telephone-event"


# RFC 3551 §6 Table 4: audio payload types that need no rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}

Attribute = tuple[str, str | None]


def _number(text: str) -> bool:
    return text.isascii() and text.isdecimal() and len(text) <= 20


def _attribute(attributes: tuple[Attribute, ...], name: str) -> str | None:
    for key, value in attributes:
        if key == name:
            return "" if value is None else value
    return None


def _direction(attributes: tuple[Attribute, ...]) -> Direction | None:
    for key, _ in attributes:
        for direction in Direction:
            if key == direction.value:
                return direction
    return None


@dataclass(frozen=True, slots=True)
class Origin:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>"""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """m=<media> <port>[/<count>] <proto> <fmt> ... and the lines that follow it."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: str | None = None  # the c= value, e.g. "IN IP4 192.0.2.1"
    bandwidths: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    other: tuple[str, ...] = ()  # i=/k= lines kept verbatim ("i=..." form)

    def attribute(self, name: str) -> str | None:
        return _attribute(self.attributes, name)

    def codecs(self) -> tuple[Codec, ...]:
        """The formats as codecs: rtpmap first, RFC 3551 static types otherwise."""
        rtpmaps: dict[str, str] = {}
        fmtps: dict[str, str] = {}
        for key, value in self.attributes:
            if key in ("rtpmap", "fmtp") and value:
                mapped, _, rest = value.partition(" ")
                (rtpmaps if key == "rtpmap" else fmtps)[mapped] = rest.strip()
        codecs: list[Codec] = []
        for fmt in self.formats:
            if not _number(fmt):
                continue
            pt = int(fmt)
            mapping = rtpmaps.get(fmt)
            if mapping is not None:
                parts = mapping.split("/")
                try:
                    rate = int(parts[1]) if len(parts) > 1 else 8000
                    channels = int(parts[2]) if len(parts) > 2 else 1
                except ValueError:
                    continue
                codecs.append(Codec(pt, parts[0], rate, channels, fmtps.get(fmt)))
            elif pt in STATIC_PAYLOAD_TYPES:
                name, rate, channels = STATIC_PAYLOAD_TYPES[pt]
                codecs.append(Codec(pt, name, rate, channels, fmtps.get(fmt)))
        return tuple(codecs)

    @property
    def telephone_event(self) -> Codec | None:
        return next((codec for codec in self.codecs() if codec.is_telephone_event), None)

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value is not None and _number(value) else None

    @property
    def maxptime(self) -> int | None:
        value = self.attribute("maxptime")
        return int(value) if value is not None and _number(value) else None

    @property
    def rtcp_mux(self) -> bool:
        """RFC 5761 §5.1.1: RTCP rides the RTP port."""
        return self.attribute("rtcp-mux") is not None

    def rtcp_address(self) -> tuple[str | None, int] | None:
        """RFC 3605 ``a=rtcp:<port> [IN IP4|IP6 <address>]``: (address or None, port).

        None when absent or malformed (then RTCP goes to the RTP port + 1,
        RFC 3550 §11); a port outside 1-65535 counts as malformed.
        """
        value = self.attribute("rtcp")
        if value is None:
            return None
        parts = value.split()
        if not parts or not _number(parts[0]) or not 0 < int(parts[0]) < 65536:
            return None
        if len(parts) == 4 and parts[1] == "IN" and parts[2] in ("IP4", "IP6"):
            return parts[3], int(parts[0])
        return (None, int(parts[0])) if len(parts) == 1 else None

    def with_rtcp_port(self, port: int | None) -> MediaDescription:
        """Our ``a=rtcp:<port>`` in place of the sender's (None: no ``a=rtcp`` line)."""
        kept = tuple((key, value) for key, value in self.attributes if key != "rtcp")
        if port is None:
            return replace(self, attributes=kept)
        return replace(self, attributes=(*kept, ("rtcp", str(port))))

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}".rstrip()]
        out += list(self.other)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={bandwidth}" for bandwidth in self.bandwidths]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        return out


@dataclass(frozen=True, slots=True)
class SessionDescription:
    origin: Origin
    session_name: str
    connection: str | None = None
    timing: str = "0 0"
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    other: tuple[str, ...] = ()  # i=, u=, e=, p=, b=, z=, k=, r= kept verbatim

    def attribute(self, name: str) -> str | None:
        return _attribute(self.attributes, name)

    def direction(self, media: MediaDescription) -> Direction:
        """Media-level direction, else session-level, else sendrecv (RFC 4566 §6)."""
        return _direction(media.attributes) or _direction(self.attributes) or Direction.SENDRECV

    def address(self, media: MediaDescription) -> str | None:
        """The connection address of ``media`` (its own c= line, else the session's)."""
        connection = media.connection or self.connection
        if connection is None:
            return None
        parts = connection.split(" ")
        return parts[2].split("/")[0] if len(parts) == 3 else None

    def with_media(self, media: tuple[MediaDescription, ...]) -> SessionDescription:
        return replace(self, media=media)

    def encode(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        lines += [line for line in self.other if line[:2] in ("i=", "u=", "e=", "p=")]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [line for line in self.other if line[:2] == "b="]
        lines.append(f"t={self.timing}")
        lines += [line for line in self.other if line[:2] in ("r=", "z=", "k=")]
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for media in self.media:
            lines += media.lines()
        return ("\r\n".join(lines) + "\r\n").encode()


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name or " " in name:
        raise SdpDecodeError("malformed attribute")
    return (name, rest if colon else None)


def _parse_media(value: str) -> MediaDescription:
    parts = value.split(" ")
    if len(parts) < 3:
        raise SdpDecodeError("malformed m= line")
    media, port_text, proto, *formats = parts
    port_main, slash, count_text = port_text.partition("/")
    if not _number(port_main) or int(port_main) > 65535 or (slash and not _number(count_text)):
        raise SdpDecodeError("malformed m= port")
    return MediaDescription(
        media=media,
        port=int(port_main),
        proto=proto,
        formats=tuple(fmt for fmt in formats if fmt),
        port_count=int(count_text) if slash else None,
    )


class _MediaLines:
    """The lines of one media section while it is being read."""

    def __init__(self, head: MediaDescription) -> None:
        self.head = head
        self.connection: str | None = None
        self.bandwidths: list[str] = []
        self.attributes: list[Attribute] = []
        self.other: list[str] = []

    def build(self) -> MediaDescription:
        return replace(
            self.head,
            connection=self.connection,
            bandwidths=tuple(self.bandwidths),
            attributes=tuple(self.attributes),
            other=tuple(self.other),
        )


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; lines may end in CRLF or LF (RFC 4566 §5 allows LF)."""
    if len(data) > MAX_SDP_BYTES:
        raise SdpDecodeError("SDP too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SdpDecodeError("SDP is not UTF-8") from error
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise SdpDecodeError("SDP must start with v=0")
    origin: Origin | None = None
    name: str | None = None
    connection: str | None = None
    timing = "0 0"
    session_attributes: list[Attribute] = []
    other: list[str] = []
    sections: list[_MediaLines] = []
    attribute_count = 0
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise SdpDecodeError("malformed SDP line")
        kind, value = line[0], line[2:]
        current = sections[-1] if sections else None
        if kind == "m":
            if len(sections) >= MAX_MEDIA:
                raise SdpDecodeError("too many media sections")
            sections.append(_MediaLines(_parse_media(value)))
        elif kind == "a":
            attribute_count += 1
            if attribute_count > MAX_ATTRIBUTES:
                raise SdpDecodeError("too many attributes")
            target = session_attributes if current is None else current.attributes
            target.append(_parse_attribute(value))
        elif current is not None:
            if kind == "c":
                current.connection = value
            elif kind == "b":
                current.bandwidths.append(value)
            elif kind in ("i", "k"):
                current.other.append(line)
            else:
                raise SdpDecodeError("unexpected line in a media section")
        elif kind == "o":
            fields = value.split(" ")
            if len(fields) != 6 or not _number(fields[2]):
                raise SdpDecodeError("malformed o= line")
            origin = Origin(fields[0], fields[1], int(fields[2]), fields[3], fields[4], fields[5])
        elif kind == "s":
            name = value
        elif kind == "c":
            connection = value
        elif kind == "t":
            timing = value
        elif kind in ("i", "u", "e", "p", "b", "r", "z", "k"):
            other.append(line)
        else:
            raise SdpDecodeError("unknown SDP line type")
    if origin is None or name is None:
        raise SdpDecodeError("SDP lacks o= or s=")
    return SessionDescription(
        origin=origin,
        session_name=name,
        connection=connection,
        timing=timing,
        attributes=tuple(session_attributes),
        media=tuple(section.build() for section in sections),
        other=tuple(other),
    )
