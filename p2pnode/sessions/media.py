"""Media sources and sinks for calls: tone, silence, WAV file, WAV recorder, test pattern, devices.

Why sources are split from tracks: a call may move to a new RTCPeerConnection
mid-call (relay failover), and aiortc stops a track with its connection. So a
source is a plain sample generator (``AudioSource.read``: no clock, no IO) and
each connection gets a fresh paced ``SourceTrack`` over it; the tone's phase
and the file's position carry on across the move.

The recorder keeps a wall-clock timeline: when frames stop arriving (a dead
relay) and come back, it writes the missing time as silence, so a gap in the
call is a gap in the file and can be measured from the recording.

Audio inside p2pnode is 48 kHz mono signed 16-bit, 20 ms frames (960 samples).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import os
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "FRAME_SAMPLES",
    "MAX_WAV_SECONDS",
    "SAMPLE_RATE",
    "AudioSource",
    "CallAudio",
    "MediaDeviceError",
    "SilenceSource",
    "SourceTrack",
    "TestPatternTrack",
    "ToneSource",
    "VideoProbe",
    "WavRecorder",
    "WavSource",
    "alsa_environment",
    "open_device_source",
]

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms, aiortc's audio ptime
MAX_WAV_SECONDS = 600  # a source file is read whole: bound what it can make us hold
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_GAP_FILL_AFTER = 0.25  # seconds the recording may lag the wall clock before padding
_GAP_FILL_KEEP = 0.08  # lag left after padding (the receiver's jitter buffer)

Samples = npt.NDArray[np.int16]


class AudioSource(Protocol):
    """A generator of 48 kHz mono s16 samples; ``read`` never blocks."""

    def read(self, count: int) -> Samples: ...


class CallAudio(Protocol):
    """Who carries a call's audio instead of the service's source track and recorder.

    Why: a gateway bridging the call to something else (a SIP phone's RTP leg)
    has its audio already encoded and must not pay for aiortc's decode and
    re-encode per frame. With ``CallMedia(audio=...)`` the calls service still
    owns signalling, connections and failover, and asks this object for:

    * ``track()``: the track to send on each new connection (a fresh one per
      connection: aiortc stops a track with its connection);
    * ``negotiated(codec)``: that connection's audio codec once the answer is
      known (``"audio/PCMU"``...), so G.711 can pass through untouched;
    * ``receive(track, transceiver, heard)``: the connection's incoming audio,
      for as long as it lasts. ``transceiver`` is the connection's audio
      ``RTCRtpTransceiver``, for a binding that takes RTP payloads at its
      receiver (before aiortc's jitter buffer and decoder) or sends through
      its sender's transport. ``heard()`` must be called for every frame or packet of audio:
      it keeps the call's frame counters, first-frame event and silence
      failover true, and returns False while this connection is not the call's
      current one (audio from a superseded connection is dropped).
    """

    def track(self) -> MediaStreamTrack: ...

    def negotiated(self, codec: str | None) -> None: ...

    async def receive(
        self, track: MediaStreamTrack, transceiver: object, heard: Callable[[], bool]
    ) -> None: ...


class SilenceSource:
    def read(self, count: int) -> Samples:
        return np.zeros(count, dtype=np.int16)


class ToneSource:
    """A sine at ``frequency`` Hz, phase continuous across reads (and connections)."""

    def __init__(self, frequency: float, amplitude: float = 0.3) -> None:
        if not 0 < frequency < SAMPLE_RATE / 2:
            raise ValueError("tone frequency must be between 0 and 24000 Hz")
        if not 0 < amplitude <= 1:
            raise ValueError("amplitude must be in (0, 1]")
        self.frequency = frequency
        self.amplitude = amplitude
        self._position = 0

    def read(self, count: int) -> Samples:
        index = np.arange(self._position, self._position + count, dtype=np.float64)
        self._position += count
        wave_ = np.sin(2 * math.pi * self.frequency * index / SAMPLE_RATE)
        return (wave_ * self.amplitude * 32767).astype(np.int16)


class WavSource:
    """A PCM WAV file (8/16-bit, any rate, mono or stereo), resampled to 48 kHz mono.

    At the end it loops when ``loop`` is set, else plays silence.
    """

    def __init__(self, path: Path, *, loop: bool = True) -> None:
        with wave.open(str(path), "rb") as reader:
            rate = reader.getframerate()
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            frames = reader.getnframes()
            if width not in (1, 2) or channels not in (1, 2) or not 4000 <= rate <= 192_000:
                raise ValueError("WAV must be 8- or 16-bit PCM, mono or stereo, 4-192 kHz")
            if frames > MAX_WAV_SECONDS * rate:
                raise ValueError(f"WAV longer than {MAX_WAV_SECONDS} s")
            raw = reader.readframes(frames)
        if width == 1:
            data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128) * 256
        else:
            data = np.frombuffer(raw, dtype="<i2").astype(np.float64)
        data = data.reshape(-1, channels).mean(axis=1)
        if rate != SAMPLE_RATE and data.size:
            target = np.arange(0, data.size * SAMPLE_RATE // rate) * rate / SAMPLE_RATE
            data = np.interp(target, np.arange(data.size), data)
        self._samples = np.clip(data, -32768, 32767).astype(np.int16)
        self._loop = loop
        self._position = 0

    def read(self, count: int) -> Samples:
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        total = self._samples.size
        while filled < count and total:
            if self._position >= total:
                if not self._loop:
                    break
                self._position = 0
            take = min(count - filled, total - self._position)
            out[filled : filled + take] = self._samples[self._position : self._position + take]
            self._position += take
            filled += take
        return out


class SourceTrack(MediaStreamTrack):
    """A live audio track reading 20 ms frames from ``source`` in real time."""

    kind = "audio"

    def __init__(self, source: AudioSource) -> None:
        super().__init__()
        self._source = source
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / SAMPLE_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
        samples = self._source.read(FRAME_SAMPLES)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        return frame


class WavRecorder:
    """Writes received audio to a 48 kHz mono WAV on a wall-clock timeline.

    ``consume(track)`` reads one remote track until it ends; after a failover the
    service calls it again with the new connection's track and the file goes on.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: wave.Wave_write | None = wave.open(str(path), "wb")  # noqa: SIM115
        self._writer.setnchannels(1)
        self._writer.setsampwidth(2)
        self._writer.setframerate(SAMPLE_RATE)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._started: float | None = None
        self._written = 0
        self.frames = 0
        self.last_frame_at: float | None = None  # time.monotonic() of the last frame

    async def consume(self, track: MediaStreamTrack) -> None:
        while self._writer is not None:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.AudioFrame):
                self.write_frame(frame, time.monotonic())

    def write_frame(self, frame: av.AudioFrame, now: float) -> None:
        if self._writer is None:
            return
        if self._started is None:
            self._started = now
        self.frames += 1
        self.last_frame_at = now
        lag = (now - self._started) - self._written / SAMPLE_RATE
        if lag > _GAP_FILL_AFTER:
            pad = int((lag - _GAP_FILL_KEEP) * SAMPLE_RATE)
            self._writer.writeframes(bytes(2 * pad))
            self._written += pad
        for out in self._resampler.resample(frame):
            data = out.to_ndarray().astype("<i2").tobytes()
            self._writer.writeframes(data)
            self._written += len(data) // 2

    @property
    def seconds(self) -> float:
        return self._written / SAMPLE_RATE

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TestPatternTrack(MediaStreamTrack):
    """VP8-ready video: colour bars that scroll one column per frame, 320x240 at 15 fps."""

    __test__ = False  # not a pytest class, despite the name
    kind = "video"
    WIDTH = 320
    HEIGHT = 240
    FPS = 15
    BARS = ((235, 235, 16), (16, 235, 235), (16, 235, 16), (235, 16, 235), (235, 16, 16))

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._index = 0
        bar = self.WIDTH // len(self.BARS)
        row = np.zeros((self.WIDTH, 3), dtype=np.uint8)
        for number, colour in enumerate(self.BARS):
            row[number * bar : (number + 1) * bar] = colour
        self._image = np.broadcast_to(row, (self.HEIGHT, self.WIDTH, 3)).copy()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._index += 1
            wait = self._start + self._index / self.FPS - now
            if wait > 0:
                await asyncio.sleep(wait)
        image = np.roll(self._image, self._index, axis=1)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self._index * 90_000 // self.FPS
        frame.time_base = fractions.Fraction(1, 90_000)
        return frame


@dataclass(frozen=True, slots=True)
class VideoSnapshot:
    frames: int
    width: int
    height: int
    mean_rgb: tuple[float, float, float]


class VideoProbe:
    """A video sink that counts frames and keeps the size and mean colour of the last one."""

    def __init__(self) -> None:
        self.frames = 0
        self._last: VideoSnapshot | None = None

    async def consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.VideoFrame):
                continue
            self.frames += 1
            image = frame.to_ndarray(format="rgb24")
            mean = image.reshape(-1, 3).mean(axis=0)
            self._last = VideoSnapshot(
                self.frames,
                frame.width,
                frame.height,
                (float(mean[0]), float(mean[1]), float(mean[2])),
            )

    def snapshot(self) -> VideoSnapshot | None:
        return self._last


