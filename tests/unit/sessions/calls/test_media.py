"""Sources, the recorder's timeline and the FFT helpers, without a network."""

from __future__ import annotations

import fractions
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from p2pnode.sessions.media import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    MediaDeviceError,
    SilenceSource,
    ToneSource,
    WavRecorder,
    WavSource,
    open_device_source,
)
from tests.harness.audio import gaps, longest_gap, read_wav, spectrum, write_tone_wav


def test_tone_is_phase_continuous_across_reads() -> None:
    whole = ToneSource(440.0).read(4800)
    pieces = ToneSource(440.0)
    joined = np.concatenate([pieces.read(960) for _ in range(5)])
    assert np.array_equal(whole, joined)
    found = spectrum(whole.astype(np.float64) / 32768, SAMPLE_RATE)
    assert abs(found.dominant_hz - 440.0) < 1.0
    assert found.dominance > 1000


@pytest.mark.parametrize("frequency", [0.0, -5.0, 24_000.0])
def test_tone_rejects_impossible_frequencies(frequency: float) -> None:
    with pytest.raises(ValueError, match="frequency"):
        ToneSource(frequency)


def test_silence_is_zero() -> None:
    assert not SilenceSource().read(960).any()


def test_wav_source_resamples_8k_stereo_and_loops(tmp_path: Path) -> None:
    path = tmp_path / "in.wav"
    t = np.arange(4000) / 8000  # 0.5 s
    left = (0.5 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(np.stack([left, left], axis=1).tobytes())
    source = WavSource(path, loop=True)
    samples = source.read(SAMPLE_RATE)  # 1 s: the 0.5 s file twice
    assert samples.size == SAMPLE_RATE
    found = spectrum(samples.astype(np.float64) / 32768, SAMPLE_RATE)
    assert abs(found.dominant_hz - 300.0) < 2.0
    assert np.abs(samples[SAMPLE_RATE // 2 + 100 :]).max() > 10000  # looped, not silent
    once = WavSource(path, loop=False)
    once.read(SAMPLE_RATE // 2)
    assert not once.read(960).any()  # after the end: silence


def test_wav_source_refuses_what_it_cannot_play(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(3)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(bytes(60))
    with pytest.raises(ValueError, match="mono or stereo"):
        WavSource(path)


def frame(samples: np.ndarray, rate: int = SAMPLE_RATE) -> av.AudioFrame:
    audio = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    audio.sample_rate = rate
    audio.time_base = fractions.Fraction(1, rate)
    audio.pts = 0
    return audio


def test_recorder_writes_wall_clock_gaps_as_silence(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    recorder = WavRecorder(path)
    tone = ToneSource(660.0)
    now = 100.0
    for _ in range(50):  # 1 s of frames, on time
        recorder.write_frame(frame(tone.read(FRAME_SAMPLES)), now)
        now += 0.02
    now += 1.5  # nothing arrives for 1.5 s (a dead relay)
    for _ in range(50):
        recorder.write_frame(frame(tone.read(FRAME_SAMPLES)), now)
        now += 0.02
    recorder.close()
    samples, rate = read_wav(path)
    gap = longest_gap(samples, rate)
    assert 1.3 < gap < 1.6  # the 1.5 s less the jitter allowance the recorder keeps
    assert recorder.frames == 100


def test_recorder_resamples_g711_rate_frames(tmp_path: Path) -> None:
    path = tmp_path / "rec8k.wav"
    recorder = WavRecorder(path)
    t = np.arange(160 * 100) / 8000
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for index in range(100):
        recorder.write_frame(frame(tone[index * 160 : (index + 1) * 160], 8000), index * 0.02)
    recorder.close()
    samples, rate = read_wav(path)
    assert rate == SAMPLE_RATE
    assert abs(samples.size / rate - 2.0) < 0.05
    assert abs(spectrum(samples, rate).dominant_hz - 440.0) < 2.0


def test_spectrum_sees_a_second_tone_and_gaps_see_silence(tmp_path: Path) -> None:
    rate = 48_000
    t = np.arange(rate) / rate
    mixed = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)
    found = spectrum(mixed, rate)
    assert abs(found.dominant_hz - 440.0) < 1.0
    assert abs(found.runner_up_hz - 660.0) < 2.0
    assert found.dominance < 5  # a second tone is not "nothing else dominant"
    with_gap = np.concatenate([mixed[: rate // 2], np.zeros(rate // 4), mixed[rate // 2 :]])
    [(start, length)] = gaps(with_gap, rate)  # 20 ms windows: +-1 window
    assert abs(start - 0.5) <= 0.02 and abs(length - 0.25) <= 0.02
    path = tmp_path / "tone.wav"
    write_tone_wav(path, 523.0, 0.5)
    samples, file_rate = read_wav(path)
    assert abs(spectrum(samples, file_rate).dominant_hz - 523.0) < 1.0


def test_no_audio_device_gives_a_plain_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent")
    monkeypatch.delenv("PULSE_SERVER", raising=False)
    cards = Path("/proc/asound/cards")
    if cards.exists() and "no soundcards" not in cards.read_text():
        pytest.skip("this machine has a sound card")
    with pytest.raises(MediaDeviceError, match=r"no audio device.*--tone"):
        open_device_source()
