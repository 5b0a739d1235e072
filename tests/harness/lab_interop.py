"""coturn in the lab: a reference RFC 5780 server and client to check the lab and our STUN code.

Why: a third-party classifier that agrees with the lab's labels shows the
routers are what they claim, independently of both our probe and our STUN code;
coturn's client against our server shows our server speaks RFC 5780 as others do.
"""

from __future__ import annotations

import json
import re
import subprocess

from tests.harness.netns import Host, LabError

__all__ = [
    "BEHAVIOUR_NAMES",
    "free_udp_port",
    "natdiscovery_argv",
    "parse_natdiscovery",
    "start_turnserver",
    "summary",
    "wait_for_stun",
]

# coturn's words -> RFC 4787 terms used across the lab tests.
BEHAVIOUR_NAMES = {
    "Endpoint Independent": "endpoint-independent",
    "Address Dependent": "address-dependent",
    "Address and Port Dependent": "address-and-port-dependent",
}
_MAPPING = re.compile(
    r"NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Mapping!"
)
_FILTERING = re.compile(
    r"NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Filtering!"
)
_PORT_PROBE = (
    "import socket\n"
    "a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('0.0.0.0', 0))\n"
    "b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "port = a.getsockname()[1]\n"
    "b.bind(('0.0.0.0', port + 1))\n"
    "print(port)\n"
)


def free_udp_port(host: Host, attempts: int = 20) -> int:
    """A UDP port P with P+1 also free in ``host``'s (otherwise empty) namespace.

    coturn wants a fixed ``--listening-port`` and uses P+1 as its RFC 5780
    alternate port; the kernel picks P (port 0), so we never hard-code one.
    """
    for _ in range(attempts):
        result = host.run(host.python("-c", _PORT_PROBE), timeout=10)
        if result.returncode == 0 and result.stdout.strip().isdigit():
            return int(result.stdout)
    raise LabError(f"no free UDP port pair in {host.namespace}")


_STUN_PING = (
    "import os, socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.1)\n"
    "request = bytes.fromhex('000100002112a442') + os.urandom(12)\n"
    "for _ in range(100):\n"
    "    s.sendto(request, (sys.argv[1], int(sys.argv[2])))\n"
    "    try:\n"
    "        if s.recv(2048)[8:20] == request[8:20]: sys.exit(0)\n"
    "    except TimeoutError: pass\n"
    "sys.exit(1)\n"
)


def wait_for_stun(client: Host, ip: str, port: int) -> None:
    """Block (at most ~10 s) until a STUN Binding request to ip:port is answered."""
    result = client.run(client.python("-c", _STUN_PING, ip, str(port)), timeout=20)
    if result.returncode != 0:
        raise LabError(f"no STUN server answering at {ip}:{port}: {result.stderr[-300:]}")


def start_turnserver(host: Host, port: int) -> subprocess.Popen[str]:
    """coturn as a STUN-only RFC 5780 server on the host's first two addresses."""
    if len(host.addresses) < 2:
        raise ValueError("RFC 5780 needs a host with two addresses")
    argv = ["turnserver", "--stun-only", "--no-tls", "--no-dtls", "--no-cli", "-n"]
    argv += ["--listening-port", str(port), "--log-file", "stdout", "--simple-log"]
    for address in host.addresses[:2]:
        argv += ["--listening-ip", address]
    return host.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def natdiscovery_argv(server_ip: str, port: int) -> list[str]:
    """coturn's RFC 5780 client: mapping (-m) and filtering (-f) discovery."""
    return ["timeout", "30", "turnutils_natdiscovery", "-m", "-f", "-p", str(port), server_ip]


def parse_natdiscovery(output: str) -> tuple[str | None, str | None]:
    """(mapping, filtering) in RFC 4787 terms; None where coturn got no answer."""
    mapping = _MAPPING.search(output)
    filtering = _FILTERING.search(output)
    return (
        BEHAVIOUR_NAMES[mapping.group(1)] if mapping else None,
        BEHAVIOUR_NAMES[filtering.group(1)] if filtering else None,
    )


def summary(output: str) -> str:
    """Short JSON of what coturn concluded, for assertion messages."""
    mapping, filtering = parse_natdiscovery(output)
    return json.dumps({"mapping": mapping, "filtering": filtering, "tail": output[-400:]})
