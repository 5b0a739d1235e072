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
