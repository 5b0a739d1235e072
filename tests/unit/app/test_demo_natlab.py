"""The NAT demo's decisions and configs, without a lab: when it runs, and that every
config it writes is one `p2pnode run` accepts (parsed by the runtime's own loader)."""

from __future__ import annotations

import argparse
import os
import tomllib

import pytest

from p2pnode.app.config import parse_config
from p2pnode.cli import demo as demo_cli
from p2pnode.cli.common import CliError
from p2pnode.demo.labnode import toml_text
from p2pnode.demo.natlab import (
    BOB_CALLS,
    MAILBOX_PORT,
    PHONE_LOGIN,
    SUPERNODE_DHT_PORT,
    lab_availability,
    peer_sections,
    supernode_sections,
)
from p2pnode.identity import Identity


def test_the_lab_needs_root() -> None:
    verdict = lab_availability(1000, which=lambda tool: f"/usr/sbin/{tool}")
    assert not verdict.possible and "root" in verdict.reason


def test_the_lab_names_the_missing_tool_and_its_package() -> None:
    verdict = lab_availability(0, which=lambda tool: None if tool == "nft" else f"/sbin/{tool}")
    assert not verdict.possible
    assert "nft not found" in verdict.reason and "nftables" in verdict.reason


def test_root_with_ip_and_nft_builds_the_lab() -> None:
    assert lab_availability(0, which=lambda tool: f"/usr/sbin/{tool}").possible


def test_forcing_the_lab_without_root_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    args = argparse.Namespace(nodes=12, lookups=1, seed=1, lab=True, loopback=False)
    with pytest.raises(CliError, match=r"needs root.*sudo scripts/demo --lab"):
        demo_cli.cmd_demo(args)


def test_supernode_and_peer_configs_are_valid_node_configs() -> None:
    homes = [(Identity.generate().peer_id, f"203.0.113.{n}") for n in (2, 3)]
    bootstrap = f"203.0.113.2:{SUPERNODE_DHT_PORT}"
    gateway = supernode_sections("203.0.113.2", "", gateway=True)
    first = parse_config(tomllib.loads(toml_text(gateway)))
    second = parse_config(tomllib.loads(toml_text(supernode_sections("203.0.113.3", bootstrap))))
    assert first.node.bootstrap == () and second.node.bootstrap == (bootstrap,)
    assert first.sip.enabled and first.sip.bridge_hosted == (PHONE_LOGIN,)
    assert not second.sip.enabled
    assert second.supernode.public_ip == "203.0.113.3" and second.mailbox.serve
    assert second.presence.home == "serve"
    bob = parse_config(tomllib.loads(toml_text(peer_sections(homes, bootstrap, BOB_CALLS))))
    assert bob.presence.home == "attach"
    assert bob.presence.homes == tuple(peer for peer, _ in homes)
    assert bob.chat.mailboxes == tuple(f"{p}@{ip}:{MAILBOX_PORT}" for p, ip in homes)
    assert bob.supernode.relay_search and not bob.supernode.enabled
    assert bob.calls.auto_answer and bob.calls.record and bob.calls.answer_tone == 660.0


def test_toml_text_quotes_strings_and_refuses_what_it_cannot_write() -> None:
    text = toml_text({"presence": {"note": 'say "hi"\\now', "enabled": True, "keepalive": 2.5}})
    assert tomllib.loads(text) == {
        "presence": {"note": 'say "hi"\\now', "enabled": True, "keepalive": 2.5}
    }
    with pytest.raises(TypeError):
        toml_text({"node": {"listen": None}})
