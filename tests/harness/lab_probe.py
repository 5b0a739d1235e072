"""Plain UDP/TCP probe programs run inside lab namespaces (standalone: stdlib only).

Why our own probe and not STUN: the lab must check that each router behaves as
labelled independently of the STUN code it is there to test.

    reflect IP1 IP2       a UDP reflector on a public host with two addresses.
                          Binds four sockets: A=(IP1,pa) B=(IP1,pb) C=(IP2,pa)
                          D=(IP2,pb), prints them as one JSON line, then answers
                          each JSON request {"id", "reply_from": "A".."D"} from
                          the named socket with {"id", "observed": [ip, port]}.
    classify IP1 IP2 PA PB  run inside a (NATed) host against a reflector; prints
                          one JSON line: mapping and filtering behaviour in
                          RFC 4787 terms, the mapped addresses, whether UDP works.
    tcp-serve IP          a TCP server: prints its port, answers each connection
                          with the peer address it sees.
    tcp-observe IP PORT   connects and prints what the server saw.
    udp-send IP PORT TEXT sends one datagram (an unsolicited packet).
    rebind IP PORT IDLE   the mapped address now, again at once, and again after
                          IDLE s of silence (has the NAT binding expired?).
    sink IP               binds IP:0, prints its port, counts datagrams until 1 s
                          of silence (at most 10 s), prints the count.
    burst IP PORT COUNT   sends COUNT small datagrams to IP:PORT.
    rtt IP PORT COUNT     COUNT request/reply round trips to a reflector socket;
                          prints the round-trip times in ms (null when lost).

Every wait is bounded: probes retry a fixed number of times with a short timeout.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time

__all__ = ["classify", "main"]

ATTEMPTS = 3
REPLY_TIMEOUT = 0.4  # s per attempt; the lab's RTT is well under a millisecond
# (an `rtt` probe through a delayed link must stay below it: delays up to ~150 ms)
SERVE_SECONDS = 120.0  # a reflector exits on its own after this long, whatever happens


def _bind(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, port))
    return sock


def reflect(ip1: str, ip2: str) -> None:
    a = _bind(ip1, 0)
    b = _bind(ip1, 0)
    pa, pb = a.getsockname()[1], b.getsockname()[1]
    # Our own fresh namespace: the same port numbers on the second address are free.
    c = _bind(ip2, pa)
    d = _bind(ip2, pb)
    sockets = {"A": a, "B": b, "C": c, "D": d}
    print(json.dumps({"A": [ip1, pa], "B": [ip1, pb], "C": [ip2, pa], "D": [ip2, pb]}), flush=True)
    deadline = time.monotonic() + SERVE_SECONDS
    while time.monotonic() < deadline:
        ready, _, _ = select.select(list(sockets.values()), [], [], 1.0)
        for sock in ready:
            data, source = sock.recvfrom(2048)
            try:
                request = json.loads(data)
                reply_from = sockets[request["reply_from"]]
                reply = json.dumps({"id": request["id"], "observed": list(source)})
            except (ValueError, KeyError, TypeError):
                continue
            reply_from.sendto(reply.encode(), source)


def _ask(
    sock: socket.socket, server: tuple[str, int], reply_from: str, ident: str
) -> tuple[str, int] | None:
    """Send a request ATTEMPTS times; the observed address from the first matching reply."""
    request = json.dumps({"id": ident, "reply_from": reply_from}).encode()
    for _ in range(ATTEMPTS):
        sock.sendto(request, server)
        ready, _, _ = select.select([sock], [], [], REPLY_TIMEOUT)
        while ready:
            data, _source = sock.recvfrom(2048)
            try:
                reply = json.loads(data)
            except ValueError:
                reply = {}
            if reply.get("id") == ident:
                ip, port = reply["observed"]
                return str(ip), int(port)
            ready, _, _ = select.select([sock], [], [], 0.0)
    return None


def classify(ip1: str, ip2: str, pa: int, pb: int) -> dict[str, object]:
    """RFC 4787 mapping and filtering behaviour as seen through the local router."""
    a, b, c = (ip1, pa), (ip1, pb), (ip2, pa)
    main_sock = _bind("0.0.0.0", 0)
    local_port = main_sock.getsockname()[1]
    m_a = _ask(main_sock, a, "A", "map-a")
    if m_a is None:
        return {"udp": False, "mapping": None, "filtering": None, "mapped": []}
    m_c = _ask(main_sock, c, "C", "map-c")  # other IP, same port
    m_b = _ask(main_sock, b, "B", "map-b")  # same IP, other port
    if m_c == m_a and m_b == m_a:
        mapping = "endpoint-independent"
    elif m_b == m_a:
        mapping = "address-dependent"
    else:
        mapping = "address-and-port-dependent"
    # Filtering: fresh sockets, so no earlier request opened a hole for B, C or D.
    other_ip = _bind("0.0.0.0", 0)
    from_other_ip = _ask(other_ip, a, "D", "filter-ip") is not None
    other_port = _bind("0.0.0.0", 0)
    from_other_port = _ask(other_port, a, "B", "filter-port") is not None
    if from_other_ip:
        filtering = "endpoint-independent"
    elif from_other_port:
        filtering = "address-dependent"
    else:
        filtering = "address-and-port-dependent"
    return {
        "udp": True,
        "mapping": mapping,
        "filtering": filtering,
        "mapped": [list(m) if m else None for m in (m_a, m_c, m_b)],
        "local_port": local_port,
        "from_other_ip": from_other_ip,
        "from_other_port": from_other_port,
    }


def tcp_serve(ip: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((ip, 0))
    server.listen(8)
    print(json.dumps({"port": server.getsockname()[1]}), flush=True)
    server.settimeout(SERVE_SECONDS)
    while True:
        try:
            conn, peer = server.accept()
        except TimeoutError:
            return
        with conn:
            conn.sendall(json.dumps({"observed": list(peer)}).encode() + b"\n")


def tcp_observe(ip: str, port: int) -> dict[str, object]:
    try:
        with socket.create_connection((ip, port), timeout=2.0) as conn:
            data = conn.makefile().readline()
    except OSError as error:
        return {"tcp": False, "error": str(error)}
    return {"tcp": True, **json.loads(data)}


def rebind(ip: str, port: int, idle: float) -> list[list[object] | None]:
    sock = _bind("0.0.0.0", 0)
    seen = [_ask(sock, (ip, port), "A", "bind-1"), _ask(sock, (ip, port), "A", "bind-2")]
    time.sleep(idle)
    seen.append(_ask(sock, (ip, port), "A", "bind-3"))
    return [list(m) if m else None for m in seen]


def sink(ip: str) -> None:
    sock = _bind(ip, 0)
    # A big receive buffer: a busy machine may not schedule us during the burst,
    # and a full buffer would drop datagrams the lab's loss rule let through.
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 1 << 22)
    except (OSError, AttributeError):  # not root: the largest buffer we are allowed
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    count = 0
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 2.0)
        if not ready:
            if count:
                break
            continue
        sock.recv(2048)
        count += 1
    print(json.dumps({"received": count}), flush=True)


def burst(ip: str, port: int, count: int) -> None:
    sock = _bind("0.0.0.0", 0)
    for index in range(count):
        sock.sendto(b"%d" % index, (ip, port))
        if index % 50 == 49:
            time.sleep(0.005)  # stay well inside socket buffers: loss must be the lab's


def rtt(ip: str, port: int, count: int) -> list[float | None]:
    sock = _bind("0.0.0.0", 0)
    times: list[float | None] = []
    for index in range(count):
        started = time.monotonic()
        got = _ask(sock, (ip, port), "A", f"rtt-{index}")
        times.append(round((time.monotonic() - started) * 1000.0, 3) if got else None)
    return times


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "reflect":
        reflect(args[0], args[1])
    elif command == "classify":
        print(json.dumps(classify(args[0], args[1], int(args[2]), int(args[3]))))
    elif command == "tcp-serve":
        tcp_serve(args[0])
    elif command == "tcp-observe":
        print(json.dumps(tcp_observe(args[0], int(args[1]))))
    elif command == "rebind":
        print(json.dumps(rebind(args[0], int(args[1]), float(args[2]))))
    elif command == "sink":
        sink(args[0])
    elif command == "burst":
        burst(args[0], int(args[1]), int(args[2]))
    elif command == "rtt":
        print(json.dumps(rtt(args[0], int(args[1]), int(args[2]))))
    elif command == "udp-send":
        _bind("0.0.0.0", 0).sendto(args[2].encode(), (args[0], int(args[1])))
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
