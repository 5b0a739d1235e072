"""``[sip]`` bridge keys: when ``p2pnode run`` bridges, and the mistakes ``config check`` reports.

Also the bound on what a phone can make one bridge remember: the digits kept
per call and the calls whose digits are kept (issue 15: ``SipP2pBridge.digits``
grew without bound).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p2pnode.app.config import ConfigError, parse_config
from p2pnode.gateways.sip.bridge import (
    MAX_DIGITS_PER_CALL,
    MAX_KEPT_DIGIT_CALLS,
    BridgedCallService,
    BridgeUserAgent,
    SipP2pBridge,
)
from p2pnode.gateways.sip.bridge_media import BridgeCodec, DtmfDigit, PhoneReceiver, PhoneSender
from p2pnode.gateways.sip.bridge_routing import (
    BridgeCallers,
    ForeignCallGate,
    ForeignCallPolicy,
    takes_caller,
)
from p2pnode.gateways.sip.bridge_tracks import PhoneRtpLeg
from p2pnode.gateways.sip.headers import parse_uri
from p2pnode.sessions.call_config import CallConfig

SIP = {"enabled": True, "domain": "gw.test"}


def bridging(sip: dict[str, Any], presence: bool) -> bool:
    config = parse_config({"sip": {**SIP, **sip}, "presence": {"enabled": presence}})
    return config.sip.bridging(config.presence.enabled)


def test_the_bridge_is_on_with_presence_unless_turned_off() -> None:
    assert bridging({}, presence=True)
    assert not bridging({}, presence=False)  # no signalling: nothing to bridge to
    assert not bridging({"bridge": False}, presence=True)
    assert bridging({"bridge": True}, presence=True)
    assert not parse_config({"sip": {"bridge": True}}).sip.bridging(True)  # [sip] is off


def test_bridge_mistakes_are_reported_with_their_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "sip": {
                    **SIP,
                    "bridge_hosted": ["Not A Login"],
                    "foreign_domains": ["bad domain"],
                    "foreign_per_minute": 0,
                    "bridge_ring_timeout": 1,
                }
            }
        )
    paths = {problem.path for problem in caught.value.problems}
    assert paths == {
        "sip.bridge_hosted.0",
        "sip.foreign_domains.0",
        "sip.foreign_per_minute",
        "sip.bridge_ring_timeout",
    }
    with pytest.raises(ConfigError, match="needs \\[presence\\]"):
        parse_config({"sip": {**SIP, "bridge": True}})
    with pytest.raises(ConfigError, match="bridge_account is the bridge itself"):
        parse_config({"sip": {**SIP, "bridge_hosted": ["p2p"]}})
    with pytest.raises(ConfigError, match="twice"):
        parse_config({"sip": {**SIP, "bridge_hosted": ["alice", "alice"]}})


def test_config_check_names_the_bridge_key(tmp_path: Path) -> None:
    path = tmp_path / "p2pnode.toml"
    path.write_text("[sip]\nenabled = true\nforeign_per_minute = -1\n")
    done = subprocess.run(
        [sys.executable, "-m", "p2pnode", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "sip.foreign_per_minute" in done.stdout + done.stderr


def test_digits_a_phone_keys_stay_bounded() -> None:
    calls = BridgedCallService("hosted", CallConfig(), _never_sent)
    ua = BridgeUserAgent("p2p", "password-unused", "gw.test", ("127.0.0.1", 9))
    bridge = SipP2pBridge(calls, ua, "alice")
    for number in range(MAX_KEPT_DIGIT_CALLS + 10):
        call_id = number.to_bytes(4, "big")
        leg = PhoneRtpLeg(
            PhoneReceiver(audio_type=0, clock_rate=8000, dtmf_type=101),
            PhoneSender(ssrc=1, payload_type=0, first_sequence=0, first_timestamp=0),
            BridgeCodec.PCMU,
        )
        bridge._attach(call_id, number, leg)
        for _ in range(MAX_DIGITS_PER_CALL + 5 if number == 0 else 3):
            bridge._digit(call_id, DtmfDigit("5", 100, 0.0))
    assert len(bridge.digits) == MAX_KEPT_DIGIT_CALLS  # the oldest calls' digits went
    assert (0).to_bytes(4, "big") not in bridge.digits
    assert all(len(kept) == 3 for kept in bridge.digits.values())
    stats = bridge.statistics()
    assert stats.digits_from_phone == MAX_DIGITS_PER_CALL + 5 + 3 * (MAX_KEPT_DIGIT_CALLS + 9)
    assert stats.digits_dropped >= 5  # the first call's digits beyond the bound were counted


async def _never_sent(peer: str, payload: bytes) -> None:
    raise AssertionError("no signal is sent in this test")


def test_foreign_refusals_are_counted_by_reason() -> None:
    off = ForeignCallGate(ForeignCallPolicy(enabled=False), "gw.test")
    assert off.admit("carrier.example", 0.0) == (403, "Forbidden")
    assert off.admit("GW.test", 0.0) is None  # our own domain is never foreign
    assert off.refusals == {"foreign-off": 1}
    gate = ForeignCallGate(
        ForeignCallPolicy(allow_domains=frozenset({"carrier.example"}), per_minute=2), "gw.test"
    )
    answers = [gate.admit(domain, 0.0) for domain in ("other.example", *["carrier.example"] * 3)]
    assert answers == [(403, "Forbidden"), None, None, (503, "Service Unavailable")]
    assert gate.admit("carrier.example", 30.0) is None  # refilled: 2 a minute
    assert gate.refusals == {"foreign-domain": 1, "foreign-rate": 1}
    assert gate.admitted == 3


def test_the_gateway_bridge_takes_foreign_callers_and_local_ones_without_a_bridge() -> None:
    own = frozenset({"alice", "p2p"})

    def takes(uri: str) -> bool:
        return takes_caller(BridgeCallers.OTHERS, parse_uri(uri), "gw.test", "p2p", own)

    assert takes("sip:carrier@other.example")  # another network
    assert takes("sip:carol@gw.test")  # a local account with no bridge of her own
    assert not takes("sip:alice@gw.test")  # alice's own bridge places her calls
    assert not takes("sip:p2p@gw.test")  # the bridge account itself
