"""FFT helpers for call tests: what tone a recording holds, and where it went silent.

A call test never trusts that "some audio arrived": it reads the recording,
finds the dominant frequency, checks no other frequency comes close (the
caller's own tone leaking back, or codec garbage), and measures gaps.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "Spectrum",
    "gaps",
    "longest_gap",
    "read_wav",
    "spectrum",
    "write_tone_wav",
]

Floats = npt.NDArray[np.float64]


def read_wav(path: Path) -> tuple[Floats, int]:
    """Mono float samples in [-1, 1] and the sample rate (stereo is averaged)."""
    with wave.open(str(path), "rb") as reader:
        rate = reader.getframerate()
        channels = reader.getnchannels()
        if reader.getsampwidth() != 2:
            raise ValueError("16-bit WAV expected")
        raw = reader.readframes(reader.getnframes())
    data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    return data.reshape(-1, channels).mean(axis=1), rate


def write_tone_wav(path: Path, frequency: float, seconds: float, rate: int = 48_000) -> None:
    """A 16-bit mono sine, e.g. for Chromium's fake microphone."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())


@dataclass(frozen=True)
class Spectrum:
    dominant_hz: float
    dominant_power: float
    runner_up_hz: float  # the strongest peak outside +-band of the dominant one
    runner_up_power: float
    rms: float

    @property
    def dominance(self) -> float:
        """How many times stronger the dominant peak is than anything else."""
        return self.dominant_power / max(self.runner_up_power, 1e-12)


def spectrum(
    samples: Floats, rate: int, *, band_hz: float = 40.0, floor_hz: float = 60.0
) -> Spectrum:
    """Dominant frequency (parabolic interpolation) and the strongest other peak.

    Bins below ``floor_hz`` (DC, rumble) are ignored; ``band_hz`` around the
    dominant peak counts as the same tone (window leakage).
    """
    if samples.size < rate // 10:
        raise ValueError("need at least 100 ms of audio")
    windowed = samples * np.hanning(samples.size)
    power = np.abs(np.fft.rfft(windowed)) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1.0 / rate)
    power[freqs < floor_hz] = 0.0
    peak = int(np.argmax(power))
    hz = float(freqs[peak])
    if 0 < peak < power.size - 1:
        a, b, c = np.log(power[peak - 1 : peak + 2] + 1e-30)
        denominator = a - 2 * b + c
        if denominator != 0:
            hz += float(0.5 * (a - c) / denominator) * float(freqs[1] - freqs[0])
    others = power.copy()
    others[np.abs(freqs - hz) <= band_hz] = 0.0
    second = int(np.argmax(others))
    return Spectrum(
        dominant_hz=hz,
        dominant_power=float(power[peak]),
        runner_up_hz=float(freqs[second]),
        runner_up_power=float(others[second]),
        rms=float(np.sqrt(np.mean(samples**2))),
    )


def gaps(
    samples: Floats, rate: int, *, window_s: float = 0.02, threshold: float = 0.01
) -> list[tuple[float, float]]:
    """(start_s, length_s) of every run of windows whose RMS is below ``threshold``."""
    size = max(1, int(window_s * rate))
    count = samples.size // size
    if count == 0:
        return []
    rms = np.sqrt(np.mean(samples[: count * size].reshape(count, size) ** 2, axis=1))
    quiet = rms < threshold
    found: list[tuple[float, float]] = []
    start: int | None = None
    for index, silent in enumerate(quiet):
        if silent and start is None:
            start = index
        elif not silent and start is not None:
            found.append((start * window_s, (index - start) * window_s))
            start = None
    if start is not None:
        found.append((start * window_s, (count - start) * window_s))
    return found


def longest_gap(
    samples: Floats, rate: int, *, skip_start_s: float = 0.0, skip_end_s: float = 0.0
) -> float:
    """The longest silence between ``skip_start_s`` and the end minus ``skip_end_s``."""
    begin = int(skip_start_s * rate)
    end = samples.size - int(skip_end_s * rate)
    inner = gaps(samples[begin:end], rate)
    return max((length for _, length in inner), default=0.0)
