"""The phone leg's RTCP socket when the phone did not take rtcp-mux: :class:`RtcpPort`.

Why a socket of its own: most desk phones and DECT bases offer no
``a=rtcp-mux`` (RFC 5761) and send RTCP to the port in our ``a=rtcp`` (RFC
3605) or to RTP port + 1 (RFC 3550 §11). The leg binds this socket next to
its RTP port (RTP + 1 when free, so a phone that ignores ``a=rtcp`` still
reaches it) and announces it in ``a=rtcp`` either way. Every datagram goes to
the same sans-IO :class:`~p2pnode.gateways.sip.bridge_rtcp.RtcpSession` as
the muxed path; this adapter only adds the socket and the source rule.

Source rule (the relay's latching, RFC 4961 symmetric RTCP): reports go to
the address the phone's SDP named (its ``a=rtcp``, else RTP + 1); a datagram
is read only from that IP, and its first one fixes the port our reports go
to (a NAT may rewrite it). Anything else is dropped and counted. Nothing is
held per datagram: the session keeps the latest report only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["RtcpPort"]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, port: RtcpPort) -> None:
        self._port = port

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._port.datagram_received(data, (str(addr[0]), int(str(addr[1]))))


class RtcpPort:
    """One UDP socket for a leg's RTCP: the phone's reports in, ours out."""

    def __init__(self, on_report: Callable[[bytes], None]) -> None:
        self._on_report = on_report
        self._transport: asyncio.DatagramTransport | None = None
        self._remote: tuple[str, int] | None = None
        self._latched = False
        self.received = 0  # datagrams passed to the session
        self.sent = 0
        self.wrong_source = 0  # dropped: not from the phone's signalled IP (or none yet)

    @property
    def local_port(self) -> int:
        assert self._transport is not None, "open() first"
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._remote

    @property
    def is_closed(self) -> bool:
        return self._transport is not None and self._transport.is_closing()

    async def open(self, host: str, rtp_port: int) -> int:
        """Bind next to ``rtp_port`` (RTP + 1 if free, else any port); our RTCP port."""
        loop = asyncio.get_running_loop()
        for port in (rtp_port + 1, 0) if rtp_port < 65535 else (0,):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), local_addr=(host, port)
                )
            except OSError:
                continue
            self._transport = transport
            return self.local_port
        raise OSError("no UDP port for RTCP")

    def set_remote(self, remote: tuple[str, int]) -> None:
        """Where the phone's SDP said its RTCP is (RFC 3605 ``a=rtcp``, else RTP + 1)."""
        self._remote = remote
        self._latched = False

    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        remote = self._remote
        if remote is None or source[0] != remote[0]:
            self.wrong_source += 1
            return
        if not self._latched:
            self._remote = source  # RFC 4961: answer where the phone's reports come from
            self._latched = True
        elif source != remote:
            self.wrong_source += 1
            return
        self.received += 1
        self._on_report(data)

    def send(self, data: bytes) -> None:
        transport, remote = self._transport, self._remote
        if transport is not None and not transport.is_closing() and remote is not None:
            transport.sendto(data, remote)
            self.sent += 1

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
