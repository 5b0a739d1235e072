"""The SIP gateway in the NAT lab with real phones: baresip, and kamailio as another network.

One topology for the module: the gateway (``p2pnode sip serve``) on a public
host; baresip "alice" on a public host; baresip "bob" behind a
port-restricted NAT (it registers its private 10.x Contact and SDP address:
the gateway reaches it through the REGISTER's source and latches its RTP);
kamailio on a public host as "another SIP network" that routes
``bob@gw.test`` to the gateway, with our own user agent calling through it.

baresip 1.0 plays a sine with ``ausine`` (48 kHz stereo only, hence the
resampler settings) and records what it hears with ``sndfile``; an FFT of each
recording must find the other side's tone. baresip's libre refuses a
SHA-256 challenge outright, so the gateway offers MD5 alone here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.audio import read_wav, spectrum
from tests.harness.baresip import finished_recording, wait_registered, write_baresip_config
from tests.harness.netns import Host, Lab, NatType, read_line
from tests.harness.tools import require_tool
from tests.lab.conftest import require_lab_tools

pytestmark = [pytest.mark.lab, pytest.mark.interop, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "gw.test"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


@dataclass
class Topology:
    lab: Lab
    home: Path
    passwords: dict[str, str]
    gateway: str  # host:port
    alice: Host
    bob: Host
    kam: Host
    bob_records: Path


def _baresip_config(home: Path, login: str, password: str, ip: str, server: str, tone: int) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"baresip-{login}-", dir=home))
    write_baresip_config(
        directory,
        listen=f"{ip}:5060",
        account=f"{login}@{DOMAIN}",
        password=password,
        outbound=server,
        tone_hz=tone,
    )
    return directory


def _tone(path: Path) -> tuple[float, float]:
    samples, rate = read_wav(path)
    result = spectrum(samples[rate // 5 :], rate)  # skip the first 200 ms
    return result.dominant_hz, result.dominance


def _kamailio_config(ip: str, gateway: str) -> str:
    return textwrap.dedent(
        f"""\
        #!KAMAILIO
        debug=2
        log_stderror=yes
        children=1
        auto_aliases=no
        listen=udp:{ip}:5060
        alias="other.example"
        mpath="{MODULES}"
        dns=no
        rev_dns=no
        loadmodule "tm.so"
        loadmodule "sl.so"
        loadmodule "rr.so"
        loadmodule "pv.so"
        loadmodule "maxfwd.so"
        loadmodule "siputils.so"
        loadmodule "textops.so"
        request_route {{
            if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
            if (has_totag()) {{
                if (loose_route()) {{ t_relay(); exit; }}
                if (is_method("ACK") && t_check_trans()) {{ t_relay(); }}
                exit;
            }}
            if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
            record_route();
            if ($rd == "{DOMAIN}") {{ $du = "sip:{gateway}"; }}
            if (!t_relay()) {{ sl_reply_error(); }}
        }}
        """
    )


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    require_lab_tools()
    require_tool("baresip")
    with tempfile.TemporaryDirectory() as tmp, Lab() as lab:
        home = Path(tmp)
        env = {**os.environ, "P2PNODE_HOME": str(home)}
        passwords = {}
        for login in ("alice", "bob"):
            added = subprocess.run(
                [sys.executable, "-m", "p2pnode", "sip", "account", "add", login,
                 "--domain", DOMAIN, "--json"],
                env=env, capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
            )  # fmt: skip
            passwords[login] = json.loads(added.stdout)["password"]
        gw = lab.public_host("gw")
        alice = lab.public_host("alice")
        bob = lab.private_host("bob", NatType.PORT_RESTRICTED)
        kam = lab.public_host("kam")
        serve = gw.popen(
            [sys.executable, "-m", "p2pnode", "sip", "serve",
             "--listen", f"{gw.addresses[0]}:0", "--digest", "MD5"],
            env=env, cwd=REPO,
        )  # fmt: skip
        gateway = read_line(serve, 30).split()[-1]
        config = _baresip_config(home, "bob", passwords["bob"], bob.addresses[0], gateway, 660)
        phone = bob.popen(["baresip", "-f", str(config), "-t", "120"], stdin=subprocess.DEVNULL)
        wait_registered(phone)
        yield Topology(lab, home, passwords, gateway, alice, bob, kam, config / "records")


def test_baresip_calls_baresip_behind_a_port_restricted_nat_and_both_hear_the_other(
    topology: Topology,
) -> None:
    config = _baresip_config(
        topology.home, "alice", topology.passwords["alice"],
        topology.alice.addresses[0], topology.gateway, 440,
    )  # fmt: skip
    before = set(topology.bob_records.glob("*.wav"))
    caller = topology.alice.popen(
        ["baresip", "-f", str(config), "-t", "7", "-e", f"/dial sip:bob@{DOMAIN}"],
        stdin=subprocess.DEVNULL,
    )
    output, _ = caller.communicate(timeout=40)
    assert "Call established" in output
    heard_by_alice = _tone(finished_recording(config / "records"))
    heard_by_bob = _tone(finished_recording(topology.bob_records, after=before))
    assert abs(heard_by_alice[0] - 660) < 10 and heard_by_alice[1] > 20, heard_by_alice
    assert abs(heard_by_bob[0] - 440) < 10 and heard_by_bob[1] > 20, heard_by_bob


def test_another_network_through_kamailio_rings_the_registered_baresip(
    topology: Topology, tmp_path: Path
) -> None:
    kamailio = require_tool("kamailio")
    kam = topology.kam
    (tmp_path / "kamailio.cfg").write_text(_kamailio_config(kam.addresses[0], topology.gateway))
    proxy = kam.popen(
        [kamailio, "-f", str(tmp_path / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8",
         "-Y", str(tmp_path)],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    assert proxy.poll() is None, "kamailio did not start"
    before = set(topology.bob_records.glob("*.wav"))
    # Our UA on the kamailio side: carol@other.example, no account on the gateway.
    called = kam.run(
        [sys.executable, "-m", "p2pnode", "sip", "try-call", "--server", f"{kam.addresses[0]}:5060",
         "--domain", "other.example", "--login", "carol", "--password", "-", "--no-register",
         "--to", f"sip:bob@{DOMAIN}", "--local-ip", kam.addresses[0], "--seconds", "2",
         "--tone", "440", "--json"],
        timeout=60,
    )  # fmt: skip
    assert called.returncode == 0, called.stderr
    heard_by_carol = json.loads(called.stdout)["heard_hz"]
    assert abs(heard_by_carol - 660) < 10
    heard_by_bob = _tone(finished_recording(topology.bob_records, after=before))
    assert abs(heard_by_bob[0] - 440) < 10 and heard_by_bob[1] > 20, heard_by_bob
