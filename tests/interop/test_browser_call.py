"""A real browser calls through our relay: headless Chromium <-> a p2pnode call peer.

Chromium runs in one lab namespace behind a port-restricted NAT, the p2pnode
peer in another behind a symmetric NAT, and our TURN relay on a public lab
host; both sides are restricted to relayed candidates, so the media path is
our relay and nothing else. Chromium's fake microphone plays a 660 Hz WAV;
the peer sends 440 Hz. The test carries the signalling: it decodes the peer's
INVITE, hands the SDP offer to the page, and returns the page's answer as an
ANSWER signal. The peer's recording must hold 660 Hz; the page's WebAudio
analyser must hear 440 Hz.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pnode.sessions.call_signal import (
    CallSignal,
    SignalKind,
    decode_signal,
    encode_signal,
)
from tests.harness.audio import read_wav, spectrum, write_tone_wav
from tests.harness.netns import Lab, NatType, read_line
from tests.harness.tools import require_tool
from tests.lab.conftest import require_lab_tools
from tests.lab.test_calls_lab import start_relay

pytestmark = [pytest.mark.interop, pytest.mark.lab, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

# The browser side: answer an offer through TURN only, analyse what it hears.
ANSWER_JS = """
async ([offer, turn, user, password]) => {
  const pc = new RTCPeerConnection({
    iceServers: [{urls: turn, username: user, credential: password}],
    iceTransportPolicy: 'relay',
  });
  window.pc = pc;
  window.heard = new Promise((resolve) => {
    pc.ontrack = (event) => {
      const stream = event.streams[0] || new MediaStream([event.track]);
      const audio = new Audio(); audio.muted = true; audio.srcObject = stream; audio.play();
      const context = new AudioContext({sampleRate: 48000});
      const analyser = context.createAnalyser();
      analyser.fftSize = 16384;
      context.createMediaStreamSource(stream).connect(analyser);
      const bins = new Float32Array(analyser.frequencyBinCount);
      const peaks = [];
      const timer = setInterval(() => {
        analyser.getFloatFrequencyData(bins);
        let best = 0;
        for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
        if (bins[best] > -70) peaks.push(best * context.sampleRate / analyser.fftSize);
        if (peaks.length >= 20) { clearInterval(timer); resolve(peaks); }
      }, 100);
    };
  });
  const media = await navigator.mediaDevices.getUserMedia({audio: true});
  await pc.setRemoteDescription({type: 'offer', sdp: offer});
  for (const track of media.getTracks()) pc.addTrack(track, media);
  await pc.setLocalDescription(await pc.createAnswer());
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((resolve) => {
      pc.onicegatheringstatechange = () => {
        if (pc.iceGatheringState === 'complete') resolve();
      };
    });
  }
  return pc.localDescription.sdp;
}
"""


@pytest.fixture
def browser_lab() -> Iterator[Lab]:
    require_lab_tools()
    require_tool("chromium", "chromium")
    pytest.importorskip("playwright.sync_api")
    with Lab() as lab:
        yield lab


def read_json(proc: Any, want: str, timeout: float = 30.0) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(read_line(proc, timeout=timeout))
        if want in message:
            return message


def test_headless_chromium_and_a_p2pnode_peer_hear_each_other(
    browser_lab: Lab, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    relay_host = browser_lab.public_host("relay")
    _relay, port = start_relay(relay_host)
    peer_host = browser_lab.private_host("peer", NatType.SYMMETRIC)
    browser_host = browser_lab.private_host("web", NatType.PORT_RESTRICTED)
    turn = f"turn:{relay_host.addresses[0]}:{port}?transport=udp"

    tone = tmp_path / "browser-660.wav"
    write_tone_wav(tone, 660.0, 20.0)
    wrapper = tmp_path / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {browser_host.namespace} {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)

    record = tmp_path / "peer.wav"
    config = {
        "me": "peer", "peer": "browser", "dial": True, "tone": 440, "record": str(record),
        "seconds": 5.0, "limit": 60, "codecs": ["opus"],
        "paths": [{"name": "relay", "relay_only": True,
                   "servers": [[turn, "alice", "wonderland"]]}],
    }  # fmt: skip
    agent = peer_host.popen(
        peer_host.python("-m", "tests.integration.calls.agent", json.dumps(config)),
        stdin=subprocess.PIPE,
    )
    invite = decode_signal(base64.b64decode(read_json(agent, "signal")["signal"]))
    assert invite.kind is SignalKind.INVITE and invite.sdp is not None

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(wrapper),
            args=[*FLAGS, f"--use-file-for-fake-audio-capture={tone}"],
            env={**os.environ},
        )
        try:
            page = browser.new_page()
            # getUserMedia needs a secure context: http://localhost is one; no server needed.
            page.route(
                "http://localhost/**",
                lambda route: route.fulfill(body="<html></html>", content_type="text/html"),
            )
            page.goto("http://localhost/")
            answer_sdp = page.evaluate(ANSWER_JS, [invite.sdp, turn, "bob", "builder"])
            assert " typ relay " in answer_sdp  # the browser offers relayed candidates only
            answer = CallSignal(SignalKind.ANSWER, invite.call_id, 0, answer_sdp)
            assert agent.stdin is not None
            agent.stdin.write(
                json.dumps(
                    {"signal": base64.b64encode(encode_signal(answer)).decode(), "from": "browser"}
                )
                + "\n"
            )
            agent.stdin.flush()
            peaks = page.evaluate("() => window.heard")
            state = page.evaluate("() => window.pc.iceConnectionState")
            # The browser stays in the call until the peer hangs up (5 s of audio).
            done = read_json(agent, "done", timeout=40)
        finally:
            browser.close()
    assert done["done"] == "hung-up", done
    assert done["frames"] > 200, done  # 50 frames/s for the 5 s after the first one
    assert done["failovers"] == 0, done  # the browser's media never stopped
    assert state in ("connected", "completed"), state
    # the browser heard the peer's 440 Hz (FFT bin width 2.9 Hz), most of the time
    near = [peak for peak in peaks if abs(peak - 440.0) < 6.0]
    assert len(near) >= len(peaks) * 0.7, peaks
    samples, rate = read_wav(record)
    found = spectrum(samples[int(0.5 * rate) :], rate)
    assert abs(found.dominant_hz - 660.0) < 5, found
    assert found.dominance > 20, found
