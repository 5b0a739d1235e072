"""The directory commands a person types, against real DHT nodes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode.cli import main
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from tests.harness.tools import require_tool

NODES = 5


@contextlib.contextmanager
def dht_in_thread(count: int) -> Iterator[str]:
    """Real DHT nodes on their own event loop in a thread; yields the seed's HOST:PORT."""
    loop = asyncio.new_event_loop()
    nodes: list[DhtNode] = []

    async def start() -> str:
        seed = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
        await seed.start()
        nodes.append(seed)
        for _ in range(count - 1):
            node = DhtNode(Identity.generate(), listen=("127.0.0.1", 0), bootstrap=[seed.address])
            await node.start()
            nodes.append(node)
        return f"{seed.address[0]}:{seed.address[1]}"

    async def stop() -> None:
        for node in nodes:
            await node.close()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=20)
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_publish_verify_lookup_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner_home, squatter_home, verifier_home = (tmp_path / n for n in ("o", "s", "v"))
    with dht_in_thread(NODES) as seed:
        net = ["--bootstrap", seed]
        code, out, _ = run(capsys, "verifier", "init", "--home", str(verifier_home))
        assert code == 0
        verifier_id = re.search(r"--trust\): (\S+)", out)
        assert verifier_id is not None
        trust = ["--trust", verifier_id.group(1)]

        # like `record put`, publishing needs an identity made by `p2pnode init`
        for argv in (
            ("enum", "publish", "+18009359935", "--sip", "sip:pbx@owner.example"),
            ("name", "claim", "alice"),
        ):
            code, out, err = run(capsys, *argv, "--home", str(owner_home), *net)
            assert code == 2 and not out and "run `p2pnode init`" in err
            assert not (owner_home / "identity.key").exists()
        for home in (owner_home, squatter_home):
            assert run(capsys, "init", "--home", str(home))[0] == 0

        code, out, _ = run(
            capsys,
            "enum",
            "publish",
            "+1 (800) 935-9935",
            "--sip",
            "sip:pbx@owner.example",
            "--home",
            str(owner_home),
            *net,
        )
        assert code == 0 and "published +18009359935" in out
        owner_id = Identity.load(owner_home).peer_id

        code, out, _ = run(
            capsys, "enum", "lookup", "0018009359935", *net, *trust, "--home", str(tmp_path)
        )
        assert code == 1 and "UNVERIFIED" in out and Identity.load(owner_home).fingerprint in out

        # the verifier inspects the pending claim, then countersigns the owner's key
        code, out, _ = run(
            capsys, "enum", "verify", "+18009359935", "--home", str(verifier_home), *net
        )
        assert code == 0 and owner_id in out and "sip:pbx@owner.example" in out
        code, out, _ = run(
            capsys,
            "enum",
            "verify",
            "+18009359935",
            "--owner",
            owner_id,
            "--home",
            str(verifier_home),
            *net,
        )
        assert code == 0
        token = out.strip().splitlines()[-1]
        assert token.startswith("p2pnode-endorsement:")

        # the token is bound to the owner's key: the squatter cannot use it
        code, _, err = run(
            capsys,
            "enum",
            "publish",
            "+18009359935",
            "--sip",
            "sip:x@squat.example",
            "--endorsement",
            token,
            "--home",
            str(squatter_home),
            *net,
        )
        assert code == 2 and "another owner" in err
        code, _, _ = run(
            capsys,
            "enum",
            "publish",
            "+18009359935",
            "--sip",
            "sip:x@squat.example",
            "--home",
            str(squatter_home),
            *net,
        )
        assert code == 0
        code, out, _ = run(
            capsys,
            "enum",
            "publish",
            "+18009359935",
            "--endorsement",
            token,
            "--home",
            str(owner_home),
            *net,
        )
        assert code == 0 and "1 endorsement(s)" in out and "sip:pbx@owner.example" in out

        code, out, _ = run(
            capsys, "enum", "lookup", "+18009359935", *net, *trust, "--home", str(tmp_path)
        )
        assert code == 0 and "VERIFIED" in out and "sip:pbx@owner.example" in out
        assert "squat" not in out
        # without trusting the verifier: two unverified claims, reported as ambiguous
        code, _, err = run(capsys, "enum", "lookup", "+18009359935", *net, "--home", str(tmp_path))
        assert code == 1 and "ambiguous" in err  # a negative answer: exit 1

        _gateway_answers(seed, verifier_id.group(1), tmp_path)  # a real process, asked by dig

        revoke = ("enum", "revoke", "+18009359935", "--owner", owner_id)
        code, out, err = run(capsys, *revoke, "--days", "30", "--home", str(verifier_home), *net)
        assert code == 2 and not out and "--days 30 is too short" in err and "--days 365" in err
        code, out, _ = run(capsys, *revoke, "--home", str(verifier_home), *net)
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=730)
        assert code == 0 and "revoked" in out and f"until {expires:%Y-%m-%d}" in out
        code, _, err = run(
            capsys, "enum", "lookup", "+18009359935", *net, *trust, "--home", str(tmp_path)
        )
        assert code == 1 and "ambiguous" in err  # a negative answer: exit 1

        # logins
        for home in (owner_home, squatter_home):
            code, _, _ = run(capsys, "name", "claim", "Alice", "--home", str(home), *net)
            assert code == 0
        code, _, err = run(capsys, "name", "lookup", "alice", *net, "--home", str(tmp_path))
        assert code == 1 and "ambiguous" in err and Identity.load(owner_home).fingerprint in err
        code, out, _ = run(capsys, "name", "lookup", owner_id, "--home", str(tmp_path))
        assert code == 0 and "a peer id" in out
        code, out, err = run(capsys, "name", "lookup", "nobody-here", *net, "--home", str(tmp_path))
        assert code == 1 and not out and "nobody claims 'nobody-here'" in err
        code, out, err = run(
            capsys, "enum", "lookup", "+18005550199", *net, "--home", str(tmp_path)
        )
        assert code == 1 and "nobody claims" in err

        # errors a person understands
        code, _, err = run(
            capsys, "enum", "lookup", "+1 800 FLOWERS", *net, "--home", str(tmp_path)
        )
        assert code == 2 and "bad number" in err
        code, _, err = run(capsys, "name", "claim", "a_b", "--home", str(owner_home), *net)
        assert code == 2 and "bad login" in err
        code, _, err = run(capsys, "enum", "lookup", "+18009359935", "--home", str(tmp_path))
        assert code == 2 and "--bootstrap" in err


