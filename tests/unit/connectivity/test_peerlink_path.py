"""What a link reports about its path and timing (pure parts of PeerLink)."""

from __future__ import annotations

import pytest

from p2pnode.connectivity.ice_servers import TurnTransport
from p2pnode.connectivity.peerlink import CandidateKind, LinkPath, LinkTimings

H, S, P, R = CandidateKind.HOST, CandidateKind.SRFLX, CandidateKind.PRFLX, CandidateKind.RELAY
LOCAL, REMOTE, RELAY = ("10.1.0.2", 5000), ("203.0.113.9", 6000), ("203.0.113.2", 3478)


@pytest.mark.parametrize(
    ("local", "remote", "direct"),
    [(H, H, True), (H, S, True), (S, P, True), (R, H, False), (H, R, False), (R, R, False)],
)
def test_direct_means_no_relay_at_either_end(
    local: CandidateKind, remote: CandidateKind, direct: bool
) -> None:
    path = LinkPath(local, remote, LOCAL, REMOTE, None, "", None)
    assert path.direct is direct


def test_describe_names_the_relay_and_its_transport() -> None:
    ours = LinkPath(R, S, LOCAL, REMOTE, RELAY, "supernode-7", TurnTransport.TCP)
    assert ours.describe() == "relayed via supernode-7 (tcp, ours)"
    unnamed = LinkPath(R, S, LOCAL, REMOTE, RELAY, "", TurnTransport.UDP)
    assert unnamed.describe() == "relayed via 203.0.113.2:3478 (udp, ours)"
    theirs = LinkPath(H, R, LOCAL, REMOTE, REMOTE, "", None)
    assert theirs.describe() == "relayed via 203.0.113.9 (theirs)"
    assert LinkPath(H, P, LOCAL, REMOTE, None, "", None).describe() == "direct host->prflx"


def test_timings() -> None:
    timings = LinkTimings(started=10.0, offer_sent=10.05, opened=10.30)
    assert timings.setup_ms == pytest.approx(250.0)
    assert timings.total_ms == pytest.approx(300.0)
