"""Phone -> peer passthrough audio straight to the WebRTC connection's transport.

aiortc sends a track's frames from one task per sender that awaits the
track, packs an ``av.Packet``, builds an RTP packet object and awaits the send
chain: per 20 ms frame, a task wake-up and several objects. For passthrough
(G.711, G.722 or opus on both legs) the bridge already holds the payload, so
:class:`DirectRtp` builds the RTP packet itself on the shared clock's tick and
hands it to the connection's DTLS transport (which applies SRTP and sends).

What it relies on in aiortc 1.16 (pinned): ``RTCRtpSender._ssrc``, the DTLS
transport's ``_send_rtp``, and the sender's name-mangled started flag, MID,
header-extension map and report counters (so aiortc's RTCP sender reports
stay true). ``tests/integration/bridge/test_bridge_fastpath_loopback.py``
checks the tones, the counts and the MID the peer receives.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from aiortc import clock
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap

from p2pnode.gateways.sip.bridge_clock import TICK

__all__ = ["DirectRtp", "FrameSource", "step"]

_RTP_HEADER = struct.Struct("!BBHII")  # RFC 3550 §5.1 fixed header, no CSRC


class FrameSource(Protocol):
    """The phone's frames, paced: :class:`~.bridge_tracks.PhoneAudioTrack`."""

    def due(self, now: float, slack: float = TICK / 2) -> bool: ...

    def take(self, now: float) -> tuple[bytes, int]: ...


def step(coroutine: Coroutine[Any, Any, None], on_error: Callable[[BaseException], None]) -> None:
    """Run ``coroutine`` in place as far as it goes without waiting (3.12's eager tasks).

    aiortc's send path (DTLS transport -> ICE transport -> aioice pair) is a
    chain of coroutines that finish without suspending; a task per packet would
    cost more than the send. Should one wait after all, it goes on when the
    awaited future is done, as a task's step would.
    """
    try:
        waited = coroutine.send(None)
    except StopIteration:
        return
    except Exception as error:
        on_error(error)
        return
    if isinstance(waited, asyncio.Future):
        waited._asyncio_future_blocking = False  # what a task's step does before waiting
        waited.add_done_callback(lambda _done: step(coroutine, on_error))
    else:  # a bare yield (asyncio.sleep(0)): try again on the next loop pass
        asyncio.get_running_loop().call_soon(step, coroutine, on_error)


class DirectRtp:
    """Phone -> peer passthrough audio without aiortc's per-frame sender task.

    Each media-clock tick takes the frames that are due from the connection's
    :class:`FrameSource` (muted for aiortc) and hands them, as RTP with the
    aiortc sender's SSRC and our own sequence and timestamp, to the
    connection's DTLS transport, which protects (SRTP) and sends them. The
    aiortc sender's report counters are kept, so its RTCP sender reports stay
    true. Each packet carries the connection's MID header extension (RFC 8843
    §15, what aiortc's sender adds; constant, so built once), not aiortc's
    per-packet abs-send-time and audio level.
    """

    def __init__(
        self, track: FrameSource, sender: Any, payload_type: int, pts_divisor: int = 1
    ) -> None:
        """``pts_divisor``: the track's sample units per RTP clock unit (G.722: 16 kHz / 8000)."""
        self._track = track
        self._divisor = pts_divisor
        self._sender = sender
        self._ssrc = int(sender._ssrc) & 0xFFFFFFFF  # aiortc's own attribute, set at creation
        self._payload_type = payload_type
        self._sequence = secrets.randbits(16)
        self._origin = secrets.randbits(32)
        self._first = True
        self.sent = 0
        self.errors = 0
        self.retired = False
        self._packets = 0
        self._octets = 0
        self._first_byte = 0x80  # RFC 3550 §5.1: version 2
        self._extension: bytes | None = None  # known once aiortc started the sender

    @property
    def sender(self) -> Any:
        """The aiortc ``RTCRtpSender`` whose SSRC and transport it sends with."""
        return self._sender

    def _started(self) -> bool:
        """Whether aiortc started the sender (after DTLS): its MID and extension ids are set."""
        sender = self._sender
        if not getattr(sender, "_RTCRtpSender__started", False):
            return False
        mapping = getattr(sender, "_RTCRtpSender__rtp_header_extensions_map", None)
        mid = getattr(sender, "_RTCRtpSender__mid", None)
        self._extension = b""
        if isinstance(mapping, HeaderExtensionsMap) and isinstance(mid, str) and mid:
            profile, value = mapping.set(HeaderExtensions(mid=mid))
            if value:  # the MID extension was negotiated
                self._extension = struct.pack("!HH", profile, len(value) // 4) + value
                self._first_byte |= 0x10  # X bit
        return True

    def retire(self) -> None:
        """A newer connection of the call took over (failover): send nothing more."""
        self.retired = True

    def tick(self, now: float) -> None:
        if self.retired:
            return
        transport = self._sender.transport
        if transport.state != "connected":
            return  # before DTLS (the jitter buffer keeps the phone's audio) or after close
        if self._extension is None and not self._started():
            return
        extension = self._extension or b""
        track = self._track
        while track.due(now):
            payload, pts = track.take(now)
            timestamp = (self._origin + pts // self._divisor) & 0xFFFFFFFF
            marker = 0x80 if self._first else 0
            header = _RTP_HEADER.pack(
                self._first_byte, marker | self._payload_type, self._sequence, timestamp, self._ssrc
            )
            step(transport._send_rtp(header + extension + payload), self._failed)
            self._first = False
            self._sequence = (self._sequence + 1) & 0xFFFF
            self.sent += 1
            self._packets += 1
            self._octets += len(payload)
            self._report(timestamp)

    def _report(self, timestamp: int) -> None:
        # RFC 3550 §6.4.1: the sender report's NTP/RTP pair and counts, in the
        # aiortc sender's own fields (name-mangled) that its RTCP loop reads.
        sender = self._sender
        sender._RTCRtpSender__ntp_timestamp = clock.current_ntp_time()
        sender._RTCRtpSender__rtp_timestamp = timestamp
        sender._RTCRtpSender__packet_count = self._packets
        sender._RTCRtpSender__octet_count = self._octets

    def _failed(self, error: BaseException) -> None:
        self.errors += 1  # the connection is closing: its frames are dropped
