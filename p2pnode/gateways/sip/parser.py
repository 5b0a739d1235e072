"""A total SIP parser and serializer: datagram and stream framing, with size caps.

``parse_datagram(bytes)`` returns a :class:`SipRequest` / :class:`SipResponse`
or raises :class:`SipDecodeError` and nothing else, whatever the bytes: the
status it carries is the answer (400 malformed, 413 body too large, 501 an
unknown method with a mismatched CSeq, 505 another SIP version, 513 a head
too large). :class:`SipStreamDecoder` frames TCP/TLS byte streams by
Content-Length (required there, RFC 3261 §18.3) and reports RFC 5626 CRLF
keep-alives; a framing error is fatal to the connection.

Caps (named below) bound what a peer makes us hold: head bytes, header
fields, body bytes, and a stream's buffered bytes.
"""

from __future__ import annotations

import enum

from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.grammar import (
    HEADER_NAME_RE,
    METHOD_RE,
    REASON_PHRASE_RE,
    SIP_VERSION_RE,
    canonical_header_name,
)
from p2pnode.gateways.sip.headers import parse_uri
from p2pnode.gateways.sip.message import Header, SipMessage, SipRequest, SipResponse

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DATAGRAM_BYTES",
    "MAX_HEADER_FIELDS",
    "MAX_HEAD_BYTES",
    "KeepAlive",
    "SipStreamDecoder",
    "StreamItem",
    "parse_datagram",
    "serialize",
]

MAX_DATAGRAM_BYTES = 65_535
MAX_HEAD_BYTES = 16_384  # start line + header fields; larger: 513
MAX_HEADER_FIELDS = 128  # physical header fields after unfolding; more: 513
MAX_BODY_BYTES = 32_768  # more: 413

_CRLF = b"\r\n"
_END_OF_HEAD = b"\r\n\r\n"


class KeepAlive(enum.Enum):
    """RFC 5626 §3.5.1 keep-alives on a stream: a double CRLF ping, a single CRLF pong."""

    PING = "ping"
    PONG = "pong"


StreamItem = SipRequest | SipResponse | KeepAlive


# message-header = header-name HCOLON header-value CRLF, on one (unfolded) line;
# the value without the LWS around it:
#   ({HEADER_NAME_RE})[ \t]*:[ \t]*(.*?)[ \t]*   (split by hand in _split_head)


