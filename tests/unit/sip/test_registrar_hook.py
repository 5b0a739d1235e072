"""The registrar's change hook: listeners hear of every change of a login's bindings."""

from __future__ import annotations

from p2pnode.gateways.sip.headers import parse_uri
from tests.unit.sip.test_registrar import make_registrar, register


def test_listeners_hear_adds_refreshes_removals_and_expiry_but_not_queries() -> None:
    registrar = make_registrar()
    heard: list[str] = []
    registrar.listeners.append(heard.append)
    register(registrar, 0.0, authenticate=False)  # 401: nothing changed
    assert heard == []
    register(registrar, 0.0, call_id="reg-1")
    assert heard == ["alice"]
    register(registrar, 10.0, call_id="reg-1", cseq=5)  # a refresh moves the expiry
    assert heard == ["alice"] * 2
    register(registrar, 11.0, call_id="reg-q", contacts=())  # a query changes nothing
    assert heard == ["alice"] * 2
    register(registrar, 12.0, user="bob", call_id="reg-b", contacts=("<sip:bob@10.0.0.3>",))
    assert heard[-1] == "bob"
    assert registrar.remove("bob", parse_uri("sip:bob@10.0.0.3"))
    assert heard[-1] == "bob" and len(heard) == 4
    assert not registrar.remove("bob", parse_uri("sip:bob@10.0.0.3"))  # already gone
    assert len(heard) == 4
    registrar.expire(100.0)  # alice's binding runs to 610: nothing expires
    assert len(heard) == 4
    registrar.expire(700.0)
    assert heard[-1] == "alice" and len(heard) == 5
    assert registrar.bindings("alice", 700.0) == ()


def test_unregistering_with_expires_zero_is_heard() -> None:
    registrar = make_registrar()
    heard: list[str] = []
    registrar.listeners.append(heard.append)
    register(registrar, 0.0, call_id="reg-1")
    register(registrar, 1.0, call_id="reg-2", expires="0")
    assert heard == ["alice", "alice"]
    assert registrar.bindings("alice", 1.0) == ()