def _gateway_answers(seed: str, verifier: str, tmp_path: Path) -> None:
    """``p2pnode enum serve`` as a real process, asked by dig."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2pnode",
            "enum",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            seed,
            "--trust",
            verifier,
            "--home",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"udp\+tcp ([\d.]+):(\d+)", banner)
        assert match is not None, banner + (process.stderr.read() if process.stderr else "")
        out = subprocess.run(
            [
                require_tool("dig", "dnsutils"),
                "@" + match.group(1),
                "-p",
                match.group(2),
                "+short",
                "+tries=1",
                "+time=5",
                "-t",
                "NAPTR",
                "5.3.9.9.5.3.9.0.0.8.1.e164.arpa",
            ],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        ).stdout
        assert out.strip() == '100 10 "u" "E2U+sip" "!^.*$!sip:pbx@owner.example!" .'
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


PEER = Identity.generate(bytes(32)).peer_id


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["enum", "verify", "+18009359935", "--owner", PEER, "--days", "0"], "--days"),
        (["enum", "verify", "+18009359935", "--owner", PEER, "--days", "731"], "--days"),
        (["name", "verify", "alice", "--owner", PEER, "--days", "-3"], "--days"),
        (["name", "verify", "alice", "--owner", PEER, "--days", "a year"], "--days"),
        (["name", "verify", "alice", "--owner", "nobody"], "--owner"),
        (["name", "revoke", "alice", "--owner", PEER, "--days", "0"], "--days"),
        (["enum", "revoke", "+18009359935", "--owner", PEER, "--days", "731"], "--days"),
        (["enum", "lookup", "800 935 9935", "--country", "ZZ"], "--country"),
        (["enum", "verify", "+18009359935"], "no verifier identity"),
        (["enum", "serve", "--listen", ":0", "--rate-limit", "-1"], "--rate-limit"),
        (["enum", "serve", "--listen", ":0", "--rate-limit", "nan"], "--rate-limit"),
        (["enum", "serve", "--listen", ":0", "--rate-limit", "inf"], "--rate-limit"),
        (["enum", "serve", "--listen", ":0", "--rate-limit", "lots"], "--rate-limit"),
        (["enum", "serve", "--listen", ":0", "--ns-name", "ns..example"], "--ns-name"),
        (["enum", "serve", "--listen", ":0", "--zone", "a..b"], "--zone"),
        (["enum", "serve", "--listen", "nowhere"], "HOST:PORT"),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad input gives one line a person understands and exit status 2, before any
    network work (no --bootstrap is given, so reaching the network would say so instead)."""
    code, out, err = run(capsys, *argv, "--home", str(tmp_path))
    assert code == 2 and not out
    (line,) = err.splitlines()
    assert line.startswith(f"p2pnode {argv[0]}: error: ") and fragment in line


def test_unusable_home_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    code, _, err = run(capsys, "verifier", "init", "--home", str(not_a_dir))
    assert code == 2 and len(err.splitlines()) == 1 and str(not_a_dir) in err
    too_many = [
        a for n in range(33) for a in ("--trust", Identity.generate(bytes([n]) * 32).peer_id)
    ]
    code, _, err = run(capsys, "enum", "lookup", "+18009359935", *too_many, "--home", str(tmp_path))
    assert code == 2 and "at most 32" in err


def test_old_gateway_name_is_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``enum-dns`` was renamed ``enum serve`` (issue 9): the old name is a usage error now."""
    with pytest.raises(SystemExit) as exit_info:
        main(["enum-dns", "--listen", ":0", "--home", str(tmp_path)])
    assert exit_info.value.code == 2 and "invalid choice: 'enum-dns'" in capsys.readouterr().err


def test_unreachable_dht_is_a_network_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nobody answers at the bootstrap address: exit 3 (a network failure), not 1 or 2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    # the port is closed again: the join's PINGs get no answer
    code, out, err = run(
        capsys, "name", "lookup", "alice", "--bootstrap", f"127.0.0.1:{port}", "--home",
        str(tmp_path),
    )  # fmt: skip
    assert code == 3 and not out
    line = err.splitlines()[-1]  # after "no node running in HOME; joining the DHT"
    assert line.startswith("p2pnode name: network failure: ") and f"127.0.0.1:{port}" in line
