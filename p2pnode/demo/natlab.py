"""The demo's peer steps behind real NATs: `p2pnode run` nodes in a netns lab (root only).

Why: on loopback every peer is reachable from every other, so the demo there
cannot show what the network is for. As root with ``ip`` and ``nft`` present,
``p2pnode demo`` builds a lab (``p2pnode.lab``): two public supernodes (relay,
home, mailbox) on the public segment 203.0.113.0/24, alice behind a
port-restricted cone NAT and bob behind a symmetric NAT, each on its own LAN
10.n.0.0/24. That pair has no direct path (RFC 4787: a port-restricted filter
drops what a symmetric mapping sends from a fresh port), so its links and calls
go through a supernode's TURN relay. Every node is a real ``p2pnode run``
process with a TOML config in its namespace; the demo drives them only through
the CLI (``name claim``, ``ping``, ``send``, ``call``, ``sip account add``,
``sip try-call``) and the control API, run inside their namespaces:

1. both claim their logins; alice pings bob by login: path and RTT;
2. alice and bob write to each other (delivered receipts both ways); bob's node
   is stopped, alice writes again: the copies held in the mailboxes; bob's node
   starts again, drains them, and the receipt reaches alice;
3. alice calls bob with 440 Hz, bob's node answers by config with 660 Hz; an
   FFT of each recording names the frequency each side heard;
4. a phone (our SIP user agent, ``p2pnode sip try-call``) behind its own NAT is
   the account carol on the first supernode's SIP gateway, whose bridge (the
   runtime's ``sip-bridge``) carries it to the P2P network: the phone dials the
   login bob, and bob calls the login carol back; each side's tone by FFT.

Invariants: the lab (namespaces and every process in them) is removed on
return, on any error and on Ctrl-C or SIGTERM; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from p2pnode.app.peer_calls import CALLS_DIR
from p2pnode.connectivity.relays import relay_bucket, relay_subject
from p2pnode.demo.calls import dominant_frequency
from p2pnode.demo.labnode import LIMIT, LabNode, NatDemoError
from p2pnode.dht.puzzle import DEFAULT_ID_DIFFICULTY
from p2pnode.lab.netns import PUBLIC_NETWORK, Host, Lab, LabError, NatType, read_line

__all__ = [
    "ALICE_NAT",
    "BOB_NAT",
    "LabAvailability",
    "NatDemoError",
    "lab_availability",
    "run_lab_peer_steps",
]

REQUIRED_TOOLS = ("ip", "nft")
ALICE_NAT = NatType.PORT_RESTRICTED
BOB_NAT = NatType.SYMMETRIC
# Fixed ports, only in the supernodes' own namespaces, where nothing else listens: the
# peers' configs can name them before the supernodes print anything.
SUPERNODE_DHT_PORT = 4000
MAILBOX_PORT = 7400
SIP_PORT = 5060
SIP_DOMAIN = "gw.demo.p2pnode.test"
PHONE_LOGIN = "carol"  # an account on supernode1's gateway, bridged to the P2P network
PHONE_NAT = NatType.PORT_RESTRICTED
PHONE_HZ = 440.0
BOB_CALLS_PHONE_HZ = 550.0
ALICE_HZ = 440.0
BOB_HZ = 660.0
CALL_SECONDS = 2.0
TEXT_TO_BOB = "hi bob, from behind a port-restricted NAT"
TEXT_TO_ALICE = "hi alice, from behind a symmetric NAT"
OFFLINE_TEXT = "see you at six"

Say = Callable[[str], None]
Which = Callable[[str], str | None]


@dataclass(frozen=True)
class LabAvailability:
    """Whether this process can build the NAT lab, and if not, why and how to get it."""

    possible: bool
    reason: str = ""


def lab_availability(euid: int, which: Which = shutil.which) -> LabAvailability:
    """The lab needs root (namespaces, nftables) and the ``ip`` and ``nft`` commands."""
    if euid != 0:
        return LabAvailability(False, "the NAT lab needs root (network namespaces, nftables)")
    missing = [tool for tool in REQUIRED_TOOLS if which(tool) is None]
    if missing:
        return LabAvailability(
            False,
            f"{' and '.join(missing)} not found (apt-get install iproute2 nftables)",
        )
    return LabAvailability(True)


def supernode_sections(
    ip: str, bootstrap: str, *, gateway: bool = False
) -> dict[str, dict[str, object]]:
    """A public supernode asserting its address: relay, home, mailbox; ``bootstrap`` is
    the first supernode's DHT address (empty for the first itself). ``gateway``: it also
    hosts the SIP gateway, whose account ``PHONE_LOGIN`` is bridged both ways."""
    sections: dict[str, dict[str, object]] = {
        "node": {"listen": f"{ip}:{SUPERNODE_DHT_PORT}",
                 "bootstrap": [bootstrap] if bootstrap else [], "status_interval": 3600.0},
        "supernode": {"enabled": True, "public_ip": ip, "check_interval": 3600.0},
        "relay": {"listen": f"{ip}:0", "allow_peers": [PUBLIC_NETWORK]},
        "presence": {"enabled": True, "home": "serve", "listen": f"{ip}:0"},
        "mailbox": {"serve": True, "listen": f"{ip}:{MAILBOX_PORT}"},
    }  # fmt: skip
    if gateway:
        # No verifier in the demo: the bridge may dial a login's single unverified claim.
        sections["sip"] = {
            "enabled": True, "domain": SIP_DOMAIN, "listen": f"{ip}:{SIP_PORT}",
            "digest": ["MD5"], "bridge_hosted": [PHONE_LOGIN], "bridge_unverified_logins": True,
        }  # fmt: skip
    return sections


def peer_sections(
    homes: list[tuple[str, str]], bootstrap: str, calls: dict[str, object]
) -> dict[str, dict[str, object]]:
    """A peer behind NAT attaching to ``homes`` (peer id, IP), which are its mailboxes too;
    relays found in the DHT carry its links and calls."""
    return {
        "node": {"listen": "0.0.0.0:0", "bootstrap": [bootstrap], "status_interval": 3600.0},
        "supernode": {"enabled": False, "relay_search": True},
        "presence": {"enabled": True, "home": "attach", "listen": "0.0.0.0:0",
                     "homes": [peer for peer, _ in homes]},
        "chat": {"enabled": True, "drain_every": 1.0, "retry_first": 0.5,
                 "mailboxes": [f"{peer}@{ip}:{MAILBOX_PORT}" for peer, ip in homes]},
        "calls": calls,
    }  # fmt: skip


ALICE_CALLS: dict[str, object] = {"enabled": True}
BOB_CALLS: dict[str, object] = {  # unattended: answers with a tone and records
    "enabled": True, "auto_answer": True, "answer_tone": BOB_HZ, "record": True,
}  # fmt: skip


@dataclass
class NatDemo:
    """The lab's hosts and the ``p2pnode run`` node each runs."""

    lab: Lab
    root: Path
    supernodes: list[LabNode] = field(default_factory=list)
    peers: dict[str, LabNode] = field(default_factory=dict)
    bootstrap: str = ""
    phone: Host | None = None  # our own SIP user agent, behind its own NAT
    phone_password: str = ""

    @classmethod
    def build(cls, lab: Lab, root: Path, supernodes: int = 2) -> NatDemo:
        """Hosts and configs; nothing runs yet. The first supernode's DHT port is fixed (in
        its own namespace nothing else listens), so every config can name it at once."""
        demo = cls(lab, root)
        hosts = [lab.public_host(f"supernode{i + 1}") for i in range(supernodes)]
        demo.bootstrap = f"{hosts[0].addresses[0]}:{SUPERNODE_DHT_PORT}"
        for index, host in enumerate(hosts):
            name = f"supernode{index + 1}"
            bootstrap = demo.bootstrap if index else ""
            sections = supernode_sections(host.addresses[0], bootstrap, gateway=not index)
            # DHT servers at lab addresses: ground like `p2pnode init` does (~2 s each).
            node = LabNode(name, host, root / name, sections, id_bits=DEFAULT_ID_DIFFICULTY)
            demo.supernodes.append(node)
        homes = [(node.peer_id, node.host.addresses[0]) for node in demo.supernodes]
        for name, nat, calls in (("alice", ALICE_NAT, ALICE_CALLS), ("bob", BOB_NAT, BOB_CALLS)):
            host = lab.private_host(name, nat)
            demo.peers[name] = LabNode(
                name, host, root / name, peer_sections(homes, demo.bootstrap, calls)
            )
        demo.phone = lab.private_host("phone", PHONE_NAT)
        return demo

    def start(self) -> None:
        """Supernodes first (the peers' relay search must find their adverts: a miss is
        retried only minutes later), then the peers, their logins claimed meanwhile."""
        gateway = self.supernodes[0]
        account = json.loads(
            gateway.cli("sip", "account", "add", PHONE_LOGIN, "--domain", SIP_DOMAIN, "--json")
        )  # as an operator would, before the node starts
        self.phone_password = str(account["password"])
        for node in self.supernodes:
            node.start()
        for node in self.supernodes:
            node.wait_for(r"^role: supernode ")
        for node in self.supernodes:
            gateway.until(
                "its relay advert in the DHT", functools.partial(_advertised, gateway, node)
            )
        for node in self.peers.values():
            node.start()
        claims = [
            (node, node.cli_start("name", "claim", node.name, "--bootstrap", self.bootstrap))
            for node in self.peers.values()
        ]
        for node in self.peers.values():
            self.wait_ready(node)
        for node, process in claims:
            node.cli_finish(process)

    def wait_ready(self, node: LabNode) -> None:
        """Started, a relay chosen for its links, attached to both homes."""
        node.wait_for(r"^relays: \d")
        node.until("attaching to two homes", lambda: _attached(node.api("GET", "/api/status")))


