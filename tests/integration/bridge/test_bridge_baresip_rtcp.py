"""baresip WITHOUT rtcp-mux dials a peer through the bridge: RTCP on its own ports both ways.

Most desk phones offer no ``a=rtcp-mux``; baresip's default (``rtcp_mux no``)
is such a phone: it sends RTCP to our ``a=rtcp`` port (RFC 3605) or RTP + 1.
One gateway, one bridge, loopback (baresip_rig.py, as test_bridge_baresip_codecs.py), two
calls, each hung up by the peer once the phone leg's RTCP measured a round
trip (bounded at 20 s; baresip reports every ~5 s, ours go first 1.25-3.75 s
after our first audio):

* baresip (PCMU, 440 Hz) dials ``bob``; the peer answers (550 Hz). Our
  answer names our RTCP port in ``a=rtcp``.
* the peer (660 Hz) dials ``alice``: our offer carries ``a=rtcp-mux`` and
  ``a=rtcp`` (RFC 5761 §5.1.3), baresip answers without mux, so RTCP falls
  back to the separate ports.

Checked while a call is up: the leg's RTCP socket is not its RTP socket, it
read the phone's reports (none from a wrong source) and sent ours; the
gateway's relay forwarded RTCP both ways on its RTCP ports; for the first
call the API answer and the Prometheus families built from the live snapshot
show the call on the separate path with its round trip. After: tones both
ways by FFT and the ended summaries' RTCP figures.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from p2pnode.app.api_sip_bridge import SipBridgeAnswer, bridge_answer
from p2pnode.app.sip_bridge_stats import (
    LiveCall,
    RtcpPath,
    SipBridgeStatistics,
    Totals,
    bridge_metrics,
    live_calls,
)
from p2pnode.gateways.sip.bridge import BridgedCallSummary, BridgeUserAgent
from p2pnode.gateways.sip.bridge_tracks import PhoneRtpLeg
from p2pnode.sessions.calls import CallConfig, CallMedia
from p2pnode.sessions.media import ToneSource
from tests.harness.baresip import finished_recording
from tests.harness.tools import require_tool
from tests.integration.bridge.baresip_rig import (
    DOMAIN,
    bridge_rig,
    ended,
    next_event,
    phone_config,
    spawn,
    stop,
)
from tests.integration.bridge.test_bridge_baresip import assert_tone
from tests.integration.bridge.test_bridge_call_loopback import ALICE_ID, loopback_ice

pytestmark = [pytest.mark.interop, pytest.mark.slow]
ROUND_TRIP_WAIT = 20.0


@dataclass(frozen=True)
class LegRtcp:
    """The live phone leg's RTCP socket, taken before the hang-up."""

    rtp_port: int
    rtcp_port: int
    received: int
    sent: int
    wrong_source: int


@dataclass(frozen=True)
class Heard:
    """One call: both recordings, the ended summary, the leg's RTCP socket while up."""

    phone_wav: Path
    peer_wav: Path
    summary: BridgedCallSummary
    leg: LegRtcp
    relay_rtcp_forwarded: int  # by the gateway's relay since this call began


@dataclass(frozen=True)
class Outcome:
    from_phone: Heard
    to_phone: Heard
    live: tuple[LiveCall, ...]  # during the first call
    answer: SipBridgeAnswer
    metrics: str


def _snapshot(live: tuple[LiveCall, ...]) -> SipBridgeStatistics:
    """The service's snapshot shape around the live calls (its other counters zero)."""
    sent, received = Totals().rtcp_totals(live)
    return SipBridgeStatistics(
        account="bridge", active_calls=len(live), calls=(), refusals=(),
        packets_from_phone=0, packets_to_phone=0, lost=0, passthrough_frames=0,
        transcoded_frames=0, digits_from_phone=0, digits_to_phone=0, digits_dropped=0,
        bridges=(), recent=(), texts=(("to-chat", 2),), texts_held=1, live=live,
        rtcp_sent=sent, rtcp_received=received,
    )  # fmt: skip


class _Families(Collector):
    def __init__(self, stats: SipBridgeStatistics) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from bridge_metrics(self._stats)


def _scrape(stats: SipBridgeStatistics) -> str:
    registry = CollectorRegistry()
    registry.register(_Families(stats))
    return generate_latest(registry).decode()


def _taken(leg: PhoneRtpLeg) -> LegRtcp:
    port = leg.rtcp_port
    assert port is not None  # no rtcp-mux: RTCP has its own socket
    return LegRtcp(
        leg.local_address[1], port.local_port, port.received, port.sent, port.wrong_source
    )


async def _measured(bridge_ua: BridgeUserAgent) -> PhoneRtpLeg:
    """The live leg once its RTCP has a round trip and a phone report (bounded)."""
    async with asyncio.timeout(ROUND_TRIP_WAIT):
        while True:
            for leg in bridge_ua.legs.values():
                if leg.is_closed:
                    continue  # an ended call's leg, not yet forgotten by the UA
                stats = None if leg.rtcp is None else leg.rtcp.statistics()
                if stats is not None and stats.round_trip_ms is not None:
                    return leg
            await asyncio.sleep(0.2)


