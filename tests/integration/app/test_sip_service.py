"""`p2pnode run` with ``[sip] enabled``: the gateway hosted by the node, on loopback.

Accounts are made with ``p2pnode sip account add`` (the home's accounts file),
two of our own user agents register with the printed settings, ``p2pnode sip
status`` asks the running node (control API ``/api/sip``) and lists both
registrations, and one calls the other: each side's recording holds the
other's tone (FFT). Config mistakes in ``[sip]`` are reported with their paths.
One node process for the module (~5 s).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from p2pnode.app.config import ConfigError, parse_config
from p2pnode.app.sip_config import to_gateway
from p2pnode.app.sip_service import SipService
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError

pytestmark = pytest.mark.slow

WAIT = 60.0  # bound on any one wait, not a speed assertion
DOMAIN = "sip.p2pnode.test"
CONFIG = f"""
[node]
listen = "127.0.0.1:0"

[supernode]
relay_search = false

[control]
port = 0

[sip]
enabled = true
domain = "{DOMAIN}"
listen = "127.0.0.1:0"
digest = ["MD5"]
"""


def p2pnode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


@dataclass(frozen=True)
class Gateway:
    home: Path
    process: subprocess.Popen[str]
    passwords: dict[str, str]
    peer_ids: dict[str, str]  # the P2P identities the gateway hosts for the accounts

    def cli_status(self) -> dict[str, object]:
        """``p2pnode sip status`` through the running node (as an operator asks)."""
        done = p2pnode("sip", "status", "--home", str(self.home), "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert isinstance(answer, dict)
        return answer

    def status(self) -> dict[str, object]:
        """The same answer straight from the control API (no CLI start-up per poll)."""
        url = json.loads((self.home / "control.json").read_text())["url"]
        request = urllib.request.Request(url + "/api/sip")  # noqa: S310 (loopback)
        token = (self.home / "control.token").read_text().strip()
        request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
            answer = json.loads(response.read())
        assert isinstance(answer, dict)
        return answer

    @property
    def server(self) -> tuple[str, int]:
        host, _, port = str(self.status()["address"]).rpartition(":")
        return host, int(port)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("sipnode")
    assert p2pnode("init", "--home", str(home)).returncode == 0
    passwords, peer_ids = {}, {}
    for login in ("alice", "bob"):
        added = p2pnode(
            "sip", "account", "add", login, "--home", str(home), "--domain", DOMAIN, "--json"
        )
        assert added.returncode == 0, added.stderr
        settings = json.loads(added.stdout)
        assert settings["server"] == DOMAIN and settings["login"] == login
        passwords[login] = settings["password"]
        peer_ids[login] = settings["peer_id"]
    config = home / "node.toml"
    config.write_text(CONFIG)
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "run", "--home", str(home), "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    running = Gateway(home, process, passwords, peer_ids)
    try:
        deadline = time.monotonic() + WAIT
        while not _up(running):  # the node is starting its services
            assert process.poll() is None, "the node ended"
            assert time.monotonic() < deadline, "the gateway never came up"
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=WAIT)


def _up(gateway: Gateway) -> bool:
    try:
        return bool(gateway.status()["address"])
    except (OSError, ValueError, KeyError):  # no control.json yet, or 503 while starting
        return False


def dominant_hz(samples: np.ndarray) -> float:
    assert samples.size > 1600, "too little audio recorded"
    audio = samples[800:].astype(np.float64)
    power = np.abs(np.fft.rfft(audio * np.hanning(audio.size))) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / 8000)
    power[freqs < 60] = 0
    return float(freqs[int(np.argmax(power))])


def test_phones_register_show_in_status_and_call_with_audio(gateway: Gateway) -> None:
    server = gateway.server
    assert server[0] == "127.0.0.1"
    assert gateway.status()["registrations"] == []

    async def scenario() -> tuple[dict[str, object], float, float]:
        phones = {
            login: SipUserAgent(login, gateway.passwords[login], DOMAIN, server, host="127.0.0.1")
            for login in ("alice", "bob")
        }
        try:
            for phone in phones.values():
                await phone.start()
                await phone.register()
            status = await asyncio.to_thread(gateway.cli_status)
            call = await asyncio.wait_for(phones["bob"].call("alice"), WAIT)
            answered = await asyncio.wait_for(phones["alice"].incoming.get(), WAIT)
            await asyncio.gather(call.play_tone(440, 1.5), answered.play_tone(660, 1.5))
            await call.hangup()
            return status, dominant_hz(call.recording()), dominant_hz(answered.recording())
        finally:
            for phone in phones.values():
                await phone.close()

    status, bob_heard, alice_heard = asyncio.run(scenario())
    registrations = status["registrations"]
    assert isinstance(registrations, list)
    assert sorted(r["login"] for r in registrations) == ["alice", "bob"]
    assert all(r["source"].startswith("127.0.0.1:") for r in registrations)
    assert status["registered_accounts"] == 2 and status["accounts"] == 2
    assert abs(bob_heard - 660) < 15, bob_heard
    assert abs(alice_heard - 440) < 15, alice_heard
    after = gateway.status()
    assert after["calls_answered"] == 1
    assert isinstance(after["rtp_forwarded"], int) and after["rtp_forwarded"] > 100


def test_a_registered_login_is_claimed_in_the_nodes_dht(gateway: Gateway) -> None:
    # Runs after the call test: alice and bob registered, so the gateway claimed both
    # with the identities it hosts for them, and the node's DHT resolves the login.
    deadline = time.monotonic() + WAIT
    while gateway.status()["login_claims"] != 2:
        assert time.monotonic() < deadline, gateway.status()
        time.sleep(0.2)
    found = p2pnode("name", "lookup", "alice", "--home", str(gateway.home), "--json")
    answer = json.loads(found.stdout)
    assert found.returncode == 1 and answer["outcome"] == "unverified"  # no verifier trusted
    assert [c["peer_id"] for c in answer["candidates"]] == [gateway.peer_ids["alice"]]


def test_wrong_password_is_refused_and_counted(gateway: Gateway) -> None:
    async def scenario() -> None:
        phone = SipUserAgent("alice", "not-the-password", DOMAIN, gateway.server, host="127.0.0.1")
        await phone.start()
        try:
            with pytest.raises(UaError) as refused:
                await phone.register()
            assert refused.value.status in (401, 403)
        finally:
            await phone.close()

    before = gateway.status()["auth_failures"]
    asyncio.run(scenario())
    assert isinstance(before, int) and gateway.status()["auth_failures"] == before + 1


def test_sip_config_mistakes_are_reported_with_paths() -> None:
    bad = {
        "sip": {
            "enabled": True,
            "listen": "nowhere",
            "digest": ["MD4"],
            "tls_port": 5061,
            "dids": {"+49 30 x": "alice"},
            "registration_trunks": [{"login": "Not A Login", "dids": ["100"]}],
            "ip_trunks": [{"name": "pbx", "sources": ["10.0.0.0/33"]}],
        }
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, "node.toml")
    problems = {p.path: p.reason for p in caught.value.problems}
    assert "sip.listen" in problems and "HOST:PORT" in problems["sip.listen"]
    assert "sip.digest.0" in problems
    assert "sip.dids.+49 30 x.[key]" in problems
    assert "sip.registration_trunks.0.login" in problems
    assert "sip.ip_trunks.0.sources.0" in problems
    with pytest.raises(ConfigError) as tls:
        parse_config({"sip": {"tls_port": 5061}}, "node.toml")
    assert "go together" in str(tls.value)


def test_a_gateway_without_a_domain_fails_its_start_and_says_why(tmp_path: Path) -> None:
    section = parse_config({"sip": {"enabled": True, "listen": "127.0.0.1:0"}}).sip
    service = SipService(tmp_path, section)  # no accounts file, no sip.domain

    async def start() -> None:
        await service.start()

    with pytest.raises(RuntimeError, match=r"sip\.domain"):
        asyncio.run(start())
    assert service.statistics().address == "" and service.statistics().gateway is None


def test_sip_section_maps_onto_the_gateway_config() -> None:
    config = parse_config(
        {
            "sip": {
                "listen": "127.0.0.1:5070",
                "digest": ["SHA-256", "MD5"],
                "upstream": "192.0.2.1:5060",
                "dids": {"+49 30 5550100": "alice"},
                "ip_trunks": [
                    {"name": "pbx", "sources": ["192.0.2.0/28"], "target": "192.0.2.5:5060"}
                ],
            }
        }
    )
    gateway = to_gateway(config.sip, DOMAIN)
    assert (gateway.domain, gateway.host, gateway.port) == (DOMAIN, "127.0.0.1", 5070)
    assert gateway.digest_algorithms == (Algorithm.SHA256, Algorithm.MD5)
    assert gateway.upstream == ("192.0.2.1", 5060)
    assert gateway.account_dids == (("+49 30 5550100", "alice"),)
    assert gateway.ip_trunks[0].target == ("192.0.2.5", 5060)
    assert parse_config({}).sip.digest[0] == "MD5"  # sipp and baresip need MD5 first
