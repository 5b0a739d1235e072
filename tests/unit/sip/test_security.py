"""The gateway's guard: scanner User-Agents, failure bans per IP and per login, pike density."""

from __future__ import annotations

from p2pnode.gateways.sip.security import Decision, Guard, GuardConfig, is_scanner


def test_scanner_user_agents_are_dropped_and_counted() -> None:
    guard = Guard()
    for agent in ("friendly-scanner", "sipvicious", "SIPVicious svmap", "VaxSIPUserAgent/3.1"):
        assert is_scanner(agent)
        assert guard.admit("192.0.2.1", agent, 0.0) is Decision.SCANNER
    assert guard.admit("192.0.2.1", "Yealink SIP-T46S 66.86", 0.0) is Decision.ACCEPT
    assert guard.admit("192.0.2.1", None, 0.0) is Decision.ACCEPT
    assert dict(guard.statistics(0.0).dropped) == {"scanner user-agent": 4}


def test_repeated_auth_failures_ban_the_source_until_the_ban_expires() -> None:
    guard = Guard(GuardConfig(max_ip_failures=3, ban_seconds=60.0))
    assert not guard.auth_failed("192.0.2.7", "alice", 0.0)
    assert not guard.auth_failed("192.0.2.7", "bob", 1.0)
    assert guard.auth_failed("192.0.2.7", "carol", 2.0)  # third: banned now
    assert guard.admit("192.0.2.7", None, 3.0) is Decision.BANNED
    assert guard.admit("192.0.2.8", None, 3.0) is Decision.ACCEPT  # others unaffected
    assert guard.admit("192.0.2.7", None, 62.5) is Decision.ACCEPT


def test_failures_outside_the_window_do_not_add_up() -> None:
    guard = Guard(GuardConfig(max_ip_failures=3, failure_window=10.0))
    for t in (0.0, 20.0, 40.0, 60.0):
        assert not guard.auth_failed("192.0.2.7", "alice", t)
    assert not guard.banned("192.0.2.7", 61.0)


def test_a_distributed_cracker_locks_the_login() -> None:
    guard = Guard(GuardConfig(max_account_failures=4, ban_seconds=30.0))
    for index in range(4):
        guard.auth_failed(f"192.0.2.{index}", "alice", float(index))
    assert guard.account_locked("alice", 5.0)
    assert not guard.account_locked("bob", 5.0)
    assert not guard.account_locked("alice", 40.0)


def test_request_density_bans_a_flooding_source() -> None:
    guard = Guard(GuardConfig(max_requests=10, density_window=1.0, ban_seconds=5.0))
    decisions = [guard.admit("192.0.2.9", None, i * 0.01) for i in range(12)]
    assert decisions[:10] == [Decision.ACCEPT] * 10
    assert decisions[10] is Decision.DENSITY
    assert decisions[11] is Decision.BANNED
    # A steady, slower source is never banned.
    steady = Guard(GuardConfig(max_requests=10, density_window=1.0))
    assert all(steady.admit("192.0.2.10", None, i * 0.2) is Decision.ACCEPT for i in range(100))
