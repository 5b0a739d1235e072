"""[dht] id_difficulty: validated, reaching the DHT, and a node whose id lacks the bits
running as a DHT client (never a relay supernode) and saying why; `p2pnode init` grinds.

Scaled down where an identity is ground: 6 or 8 bits (not the network's 16).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from p2pnode.app.config import ConfigError, NodeConfig, parse_config
from p2pnode.app.runtime import assemble
from p2pnode.cli import main
from p2pnode.dht.puzzle import DEFAULT_ID_DIFFICULTY, id_meets
from p2pnode.identity import Identity

BITS = 6


def weak_identity(seed: int = 1) -> Identity:
    rng = random.Random(seed)
    while True:
        identity = Identity.generate(rng.randbytes(32))
        if not id_meets(identity.node_id, BITS):
            return identity


def strong_identity(seed: int = 1) -> Identity:
    return Identity.generate_meeting(BITS, seeds=random.Random(seed).randbytes)


def test_the_keys_are_validated() -> None:
    assert NodeConfig().dht.id_difficulty == DEFAULT_ID_DIFFICULTY == 16
    assert not NodeConfig().dht.puzzle_loopback
    for bad in (-1, 33, "many"):
        with pytest.raises(ConfigError) as refused:
            parse_config({"dht": {"id_difficulty": bad}})
        assert "dht.id_difficulty" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        parse_config({"dht": {"puzzle_loopback": "sometimes"}})
    assert "dht.puzzle_loopback" in str(refused.value)


def test_an_unground_node_at_a_public_address_becomes_a_client_and_no_relay() -> None:
    config = parse_config({"node": {"listen": "0.0.0.0:4000"}, "dht": {"id_difficulty": BITS}})
    effective, why = config.for_node_id(weak_identity().node_id)
    assert why is not None and "puzzle bits" in why and "p2pnode init --replace" in why
    assert effective.node.client and not effective.supernode.relay
    assert not config.node.client and config.supernode.relay  # the file's config unchanged
    # A ground id, a loopback listener (exempt) and a node that is a client anyway: unchanged.
    assert config.for_node_id(strong_identity().node_id) == (config, None)
    local = parse_config({"node": {"listen": "127.0.0.1:0"}, "dht": {"id_difficulty": BITS}})
    assert local.for_node_id(weak_identity().node_id) == (local, None)
    strict = local.override({"dht": {"puzzle_loopback": True}})
    assert strict.for_node_id(weak_identity().node_id)[0].node.client
    client = config.override({"node": {"client": True}})
    assert client.for_node_id(weak_identity().node_id) == (client, None)


def test_the_running_dht_gets_the_difficulty_and_client_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What `p2pnode run` assembles (nothing is bound until it starts)."""
    config = parse_config(
        {"node": {"listen": "0.0.0.0:0"}, "dht": {"id_difficulty": BITS, "puzzle_loopback": True}}
    )
    with caplog.at_level(logging.WARNING, logger="p2pnode.app.runtime"):
        weak = assemble(tmp_path / "weak", config, weak_identity())
    dht = weak.dht.node.config
    assert dht.client_mode and dht.id_difficulty == BITS and dht.puzzle_loopback
    assert weak.config.node.client and not weak.config.supernode.relay
    assert [r for r in caplog.records if "puzzle bits" in r.getMessage()]
    strong = assemble(tmp_path / "strong", config, strong_identity())
    assert not strong.dht.node.config.client_mode and strong.config.supernode.relay


def test_init_grinds_a_server_identity_and_replace_keeps_the_old_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "node"
    assert main(["init", "--home", str(home), "--client"]) == 0
    first = Identity.load(home)
    capsys.readouterr()
    assert main(["init", "--home", str(home), "--difficulty", "8"]) == 0  # keeps it
    out = capsys.readouterr().out
    assert "already initialised" in out and Identity.load(home).public_key == first.public_key
    if not id_meets(first.node_id, 8):  # 255 times in 256: says how to make a server id
        assert "p2pnode init --replace" in out
    assert main(["init", "--home", str(home), "--difficulty", "8", "--replace"]) == 0
    out = capsys.readouterr().out
    second = Identity.load(home)
    assert id_meets(second.node_id, 8)
    if second.public_key != first.public_key:
        assert "grinding a DHT server identity (8 puzzle bits" in out
        kept = home / f"identity.key.{first.fingerprint}.old"
        assert kept.exists() and first.peer_id in out
    # Again: the identity meets the bits, so it is kept.
    assert main(["init", "--home", str(home), "--difficulty", "8", "--replace"]) == 0
    assert Identity.load(home).public_key == second.public_key
    fresh = tmp_path / "fresh"
    assert main(["init", "--home", str(fresh), "--difficulty", "8"]) == 0
    assert id_meets(Identity.load(fresh).node_id, 8)