async def scenario(baresip: str, tmp: Path) -> Outcome:
    config = CallConfig(audio_codecs=("PCMU",))
    answering = CallConfig(audio_codecs=("PCMU",), auto_answer=True)

    def answer_media() -> CallMedia:
        return CallMedia(ToneSource(550.0), tmp / "peer.wav")

    phone: asyncio.subprocess.Process | None = None
    async with bridge_rig(tmp, config, answering, answer_media) as rig:
        gateway, bridge_ua, peer, bridge = rig.gateway, rig.bridge_ua, rig.peer, rig.bridge
        records = phone_config(tmp / "phone", rig.alice_password, rig.address, "PCMU", mux=False)
        try:
            # 1. baresip dials bob (the peer): we answer its no-mux offer.
            dial = ("-e", f"/dial sip:bob@{DOMAIN}")
            phone = await spawn(baresip, "-f", str(tmp / "phone"), "-t", "60", *dial)
            answered = await next_event(bridge, "peer-answered")
            leg = await _measured(bridge_ua)
            first_leg = _taken(leg)
            first_forwarded = gateway.relay.statistics().rtcp_forwarded
            live = live_calls("alice", bridge_ua)
            stats = _snapshot(live)
            answer, metrics = bridge_answer(stats), _scrape(stats)
            await peer.hangup(answered.call_id)
            first = await ended(bridge)
            await asyncio.sleep(0.5)  # baresip closes its recording after the BYE

            # 2. The peer dials alice: our offer (mux + a=rtcp), baresip answers no mux.
            before = gateway.relay.statistics().rtcp_forwarded
            media = CallMedia(ToneSource(660.0), tmp / "peer-to-phone.wav")
            call_id = await peer.dial(ALICE_ID, media)
            leg = await _measured(bridge_ua)
            second_leg = _taken(leg)
            second_forwarded = gateway.relay.statistics().rtcp_forwarded - before
            await peer.hangup(call_id)
            second = await ended(bridge)
            await asyncio.sleep(0.5)
            await stop(phone)
        finally:
            if phone is not None:
                await stop(phone)
    newest = finished_recording(records)
    older = finished_recording(records, after={newest})
    return Outcome(
        Heard(older, tmp / "peer.wav", first, first_leg, first_forwarded),
        Heard(newest, tmp / "peer-to-phone.wav", second, second_leg, second_forwarded),
        live, answer, metrics,
    )  # fmt: skip


@pytest.fixture(scope="module")
def outcome() -> Iterator[Outcome]:
    baresip = require_tool("baresip")
    with tempfile.TemporaryDirectory() as tmp, loopback_ice():
        yield asyncio.run(scenario(baresip, Path(tmp)))


def test_both_hear_each_other_both_calls(outcome: Outcome) -> None:
    assert_tone(outcome.from_phone.peer_wav, 440.0)
    assert_tone(outcome.from_phone.phone_wav, 550.0)
    assert_tone(outcome.to_phone.peer_wav, 440.0)
    assert_tone(outcome.to_phone.phone_wav, 660.0)


@pytest.mark.parametrize("which", ["from_phone", "to_phone"])
def test_rtcp_crosses_on_its_own_ports_both_ways(outcome: Outcome, which: str) -> None:
    heard: Heard = getattr(outcome, which)
    leg = heard.leg
    assert leg.rtcp_port != leg.rtp_port
    assert leg.received >= 1  # baresip's report reached our RTCP socket through the relay
    assert leg.sent >= 1
    assert leg.wrong_source == 0
    # The relay forwarded the phone's reports and at least one of ours the other way.
    assert heard.relay_rtcp_forwarded > leg.received
    summary = heard.summary
    assert summary.phone_codec == "PCMU"
    assert summary.rtcp_sent >= 1 and summary.rtcp_received >= 1
    # A round trip needs baresip's echo (LSR) of our SR: ours reached it.
    assert summary.round_trip_ms is not None and 0 <= summary.round_trip_ms < 1000
    assert summary.phone_reported_lost is not None and abs(summary.phone_reported_lost) < 20
    assert summary.phone_reported_jitter_ms is not None


def test_the_api_answer_shows_the_live_call_s_rtcp(outcome: Outcome) -> None:
    (call,) = outcome.answer.active
    assert (call.bridge, call.phone_codec, call.rtcp) == ("alice", "PCMU", "separate")
    assert call.round_trip_ms is not None and 0 <= call.round_trip_ms < 1000
    assert call.rtcp_received >= 1 and call.rtcp_sent >= 1
    assert call.packets_from_phone > 0 and call.packets_to_phone > 0
    assert outcome.answer.rtcp_received == call.rtcp_received
    assert outcome.answer.texts == {"to-chat": 2} and outcome.answer.texts_held == 1
    assert outcome.live[0].rtcp_path is RtcpPath.SEPARATE


def _sample(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[-1])


def test_metrics_count_the_reports_and_place_the_round_trip(outcome: Outcome) -> None:
    text = outcome.metrics
    call = outcome.answer.active[0]
    assert _sample(text, 'p2pnode_sip_bridge_rtcp_calls{path="separate"}') == 1
    assert _sample(text, 'p2pnode_sip_bridge_rtcp_calls{path="mux"}') == 0
    assert _sample(text, 'p2pnode_sip_bridge_rtcp_reports_total{what="received"}') == (
        call.rtcp_received
    )
    assert _sample(text, "p2pnode_sip_bridge_round_trip_seconds_gcount") == 1
    assert call.round_trip_ms is not None
    seconds = _sample(text, "p2pnode_sip_bridge_round_trip_seconds_gsum")
    assert seconds == pytest.approx(call.round_trip_ms / 1000, abs=1e-3)
    assert _sample(text, 'p2pnode_sip_bridge_round_trip_seconds_bucket{le="+Inf"}') == 1