class MediaDeviceError(RuntimeError):
    """No usable audio device: the message says what was tried and what to do."""


def alsa_environment() -> dict[str, str]:
    """The variables av's bundled libasound needs to find Debian's config and plugins."""
    env: dict[str, str] = {}
    if Path("/usr/share/alsa/alsa.conf").exists():
        env["ALSA_CONFIG_PATH"] = "/usr/share/alsa/alsa.conf"
    if Path("/usr/lib/x86_64-linux-gnu/alsa-lib").is_dir():
        env["ALSA_PLUGIN_DIR"] = "/usr/lib/x86_64-linux-gnu/alsa-lib"
    return env


def open_device_source(device: str = "default") -> MediaStreamTrack:
    """The microphone as an aiortc track, through ALSA (PulseAudio via its ALSA plugin).

    Raises ``MediaDeviceError`` with a plain explanation when there is none.
    """
    from aiortc.contrib.media import MediaPlayer  # noqa: PLC0415 (pulls in threads; rare)

    for key, value in alsa_environment().items():
        os.environ.setdefault(key, value)
    cards = Path("/proc/asound/cards")
    has_card = cards.exists() and "no soundcards" not in cards.read_text(errors="replace")
    has_pulse = (
        bool(os.environ.get("PULSE_SERVER"))
        or Path(os.environ.get("XDG_RUNTIME_DIR", "/run/user/0"), "pulse", "native").exists()
    )
    if not has_card and not has_pulse:
        raise MediaDeviceError(
            "no audio device: no ALSA sound card and no PulseAudio server; "
            "use --tone HZ or --play FILE instead"
        )
    try:
        player = MediaPlayer(device, format="alsa", options={"channels": "1"})
    except (av.FFmpegError, OSError) as error:
        raise MediaDeviceError(
            f"could not open ALSA device {device!s}: {error.__class__.__name__}; "
            "use --tone HZ or --play FILE instead"
        ) from error
    if player.audio is None:
        raise MediaDeviceError(f"ALSA device {device!s} gave no audio stream")
    track: MediaStreamTrack = player.audio
    return track
