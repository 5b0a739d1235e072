"""Our registration client's digest (MD5 and SHA-256) is accepted by Kamailio's auth module.

An independent check of ``digest.authorization``: Kamailio 5.6 challenges a
REGISTER (``auth_challenge`` with qop=auth, ``algorithm`` MD5 or SHA-256),
verifies our answer with ``pv_www_authenticate`` against a plain-text
password and saves the contact; a wrong password is refused (401 again).
Kamailio listens on 127.0.0.1 at a port the kernel picked for us.
"""
# ruff: noqa: S105  (test credentials, on purpose)

from __future__ import annotations

import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from p2pnode.gateways.sip.client import RegistrationClient, RegistrationConfig, RegistrationState
from p2pnode.gateways.sip.headers import SipUri, parse_auth
from p2pnode.gateways.sip.message import Header, SipRequest, SipResponse
from p2pnode.gateways.sip.parser import parse_datagram, serialize
from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
PASSWORD = "right horse battery"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kamailio_config(port: int, algorithm: str) -> str:
    return textwrap.dedent(
        f"""\
        #!KAMAILIO
        debug=2
        log_stderror=yes
        children=1
        auto_aliases=no
        listen=udp:127.0.0.1:{port}
        mpath="{MODULES}"
        dns=no
        rev_dns=no
        alias="gw.test"
        loadmodule "tm.so"
        loadmodule "sl.so"
        loadmodule "pv.so"
        loadmodule "xlog.so"
        loadmodule "textops.so"
        loadmodule "siputils.so"
        loadmodule "auth.so"
        loadmodule "usrloc.so"
        loadmodule "registrar.so"
        modparam("auth", "algorithm", "{algorithm}")
        modparam("usrloc", "db_mode", 0)
        request_route {{
            if (is_method("REGISTER")) {{
                if (!pv_www_authenticate("gw.test", "{PASSWORD}", "0")) {{
                    xlog("L_NOTICE", "P2PNODE-AUTH challenge rc=$rc\\n");
                    auth_challenge("gw.test", "1");
                    exit;
                }}
                if (!save("location")) {{ sl_reply_error(); }}
                xlog("L_NOTICE", "P2PNODE-AUTH registered\\n");
                exit;
            }}
            sl_send_reply("404", "Not here");
        }}
        """
    )


def options(local_port: int, branch: str) -> bytes:
    request = SipRequest.build(
        "OPTIONS",
        SipUri("sip", None, None, "gw.test", None),
        (
            Header("Via", f"SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{branch};rport"),
            Header("Max-Forwards", "70"),
            Header("From", "<sip:probe@gw.test>;tag=p"),
            Header("To", "<sip:gw.test>"),
            Header("Call-ID", f"probe-{branch}"),
            Header("CSeq", "1 OPTIONS"),
            Header("Content-Length", "0"),
        ),
        b"",
    )
    return serialize(request)


def wait_ready(sock: socket.socket, port: int) -> None:
    """Kamailio answers OPTIONS with 404 once it listens."""
    local_port = sock.getsockname()[1]
    deadline = time.monotonic() + 15
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        sock.sendto(options(local_port, f"ready{attempt}"), ("127.0.0.1", port))
        try:
            sock.recv(65535)
            return
        except TimeoutError:
            continue
    raise AssertionError("kamailio did not start")


def register(
    sock: socket.socket, port: int, password: str, call_id: str
) -> tuple[RegistrationClient, SipResponse]:
    """Register until the client stops; the client and the last response it got."""
    local_port = sock.getsockname()[1]
    client = RegistrationClient(
        RegistrationConfig(
            registrar=SipUri("sip", None, None, "gw.test", None),
            aor=SipUri("sip", "alice", None, "gw.test", None),
            username="alice",
            password=password,
            contact=SipUri("sip", "alice", None, "127.0.0.1", local_port),
            via=f"SIP/2.0/UDP 127.0.0.1:{local_port}",
            expires=300,
        ),
        call_id=call_id,
        tag="t1",
    )
    request: SipRequest | None = client.register(branch_id=f"{call_id}0", cnonce="0a4f113b")
    step = 0
    response: SipResponse | None = None
    while request is not None and step < 5:
        step += 1
        sock.sendto(serialize(request), ("127.0.0.1", port))
        answer = parse_datagram(sock.recv(65535))
        assert isinstance(answer, SipResponse)
        response = answer
        request = client.on_response(answer, 0.0, branch_id=f"{call_id}{step}", cnonce=f"c{step}")
    assert response is not None
    return client, response


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_kamailio_accepts_our_digest(tmp_path: Path, algorithm: str) -> None:
    kamailio = require_tool("kamailio")
    port = free_udp_port()
    (tmp_path / "kamailio.cfg").write_text(kamailio_config(port, algorithm))
    config = str(tmp_path / "kamailio.cfg")
    command = [kamailio, "-f", config, "-DD", "-E", "-m", "64", "-M", "8", "-Y", str(tmp_path)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(1.0)
            wait_ready(sock, port)
            client, _ = register(sock, port, PASSWORD, "good")
            assert client.state is RegistrationState.REGISTERED, client.failure
            assert client.granted == 300
            wrong, challenge = register(sock, port, "not the password", "bad")
            assert wrong.state is RegistrationState.FAILED
            assert wrong.failure == "credentials refused"
            (offered,) = challenge.header_values("WWW-Authenticate")
            assert parse_auth(offered).get("algorithm") == algorithm
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate(timeout=5)
    assert output.count("P2PNODE-AUTH registered") == 1
