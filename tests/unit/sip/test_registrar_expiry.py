"""The registrar says when its next binding lapses; ``expire`` drops exactly what has.

Virtual time: the caller's clock is a number. The gateway's timer (an asyncio
``call_at`` at ``next_expiry()``) is proven on loopback in
``tests/integration/sip/test_gateway_expiry.py``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.gateways.sip.registrar import Registrar
from tests.unit.sip.test_registrar import make_registrar, register

CONTACTS = ("<sip:alice@10.0.0.2:5060>", "<sip:alice@10.0.0.3:5060>")


def test_a_refresh_moves_the_deadline_and_expiry_tells_the_listeners() -> None:
    registrar = make_registrar()
    changed: list[str] = []
    registrar.listeners.append(changed.append)
    register(registrar, 0.0, expires="60", call_id="a")
    register(registrar, 10.0, user="bob", contacts=("<sip:bob@10.0.0.9>",), expires="120")
    assert registrar.next_expiry() == 60.0
    register(registrar, 30.0, expires="90", call_id="a", cseq=2)  # alice refreshes
    assert registrar.next_expiry() == 120.0  # the stale 60 is skipped, bob's 130 is later
    changed.clear()
    assert registrar.expire(60.0) == []  # the early wake-up finds nothing
    assert changed == []
    gone = registrar.expire(120.0)
    assert [(user, str(b.contact)) for user, b in gone] == [("alice", CONTACTS[0][1:-1])]
    assert changed == ["alice"]  # presence hears the expiry like any other change
    assert registrar.bindings("alice", 120.0) == () and registrar.registered_accounts() == 1
    assert registrar.next_expiry() == 130.0
    registrar.expire(130.0)
    assert registrar.registered_accounts() == 0 and registrar.next_expiry() is None


def test_removed_bindings_leave_no_deadline() -> None:
    registrar = make_registrar()
    register(registrar, 0.0, expires="60")
    register(registrar, 1.0, contacts=("*",), expires="0", call_id="x")
    assert registrar.next_expiry() is None and registrar.expire(1000.0) == []


def live(registrar: Registrar, now: float) -> list[float]:
    return [b.expires_at for user in ("alice", "bob") for b in registrar.bindings(user, now)]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(("alice", "bob")),
            st.sampled_from((0, 1)),
            st.sampled_from((0, 60, 61, 90, 300)),
            st.floats(min_value=0.0, max_value=120.0),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_next_expiry_is_the_earliest_live_binding(
    steps: list[tuple[str, int, int, float]],
) -> None:
    """Registrations, refreshes and removals in any order: ``next_expiry`` is the minimum
    of the live bindings' deadlines, and ``expire(now)`` returns exactly the lapsed ones."""
    registrar = make_registrar()
    now = 0.0
    for number, (user, which, expires, wait) in enumerate(steps, start=1):
        before = {(u, str(b.contact), b.expires_at) for u in ("alice", "bob")
                  for b in registrar.bindings(u, float("-inf"))}  # fmt: skip
        now += wait
        gone = registrar.expire(now)
        lapsed = {(u, c, at) for u, c, at in before if at <= now}
        assert {(u, str(b.contact), b.expires_at) for u, b in gone} == lapsed
        contact = CONTACTS[which].replace("alice", user)
        register(registrar, now, user=user, contacts=(contact,), expires=str(expires),
                 call_id=f"{user}{which}", cseq=number)  # fmt: skip
        deadlines = live(registrar, now)
        assert registrar.next_expiry() == (min(deadlines) if deadlines else None)