def _unfold_lines(lines: list[str]) -> list[str]:
    """RFC 3261 §7.3.1: a line starting with SP/HTAB continues the field; LWS -> one SP."""
    logical: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not logical:
                raise SipDecodeError(400, "continuation before the first header")
            logical[-1] = logical[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            logical.append(line)
    return logical


def _split_head(head: bytes) -> tuple[str, tuple[Header, ...]]:
    """Start line and unfolded header fields of ``head`` (no final empty line)."""
    if len(head) > MAX_HEAD_BYTES:
        raise SipDecodeError(513, "message head too large")
    text = head.decode("utf-8", "surrogateescape")
    stripped = text.replace("\r\n", "")
    if "\r" in stripped or "\n" in stripped:
        raise SipDecodeError(400, "bare CR or LF")
    start, *field_lines = text.split("\r\n")
    if "\r\n " in text or "\r\n\t" in text:
        field_lines = _unfold_lines(field_lines)
    if len(field_lines) > MAX_HEADER_FIELDS:
        raise SipDecodeError(513, "too many header fields")
    headers: list[Header] = []
    for line in field_lines:
        # message-header = header-name HCOLON header-value; HCOLON = *( SP / HTAB ) ":" SWS
        # A token holds no ":", so the first ":" ends the name and its LWS (the
        # same split as the regex above, without its backtracking over the value).
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or HEADER_NAME_RE.fullmatch(name) is None:
            raise SipDecodeError(400, "malformed header field")
        headers.append(Header(canonical_header_name(name), value.strip(" \t")))
    return start, tuple(headers)


def _check_version(version: str) -> None:
    # SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
    found = SIP_VERSION_RE.fullmatch(version)
    if found is None:
        raise SipDecodeError(400, "malformed SIP version")
    if (int(found.group(1)), int(found.group(2))) != (2, 0):
        raise SipDecodeError(505, "SIP version not supported")


def _build(start: str, headers: tuple[Header, ...], body: bytes) -> SipMessage:
    if start[:4].upper() == "SIP/":
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
        version, _, rest = start.partition(" ")
        _check_version(version)
        code, space, reason = rest.partition(" ")
        if (
            not space
            or len(code) != 3
            or not code.isdigit()
            or not code.isascii()
            or not 100 <= int(code) <= 699
            or REASON_PHRASE_RE.fullmatch(reason) is None
        ):
            raise SipDecodeError(400, "malformed status line")
        return SipResponse.build(int(code), reason, headers, body)
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF (exactly one SP each)
    try:
        parts = start.split(" ")
        if len(parts) != 3 or not all(parts):
            raise SipDecodeError(400, "malformed request line")
        method, uri_text, version = parts
        if METHOD_RE.fullmatch(method) is None:
            raise SipDecodeError(400, "malformed method")
        _check_version(version)
        return SipRequest.build(method, parse_uri(uri_text), headers, body)
    except SipDecodeError as error:
        error.request_headers = tuple((header.name, header.value) for header in headers)
        raise


def parse_datagram(data: bytes) -> SipMessage:
    """One message from one UDP datagram (RFC 3261 §18.3: bytes past Content-Length dropped)."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise SipDecodeError(513, "datagram too large")
    start = 0
    while data.startswith(_CRLF, start):  # RFC 3261 §7.5: leading CRLFs are ignored
        start += 2
    end = data.find(_END_OF_HEAD, start)
    if end < 0:
        if len(data) - start > MAX_HEAD_BYTES:
            raise SipDecodeError(513, "message head too large")
        raise SipDecodeError(400, "incomplete message head")
    start_line, headers = _split_head(data[start:end])
    body = data[end + 4 :]
    message = _build(start_line, headers, b"")
    length = message.core.content_length
    if length is not None:
        if length > len(body):
            raise SipDecodeError(400, "Content-Length larger than the datagram")
        body = body[:length]
    if len(body) > MAX_BODY_BYTES:
        raise SipDecodeError(413, "body too large")
    return _with_body(message, body)


def _with_body(message: SipMessage, body: bytes) -> SipMessage:
    if isinstance(message, SipRequest):
        return SipRequest(message.method, message.uri, message.headers, body, message.core)
    return SipResponse(message.status, message.reason, message.headers, body, message.core)


class SipStreamDecoder:
    """Frames a TCP/TLS byte stream into messages and keep-alives.

    ``feed`` returns every complete item; it raises ``SipDecodeError`` when the
    stream cannot be framed any more (the connection must then be closed).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[StreamItem]:
        if self._broken:
            raise SipDecodeError(400, "stream already failed")
        self._buffer += data
        items: list[StreamItem] = []
        try:
            while True:
                item = self._next()
                if item is None:
                    return items
                items.append(item)
        except SipDecodeError:
            self._broken = True
            self._buffer.clear()
            raise

    def _next(self) -> StreamItem | None:
        buffer = self._buffer
        if buffer.startswith(_CRLF):
            if buffer.startswith(_END_OF_HEAD):
                del buffer[:4]
                return KeepAlive.PING
            if len(buffer) >= 3 and buffer[2:3] != b"\r":
                del buffer[:2]
                return KeepAlive.PONG
            if len(buffer) >= 4:
                del buffer[:2]  # CRLF CR x: a pong, then a stray CR that fails below
                return KeepAlive.PONG
            return None
        end = buffer.find(_END_OF_HEAD)
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise SipDecodeError(513, "message head too large")
            return None
        start_line, headers = _split_head(bytes(buffer[:end]))
        message = _build(start_line, headers, b"")
        length = message.core.content_length
        if length is None:
            raise SipDecodeError(400, "Content-Length required on a stream")
        if length > MAX_BODY_BYTES:
            raise SipDecodeError(413, "body too large")
        total = end + 4 + length
        if len(buffer) < total:
            return None
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        return _with_body(message, body)


def serialize(message: SipMessage) -> bytes:
    """Wire bytes of ``message``: start line, one line per header field, empty line, body."""
    lines = [message.start_line()]
    lines.extend(f"{header.name}: {header.value}" for header in message.headers)
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + message.body
