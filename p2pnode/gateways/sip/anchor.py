"""SDP rewriting that anchors a call's audio on the gateway's relay.

Why a module of its own: the B2BUA decides *which* leg an SDP body came from
and goes to; this module only rewrites it. The first audio section with a
non-zero port is relayed: its address becomes the gateway's media address and
its port the relay port facing the receiving leg, and the sender's address
(after the NAT fix of :func:`media.signalled_address`) is what the relay
expects packets from. Other sections are refused (port 0), as RFC 3264 §6
allows, because the relay carries one audio stream per call. Codecs,
directions (hold is ``sendonly``/``inactive`` or a null address), ptime and
telephone-event pass through untouched: no transcoding, and RFC 4733 DTMF
keeps whatever payload type the phones negotiated.

RTCP: with ``a=rtcp-mux`` (RFC 5761) it rides the relayed RTP port. Without
it (most desk phones) the sender's RTCP address is its ``a=rtcp`` (RFC 3605)
or RTP port + 1 (RFC 3550 §11); the relay opens an RTCP port facing the
receiver and the rewritten section names it in ``a=rtcp`` (the sender's own
``a=rtcp``, an address the receiver cannot reach, never passes through).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from p2pnode.gateways.sip.media import Address, Side, signalled_address
from p2pnode.gateways.sip.sdp import MediaDescription, SessionDescription, parse_sdp

__all__ = ["MediaPorts", "anchor_sdp", "null_address"]


class MediaPorts(Protocol):
    """What the B2BUA needs of a call's relay (``media.RelayHandle`` conforms)."""

    def port(self, side: Side) -> int: ...

    def expect(self, side: Side, address: Address) -> None: ...

    def rtcp_port(self, side: Side) -> int | None: ...

    def expect_rtcp(self, side: Side, address: Address) -> None: ...

    def close(self) -> None: ...


def null_address(host: str) -> bool:
    return host in ("0.0.0.0", "::")


def _connection(host: str) -> str:
    return f"IN {'IP6' if ':' in host else 'IP4'} {host}"


def _anchor_rtcp(
    section: MediaDescription, host: str, sender: Side, source: Address, media: MediaPorts
) -> MediaDescription:
    """The section with the relay's ``a=rtcp`` port when RTCP does not ride RTP."""
    stated = section.rtcp_address()
    if section.rtcp_mux and stated is None:
        return section  # RFC 5761: relayed with the RTP
    port = media.rtcp_port(sender.other)
    if port is not None:
        rtcp_host = stated[0] if stated is not None and stated[0] is not None else host
        rtcp_port = stated[1] if stated is not None else min(section.port + 1, 65535)
        if null_address(host):
            media.expect_rtcp(sender, (host, rtcp_port))
        else:
            media.expect_rtcp(sender, signalled_address(rtcp_host, rtcp_port, source))
    return section.with_rtcp_port(port)


def anchor_sdp(
    body: bytes,
    *,
    sender: Side,
    sender_source: Address,
    media: MediaPorts,
    media_host: str,
) -> bytes:
    """Rewrite ``body`` sent by ``sender`` for the other leg; raises SdpDecodeError.

    ``sender_source`` is the SIP address the sender signalled from (for the
    NAT fix). A null connection address (RFC 2543 hold) is kept null.
    """
    sdp: SessionDescription = parse_sdp(body)
    relayed = False
    sections = []
    hold = False
    for section in sdp.media:
        if relayed or section.media != "audio" or section.port == 0:
            sections.append(replace(section, port=0))
            continue
        host = sdp.address(section)
        if host is None:
            sections.append(replace(section, port=0))
            continue
        relayed = True
        with_rtcp = _anchor_rtcp(section, host, sender, sender_source, media)
        hold = null_address(host)
        if hold:
            media.expect(sender, (host, section.port))
        else:
            media.expect(sender, signalled_address(host, section.port, sender_source))
        out_host = host if hold else media_host
        connection = None if section.connection is None else _connection(out_host)
        sections.append(
            replace(
                with_rtcp, port=media.port(sender.other), connection=connection, port_count=None
            )
        )
    out_host = "0.0.0.0" if hold else media_host
    origin = replace(sdp.origin, address=media_host, addrtype="IP6" if ":" in media_host else "IP4")
    session_connection = None if sdp.connection is None and relayed else _connection(out_host)
    if sdp.connection is not None:
        session_connection = _connection(out_host)
    anchored = replace(sdp, origin=origin, connection=session_connection, media=tuple(sections))
    return anchored.encode()
