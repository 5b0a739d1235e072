"""Which links hold relayed checks back: only those where a direct path could exist."""

from __future__ import annotations

import pytest
from aioice import Candidate, Connection

from p2pnode.connectivity import ice_tuning


def candidate(kind: str, host: str) -> Candidate:
    return Candidate("f", 1, "udp", 1, host, 5000, kind)


@pytest.mark.parametrize(
    ("kind", "host", "reachable"),
    [
        ("host", "203.0.113.7", True),  # a public host address
        ("host", "10.1.0.2", False),
        ("host", "192.168.1.9", False),
        ("host", "100.64.3.3", False),  # CGNAT
        ("host", "fe80::1", False),
        ("host", "2001:db8::5", True),
        ("host", "peer.local", True),  # cannot tell: assume it could
        ("srflx", "203.0.113.9", True),
        ("prflx", "10.9.9.9", True),
        ("relay", "203.0.113.2", False),
    ],
)
def test_outside_reachable(kind: str, host: str, reachable: bool) -> None:
    assert ice_tuning.outside_reachable(candidate(kind, host)) is reachable


def test_direct_possible_needs_both_ends() -> None:
    connection = Connection(ice_controlling=True)
    connection._local_candidates = [
        candidate("host", "10.1.0.2"),
        candidate("relay", "203.0.113.2"),
    ]
    connection._remote_candidates = [candidate("srflx", "203.0.113.9")]
    # UDP blocked here: no srflx, site-local host only.
    assert not ice_tuning.direct_possible(connection)
    connection._local_candidates.append(candidate("srflx", "203.0.113.5"))
    assert ice_tuning.direct_possible(connection)
    connection._remote_candidates = [
        candidate("host", "10.2.0.2"),
        candidate("relay", "203.0.113.3"),
    ]
    assert not ice_tuning.direct_possible(connection)


def test_hold_is_validated_and_install_is_idempotent() -> None:
    with pytest.raises(ValueError, match="hold"):
        ice_tuning.hold_relayed_checks(Connection(ice_controlling=True), -1.0)
    ice_tuning.install()
    wrapped = Connection.check_start
    ice_tuning.install()
    assert Connection.check_start is wrapped and ice_tuning.installed()
