"""The configuration file: every mistake reported at once, flags override, defaults documented."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.app.config import (
    ConfigError,
    NodeConfig,
    default_control_port,
    hostport,
    load_config,
    parse_config,
)
from p2pnode.app.services import DhtService
from p2pnode.cli.config import to_toml
from p2pnode.identity import Identity

THREE_MISTAKES = """
[node]
listen = "127.0.0.1:99999"

[relay]
capacity = 0

[enum]
enabled = true
rate_limt = 5
"""


def test_three_mistakes_are_reported_together_with_their_paths(tmp_path: Path) -> None:
    path = tmp_path / "p2pnode.toml"
    path.write_text(THREE_MISTAKES)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = {p.path: p.reason for p in caught.value.problems}
    assert set(problems) == {"node.listen", "relay.capacity", "enum.rate_limt"}
    assert "0-65535" in problems["node.listen"]
    assert "greater than or equal to 1" in problems["relay.capacity"]
    assert "Extra inputs" in problems["enum.rate_limt"]
    assert all("\n" not in reason for reason in problems.values())


def test_config_check_prints_every_mistake_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(THREE_MISTAKES)
    done = subprocess.run(
        [sys.executable, "-m", "p2pnode", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert "3 problem(s)" in done.stdout
    for where in ("node.listen:", "relay.capacity:", "enum.rate_limt:"):
        assert where in done.stdout


def test_toml_syntax_errors_are_one_problem_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[node\nlisten = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 1
    assert "line 1" in str(caught.value.problems[0])


def test_cross_field_rule_and_types() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"supernode": {"stun_alt_ip": "192.0.2.1", "public_ip": "nope"}})
    reasons = {str(p) for p in caught.value.problems}
    assert "supernode.public_ip: not an IP address" in reasons
    with pytest.raises(ConfigError, match=r"enum\.trust\.0: not a peer id"):
        parse_config({"enum": {"trust": ["abc"]}})


def test_flags_override_the_file_and_are_validated_too() -> None:
    config = parse_config({"relay": {"capacity": 7, "realm": "example"}})
    changed = config.override({"relay": {"capacity": 9}})
    assert changed.relay.capacity == 9 and changed.relay.realm == "example"
    assert config.relay.capacity == 7  # frozen: the original is unchanged
    with pytest.raises(ConfigError, match=r"relay\.capacity"):
        config.override({"relay": {"capacity": 0}})


def test_show_output_parses_back_to_the_same_configuration() -> None:
    config = parse_config(
        {
            "node": {"bootstrap": ["192.0.2.1:4000"]},
            "log": {"modules": {"p2pnode.dht": "debug"}},
            "metrics": {"listen": "127.0.0.1:9100"},
        }
    )
    data = tomllib.loads(to_toml(config))
    assert parse_config(data) == config
    assert parse_config(tomllib.loads(to_toml(NodeConfig()))) == NodeConfig()


def test_control_ports_differ_between_homes_and_stay_the_same_for_one(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert default_control_port(one) == default_control_port(one)
    assert default_control_port(one) != default_control_port(two)
    assert 20000 <= default_control_port(one) < 30000


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:53", ("::1", 53)), (":9", ("0.0.0.0", 9))],
)
def test_hostport(text: str, expected: tuple[str, int]) -> None:
    assert hostport(text) == expected


@pytest.mark.parametrize("text", ["nocolon", "1.2.3.4:x", "1.2.3.4:70000", "example.org:1"])
def test_hostport_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        hostport(text)


def test_docs_reference_is_the_generated_one() -> None:
    from p2pnode.app.config import reference_markdown

    docs = (Path(__file__).resolve().parents[3] / "docs" / "runtime.md").read_text()
    inside = docs.split("<!-- reference:start -->\n")[1].split("<!-- reference:end -->")[0]
    assert inside.strip() == reference_markdown().strip(), "run: p2pnode config reference"


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=3),
    max_leaves=10,
)  # fmt: skip
_SECTIONS = st.sampled_from([*NodeConfig.model_fields, "unknown"])
_KEYS = st.sampled_from(["listen", "port", "enabled", "capacity", "stun", "users", "level", "x"])


@given(st.dictionaries(_SECTIONS, st.dictionaries(_KEYS, _VALUES, max_size=4) | _VALUES,
                       max_size=4))  # fmt: skip
def test_any_file_content_gives_a_config_or_config_errors(data: dict[str, object]) -> None:
    try:
        parse_config(data)
    except ConfigError as error:
        assert error.problems and all(p.reason and "\n" not in p.reason for p in error.problems)


def test_the_example_config_in_contrib_is_valid() -> None:
    example = Path(__file__).resolve().parents[3] / "contrib" / "p2pnode.toml.example"
    config = load_config(example)
    assert config.enum.enabled and config.metrics.listen == "127.0.0.1:9464"


def test_dht_disjoint_paths_reach_the_running_dht(tmp_path: Path) -> None:
    """[dht] disjoint_paths / disjoint_puts are what the node's DHT uses (issue 10)."""
    config = parse_config(
        {"node": {"listen": "127.0.0.1:0"}, "dht": {"disjoint_paths": 3, "disjoint_puts": True}}
    )
    service = DhtService(Identity.generate(), tmp_path, config)
    assert service.node.config.disjoint_paths == 3 and service.node.config.disjoint_puts
    assert NodeConfig().dht.disjoint_paths == 2 and not NodeConfig().dht.disjoint_puts
    with pytest.raises(ConfigError) as refused:
        parse_config({"dht": {"disjoint_paths": 9}})
    assert "dht.disjoint_paths" in str(refused.value)
