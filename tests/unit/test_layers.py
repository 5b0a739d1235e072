"""Imports flow one way: nat <- relay <- p2pnode, and inside p2pnode along the data.

A lower layer importing a higher one fails here, naming the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PACKAGE_RANK = {"nat": 0, "relay": 1, "p2pnode": 2}
P2PNODE_LAYERS = (
    "identity",
    "records",
    "dht",
    "directory",
    "connectivity",
    "sessions",
    "gateways",
    "app",
    "lab",
    "demo",
    "cli",
)


def rank(module: str) -> tuple[int, int] | None:
    """(package rank, layer rank inside p2pnode) of a dotted module name, None if foreign."""
    parts = module.split(".")
    if parts[0] not in PACKAGE_RANK:
        return None
    if parts[0] != "p2pnode":
        return (PACKAGE_RANK[parts[0]], 0)
    if len(parts) == 1:
        return (PACKAGE_RANK["p2pnode"], -1)  # the package root (version string only)
    if parts[1] == "__main__":
        return (PACKAGE_RANK["p2pnode"], len(P2PNODE_LAYERS))
    if parts[1] not in P2PNODE_LAYERS:
        raise AssertionError(f"p2pnode.{parts[1]} is in no layer: add it to P2PNODE_LAYERS")
    return (PACKAGE_RANK["p2pnode"], P2PNODE_LAYERS.index(parts[1]))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, own: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                found.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.append(node.module)
    return found


def all_sources() -> list[Path]:
    return sorted(p for pkg in PACKAGE_RANK for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", all_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path: Path) -> None:
    own = module_name(path)
    own_rank = rank(own)
    assert own_rank is not None
    for imported in imported_modules(path, own):
        other = rank(imported)
        if other is None or imported == "p2pnode":
            continue
        assert other <= own_rank, f"{own} (layer {own_rank}) imports higher layer {imported}"


def test_rank_catches_a_violation() -> None:
    """The checker itself can fail: nat importing relay is ranked upward."""
    nat_rank, relay_rank = rank("nat.stun"), rank("relay.server")
    assert nat_rank is not None and relay_rank is not None
    assert relay_rank > nat_rank
    dht, directory = rank("p2pnode.dht.node"), rank("p2pnode.directory.numbers")
    assert dht is not None and directory is not None
    assert directory > dht


# Sans-IO cores: bytes, addresses and ``now`` in; events, datagrams and deadlines out.
# They never do I/O or read the clock themselves (STYLE 1 and 2). Not listed yet:
# relay/auth.py (reads the wall clock for REST credentials) and dht/messages.py
# (uses socket.inet_pton/ntop only), both named in issue 9's review.
SANS_IO_CORES = (
    "nat/stun/message.py",
    "nat/stun/attributes.py",
    "nat/stun/server.py",
    "nat/stun/transaction.py",
    "nat/reachability.py",
    "relay/server.py",
    "relay/forwarding.py",
    "relay/supernode.py",
    "relay/allocation.py",
    "relay/routes.py",
    "relay/requests.py",
    "relay/quota.py",
    "relay/channeldata.py",
    "p2pnode/dht/protocol.py",
    "p2pnode/dht/routing.py",
    "p2pnode/dht/storage.py",
    "p2pnode/dht/lookup.py",
    "p2pnode/gateways/enumdns/core.py",
    "p2pnode/records/policy.py",
)
FORBIDDEN_IN_CORES = ("asyncio", "socket", "time")


@pytest.mark.parametrize("relative", SANS_IO_CORES)
def test_sans_io_cores_do_no_io_and_read_no_clock(relative: str) -> None:
    path = ROOT / relative
    imported = imported_modules(path, module_name(path))
    bad = [m for m in imported if m.split(".")[0] in FORBIDDEN_IN_CORES]
    assert not bad, f"{relative} is a sans-IO core but imports {bad}"


def test_the_sans_io_check_can_fail() -> None:
    """The checker sees an asyncio import where there is one (the runtime's node)."""
    path = ROOT / "p2pnode/app/node.py"
    assert "asyncio" in imported_modules(path, module_name(path))
