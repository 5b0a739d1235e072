"""The [presence], [mailbox], [chat] and [calls] sections: what they accept, what they
refuse, and the client-mode decision taken at start."""

from __future__ import annotations

import pytest

from p2pnode.app.config import ConfigError, parse_config
from p2pnode.app.peer_services import effective_config, home_role
from p2pnode.identity import Identity

PEER = Identity.generate(bytes(32)).peer_id


def test_defaults_host_nothing() -> None:
    config = parse_config({})
    assert not config.presence.enabled and not config.chat.enabled
    assert not config.mailbox.serve and not config.calls.enabled
    assert effective_config(config) == config


def test_an_attaching_node_runs_its_dht_as_a_client() -> None:
    config = parse_config({"presence": {"enabled": True, "homes": [PEER]}})
    assert home_role(config) == "attach"
    assert not config.node.client
    assert effective_config(config).node.client


def test_a_public_node_serves_and_stays_a_full_dht_node() -> None:
    config = parse_config({"presence": {"enabled": True}, "supernode": {"public_ip": "192.0.2.7"}})
    assert home_role(config) == "serve"
    assert not effective_config(config).node.client


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("presence", {"homes": ["not-a-peer-id"]}),
        ("presence", {"listen": "example.org:5000"}),
        ("presence", {"status": "offline"}),
        ("presence", {"note": "x" * 141}),
        ("presence", {"keepalive": 30}),
        ("presence", {"surprise": 1}),
        ("chat", {"mailboxes": ["no-at-sign"]}),
        ("chat", {"mailboxes": [f"{PEER}@127.0.0.1"]}),
        ("chat", {"mailboxes": [f"{PEER}@127.0.0.1:70000"]}),
        ("chat", {"mailboxes": [f"{PEER}@127.0.0.1:1"] * 9}),
        ("calls", {"answer_tone": 0}),
        ("calls", {"non_contacts": "maybe"}),
        ("mailbox", {"listen": "nowhere"}),
    ],
)
def test_bad_values_are_refused(section: str, values: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        parse_config({section: values})


def test_good_values_are_kept() -> None:
    config = parse_config(
        {
            "presence": {"enabled": True, "listen": "[::1]:0", "status": "busy", "note": "n"},
            "chat": {"enabled": True, "mailboxes": [f"{PEER}@127.0.0.1:4000"]},
            "calls": {"enabled": True, "auto_answer": True, "answer_tone": 660},
        }
    )
    assert config.presence.status == "busy"
    assert config.chat.mailboxes == (f"{PEER}@127.0.0.1:4000",)
    assert config.calls.answer_tone == 660