def _advertised(reader: LabNode, supernode: LabNode) -> bool:
    """``reader`` finds ``supernode``'s signed RELAY_ADVERT in the DHT (what the peers'
    relay search will look up first)."""
    identity = supernode.identity()
    subject = relay_subject(relay_bucket(identity.node_id))
    found = reader.api("GET", f"/api/records?kind=relay-advert&subject={subject}")
    return any(record.get("owner") == identity.peer_id for record in found.get("records", []))


def _attached(status: dict[str, Any]) -> bool:
    """Its signalling service runs with two homes (what a CONTACT record will name)."""
    for service in status.get("services", []):
        if service.get("name") == "signalling":
            homes = service.get("statistics", {}).get("homes", 0)
            return service.get("state") == "running" and isinstance(homes, int) and homes >= 2
    return False


@contextlib.contextmanager
def _interrupts_raise() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt here, so the lab's ``with`` tears it down
    even while a blocking wait runs (asyncio's own SIGINT handler would wait for it)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def name_relays(demo: NatDemo, text: str) -> str:
    """A path as the CLI prints it, with each supernode's peer id replaced by its name."""
    for node in demo.supernodes:
        ip = node.host.addresses[0]
        text = text.replace(node.peer_id, f"{node.name} ({ip})")
        text = re.sub(rf"via {re.escape(ip)}\b", f"via {node.name} ({ip})", text)
    return text


def describe_topology(demo: NatDemo) -> list[str]:
    lines = [
        f"      lab {demo.lab.prefix}: namespaces {demo.lab.prefix}*, removed when the demo ends"
    ]
    for node in demo.supernodes:
        lines.append(
            f"      {node.name} {node.host.addresses[0]} on the public segment {PUBLIC_NETWORK}: "
            "relay (TURN), home, mailbox"
        )
    for node in demo.peers.values():
        lines.append(
            f"      {node.name} {node.host.addresses[0]} behind a {node.host.nat.value} NAT "
            f"-> {node.host.public_address}"
        )
    if demo.phone is not None:
        lines.append(
            f"      phone {demo.phone.addresses[0]} behind a {demo.phone.nat.value} NAT "
            f"-> {demo.phone.public_address}: our SIP user agent, account {PHONE_LOGIN!r} on "
            f"{demo.supernodes[0].name}'s gateway (bridged to the P2P network)"
        )
    return lines


def _link(demo: NatDemo, say: Say) -> bool:
    alice, bob = demo.peers["alice"], demo.peers["bob"]
    out = alice.cli("ping", "bob", "--count", "3")
    found = re.search(r"link to (\S+): (.+)", out)
    setup = re.search(r"set-up (\d+) ms", out)
    rtt = re.search(r"rtt ([0-9.]+) ms", out)
    if found is None or setup is None or rtt is None:
        raise NatDemoError(f"alice: `p2pnode ping bob` said {out!r}")
    say(f"      alice$ p2pnode ping bob -> {found.group(1)[:16]}... (found by login)")
    path = name_relays(demo, found.group(2))
    say(f"      link alice -> bob: {path}, set-up {setup.group(1)} ms, rtt {rtt.group(1)} ms")
    return found.group(1) == bob.peer_id and float(rtt.group(1)) > 0


def _message(node: LabNode, to: str, text: str) -> tuple[str, dict[str, Any]]:
    """``p2pnode send``; the message id and its status as the node reports it."""
    out = node.cli("send", to, text, "--wait", str(LIMIT / 4))
    found = re.search(r"message (\S+) to \S+: (.+)", out)
    if found is None:
        raise NatDemoError(f"{node.name}: `p2pnode send` said {out!r}")
    return found.group(1), node.api("GET", f"/api/messages/{found.group(1)}")


def _delivered(node: LabNode, message_id: str) -> bool:
    return bool(node.api("GET", f"/api/messages/{message_id}")["delivered"])


def _inbox(node: LabNode) -> list[str]:
    return [m["text"] for m in node.api("GET", "/api/inbox")["messages"]]


def _shows(node: LabNode, text: str) -> bool:
    return text in _inbox(node)


def _chat(demo: NatDemo, say: Say) -> bool:
    alice, bob = demo.peers["alice"], demo.peers["bob"]
    ok = True
    for sender, receiver, text in ((alice, bob, TEXT_TO_BOB), (bob, alice, TEXT_TO_ALICE)):
        message_id, _status = _message(sender, receiver.name, text)
        sender.until("the delivered receipt", functools.partial(_delivered, sender, message_id))
        receiver.until("the message", functools.partial(_shows, receiver, text))
        say(
            f"      {sender.name}$ p2pnode send {receiver.name} {text!r} -> online, "
            f"{receiver.name}'s inbox shows it, delivered receipt back"
        )
        ok = ok and text in _inbox(receiver)
    return ok


def _offline(demo: NatDemo, say: Say) -> bool:
    alice, bob = demo.peers["alice"], demo.peers["bob"]
    bob.stop()
    say("      bob's node stopped (SIGTERM)")
    message_id, status = _message(alice, "bob", OFFLINE_TEXT)
    alice.until(
        "two mailbox copies",
        lambda: int(alice.api("GET", f"/api/messages/{message_id}")["copies"]) >= 2,
    )
    copies = alice.api("GET", f"/api/messages/{message_id}")["copies"]
    say(
        f"      alice$ p2pnode send bob {OFFLINE_TEXT!r} -> bob unreachable, "
        f"{copies} copies held in the supernodes' mailboxes"
    )
    bob.start()
    demo.wait_ready(bob)
    bob.until("the mailbox drain", lambda: OFFLINE_TEXT in _inbox(bob))
    say(f"      bob's node back: drained its mailboxes, its inbox shows {_inbox(bob)[-1:]}")
    alice.until("the delivered receipt", lambda: _delivered(alice, message_id))
    outbox = alice.api("GET", f"/api/messages/{message_id}")
    say(f"      bob's delivered receipt reached alice (state {outbox['state']})")
    return (
        _inbox(bob)[-1:] == [OFFLINE_TEXT] and bool(outbox["delivered"]) and not status["delivered"]
    )


def _call(demo: NatDemo, say: Say) -> bool:
    alice, bob = demo.peers["alice"], demo.peers["bob"]
    mine = alice.home / "alice-heard.wav"
    out = alice.cli(
        "call", "bob", "--tone", f"{ALICE_HZ:.0f}", "--record", str(mine),
        "--duration", str(CALL_SECONDS),
    )  # fmt: skip
    answered = re.search(r": answered \((.+)\)", out)
    ended = re.search(r": hung-up \((.+)\)", out)
    if answered is None or ended is None:
        raise NatDemoError(f"alice: `p2pnode call bob` said {out!r}")
    recordings = bob.home / CALLS_DIR
    bob.until(
        "the recordings",
        lambda: mine.exists() and any(recordings.glob("*.wav")),
    )
    time.sleep(0.5)  # the recorders close with the call
    alice_heard = dominant_frequency(mine)
    bob_heard = dominant_frequency(sorted(recordings.glob("*.wav"))[-1])
    say(
        f"      alice$ p2pnode call bob --tone {ALICE_HZ:.0f} -> answered: "
        f"{name_relays(demo, ended.group(1))}; bob's node answered with {BOB_HZ:.0f} Hz"
    )
    say(f"      alice heard {alice_heard:.1f} Hz, bob heard {bob_heard:.1f} Hz (FFT)")
    return abs(alice_heard - BOB_HZ) < 5 and abs(bob_heard - ALICE_HZ) < 5


def _phone_argv(demo: NatDemo, *args: str) -> list[str]:
    gateway = demo.supernodes[0].host.addresses[0]
    assert demo.phone is not None
    return demo.phone.python(
        "-m", "p2pnode", "sip", "try-call", "--server", f"{gateway}:{SIP_PORT}",
        "--domain", SIP_DOMAIN, "--login", PHONE_LOGIN, "--password", demo.phone_password,
        "--local-ip", demo.phone.addresses[0], "--tone", f"{PHONE_HZ:.0f}", "--seconds",
        str(CALL_SECONDS), "--json", *args,
    )  # fmt: skip


def _phone_result(process: subprocess.Popen[str], what: str) -> float:
    """The tone the phone heard (its JSON line), or why not."""
    try:
        out, err = process.communicate(timeout=LIMIT * 2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise NatDemoError(f"phone: {what} did not finish") from None
    if process.returncode != 0:
        said = (err.strip().splitlines() or ["(nothing on stderr)"])[-1]
        raise NatDemoError(f"phone: {what} exited {process.returncode}: {said}")
    heard = json.loads(out.strip().splitlines()[-1])["heard_hz"]
    return float(heard) if heard is not None else 0.0


def _newest_recording(node: LabNode, after: set[Path]) -> Path:
    recordings = node.home / CALLS_DIR
    node.until("the recording", lambda: bool(set(recordings.glob("*.wav")) - after))
    time.sleep(0.5)  # the recorder closes with the call
    return sorted(set(recordings.glob("*.wav")) - after)[-1]


def _phone(demo: NatDemo, say: Say) -> bool:
    """The phone dials the login bob through the gateway's bridge; then bob calls the
    login carol (the identity the gateway hosts for the account) and the phone rings."""
    assert demo.phone is not None
    bob = demo.peers["bob"]
    before = set((bob.home / CALLS_DIR).glob("*.wav"))
    phone_heard = _phone_result(demo.phone.popen(_phone_argv(demo, "--to", "bob")), "calling bob")
    bob_heard = dominant_frequency(_newest_recording(bob, before))
    say(
        f"      phone$ p2pnode sip try-call --login {PHONE_LOGIN} --to bob --tone "
        f"{PHONE_HZ:.0f}: the gateway's bridge calls bob (P2P, behind his NAT), his node "
        f"answers with {BOB_HZ:.0f} Hz"
    )
    say(f"      the phone heard {phone_heard:.1f} Hz, bob's node heard {bob_heard:.1f} Hz (FFT)")
    waiting = demo.phone.popen(_phone_argv(demo, "--wait", str(LIMIT)))
    try:
        registered = read_line(waiting, timeout=LIMIT) == "registered; waiting for a call"
    except LabError:  # it exited or said nothing: a failed step, not a lab that failed
        registered = False
    if not registered:
        raise NatDemoError("phone: did not register to wait for a call")
    mine = bob.home / "bob-heard-phone.wav"
    out = bob.cli(
        "call", PHONE_LOGIN, "--tone", f"{BOB_CALLS_PHONE_HZ:.0f}", "--record", str(mine),
        "--duration", str(CALL_SECONDS + 0.5),
    )  # fmt: skip
    if re.search(r": answered \(", out) is None:
        raise NatDemoError(f"bob: `p2pnode call {PHONE_LOGIN}` said {out!r}")
    rang_heard = _phone_result(waiting, "waiting for bob's call")
    bob.until("the recording", mine.exists)
    time.sleep(0.5)
    back_heard = dominant_frequency(mine)
    say(
        f"      and back: bob$ p2pnode call {PHONE_LOGIN} --tone {BOB_CALLS_PHONE_HZ:.0f} -> "
        f"the login resolves to the identity the gateway hosts for {PHONE_LOGIN}; the phone rings"
    )
    say(f"      and answers: it heard {rang_heard:.1f} Hz, bob heard {back_heard:.1f} Hz (FFT)")
    return (
        abs(phone_heard - BOB_HZ) < 10
        and abs(bob_heard - PHONE_HZ) < 10
        and abs(rang_heard - BOB_CALLS_PHONE_HZ) < 10
        and abs(back_heard - PHONE_HZ) < 10
    )


def run_lab_peer_steps(say: Say, labels: tuple[str, str, str, str]) -> list[bool]:
    """The three steps above, each headed by its label; an error fails the steps not yet
    passed in one line. Raises ``LabError`` only when the lab itself cannot be built."""
    passed: list[bool] = []
    with (
        _interrupts_raise(),
        tempfile.TemporaryDirectory(prefix="p2pnode-natdemo-") as directory,
        Lab() as lab,
    ):
        demo = NatDemo.build(lab, Path(directory))
        say(
            f"{labels[0]} NAT lab (network namespaces, nftables NATs): "
            f"{len(demo.supernodes)} supernodes and 2 peers, each a `p2pnode run` process, "
            "and a phone"
        )
        for line in describe_topology(demo):
            say(line)
        say(
            "      a port-restricted and a symmetric NAT have no direct path between them "
            "(RFC 4787): links and calls go through a supernode's TURN relay"
        )
        try:
            demo.start()
            say("      all nodes up; alice and bob claimed their logins (`p2pnode name claim`)")
            passed.append(_link(demo, say))
            say(labels[1])
            passed.append(_chat(demo, say) and _offline(demo, say))
            say(labels[2])
            passed.append(_call(demo, say))
            say(labels[3])
            passed.append(_phone(demo, say))
        except NatDemoError as error:
            say(f"      failed: {error}")
            for node in [*demo.supernodes, *demo.peers.values()]:
                for line in node.log_tail():
                    say(f"      {node.name} logged: {line}")
        finally:
            for node in [*demo.peers.values(), *demo.supernodes]:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    node.stop()
    return passed + [False] * (len(labels) - len(passed))
