"""Which codec each leg of a bridged call uses, and whether audio crosses untouched.

Why a module: the phone leg (SIP, RFC 3264) and the P2P leg (WebRTC, aiortc)
each negotiate a codec; the bridge carries payload bytes unchanged only when
both legs negotiated the same one. This module names the codecs the bridge
knows (:class:`BridgeCodec`), says when a pair passes through
(:func:`choose_media_path`), and orders the P2P leg's codec preferences so
that the phone's codecs win whenever the P2P side may use them
(:func:`p2p_codec_order`), and the phone's in the peer's order when a peer
calls (:func:`peer_codecs`).

aiortc 1.16 (pinned) speaks opus, G.722, PCMU and PCMA on the P2P leg, so all
four can pass through when the peer takes them: a p2pnode peer answering the
bridge takes the bridge's first codec it has (aiortc answers in the
offerer's order), and a peer's offer is answered with the phone's codec when
the offer lists it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from p2pnode.gateways.sip.sdp import SdpDecodeError, parse_sdp

__all__ = ["BridgeCodec", "MediaPath", "choose_media_path", "p2p_codec_order", "peer_codecs"]


class BridgeCodec(enum.Enum):
    """Codecs the bridge knows by RTP name (RFC 3551 static types for G.711/G.722)."""

    PCMU = "PCMU"
    PCMA = "PCMA"
    G722 = "G722"
    OPUS = "opus"

    @property
    def clock_rate(self) -> int:
        # RFC 3551 §4.5.2: G.722's RTP clock is 8000 though it samples at 16 kHz.
        return 48_000 if self is BridgeCodec.OPUS else 8_000

    @property
    def is_g711(self) -> bool:
        return self in (BridgeCodec.PCMU, BridgeCodec.PCMA)

    @property
    def channels(self) -> int:
        """Channels its SDP names: RFC 7587 §7 writes opus as ``opus/48000/2`` always."""
        return 2 if self is BridgeCodec.OPUS else 1

    @property
    def frame_samples(self) -> int:
        """RTP timestamp units per 20 ms frame (the only ptime the phone leg sends)."""
        return self.clock_rate // 50

    @staticmethod
    def from_name(name: str) -> BridgeCodec | None:
        for codec in BridgeCodec:
            if codec.value.lower() == name.lower():
                return codec
        return None


@dataclass(frozen=True, slots=True)
class MediaPath:
    """What the bridge does with audio: untouched payloads or decode/encode."""

    phone_codec: BridgeCodec
    webrtc_codec: BridgeCodec

    @property
    def passthrough(self) -> bool:
        return self.phone_codec is self.webrtc_codec


def choose_media_path(phone: BridgeCodec, webrtc: BridgeCodec) -> MediaPath:
    """Passthrough exactly when both legs negotiated the same codec.

    G.711 and G.722 frames are plain byte strings of a fixed rate (160 bytes
    per 20 ms each); opus packets are self-describing (RFC 6716 TOC byte): the
    P2P leg's decoder takes the phone's packets as they are and vice versa.

    PCMU on one leg and PCMA on the other could be converted sample by sample,
    but that is still a transcode; keeping the rule this simple makes the
    "passthrough" count on the call's events mean "payload bytes unchanged".
    """
    return MediaPath(phone, webrtc)


def p2p_codec_order(
    phone: BridgeCodec | Sequence[BridgeCodec], configured: tuple[str, ...]
) -> tuple[str, ...]:
    """The P2P leg's codecs for one call: the phone's first, where the bridge may use them.

    ``configured`` is the bridge's calls service's ``audio_codecs`` (the
    operator's list of what the P2P leg may carry, best first); ``phone`` is
    the phone leg's codec, or every codec the phone offered in its order. The
    listed ones the phone has move to the front in the phone's order, the
    others keep theirs; a phone codec not listed is not added (that call is
    transcoded unless the peer takes another of the phone's).
    """
    wanted = [phone] if isinstance(phone, BridgeCodec) else list(phone)
    names = [codec.value.lower() for codec in wanted]
    first = sorted(
        (name for name in configured if name.lower() in names),
        key=lambda name: names.index(name.lower()),
    )
    return tuple(first + [name for name in configured if name.lower() not in names])


def peer_codecs(sdp: str | None) -> tuple[BridgeCodec, ...]:
    """The codecs of a P2P peer's offer the bridge knows, in the peer's order (RFC 3264 §6.1).

    Why: a peer calling a hosted identity rings the phone first; the bridge's
    INVITE lists these first so the phone picks the peer's favourite it has,
    and the P2P answer can name the same codec (passthrough). The SDP is the
    peer's (untrusted): bad SDP, no audio or no known codec give ``()``, and
    the phone is offered the bridge's own order.
    """
    if not sdp:
        return ()
    try:
        parsed = parse_sdp(sdp.encode())
    except (SdpDecodeError, UnicodeEncodeError):
        return ()
    audio = next((m for m in parsed.media if m.media == "audio" and m.port), None)
    if audio is None:
        return ()
    out: list[BridgeCodec] = []
    for offered in audio.codecs():
        codec = BridgeCodec.from_name(offered.name)
        if codec is not None and offered.clock_rate == codec.clock_rate and codec not in out:
            out.append(codec)
    return tuple(out)
