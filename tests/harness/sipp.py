"""sipp as a phone that registers: its REGISTER scenario and one run of it on loopback.

sipp 3.6.1 answers the first 401 with MD5 digest credentials (``[authentication]``)
and exits 0 when the run went as the scenario expects, so a test reads the outcome
from its exit status. It gets a free local port (its default is 5060) and every
run is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

__all__ = ["free_udp_port", "register_scenario", "sipp_register"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _register(cseq: int, expires: int, authentication: bool) -> str:
    """One REGISTER of the scenario; the second carries the digest answer to the 401."""
    credentials = "      [authentication]\n" if authentication else ""
    return f"""  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[service]@gw.test>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@gw.test>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:[service]@[local_ip]:[local_port]>
{credentials}      Max-Forwards: 70
      Expires: {expires}
      Content-Length: 0

    ]]>
  </send>
"""


def register_scenario(expires: int, answer: int, name: str) -> str:
    """REGISTER, the 401 challenge, REGISTER with credentials, then ``answer`` (gw.test)."""
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        f'<scenario name="{name}">\n'
        + _register(1, expires, authentication=False)
        + '  <recv response="401" auth="true"/>\n'
        + _register(2, expires, authentication=True)
        + f'  <recv response="{answer}"/>\n'
        "</scenario>\n"
    )


async def sipp_register(
    sipp: str,
    scenario: Path,
    server: tuple[str, int],
    user: str,
    password: str,
    transport: str = "udp",
) -> tuple[int, int]:
    """sipp plays ``scenario`` once as ``user``: (its exit status, its local port)."""
    local_port = free_udp_port()
    process = await asyncio.create_subprocess_exec(
        "timeout", "20", sipp, "-sf", str(scenario), f"{server[0]}:{server[1]}",
        "-m", "1", "-nostdin", "-s", user, "-au", user, "-ap", password,
        "-i", "127.0.0.1", "-p", str(local_port), "-timeout", "10", "-timeout_error",
        "-t", "t1" if transport == "tcp" else "u1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        cwd=scenario.parent,
    )  # fmt: skip
    return await asyncio.wait_for(process.wait(), 30), local_port
