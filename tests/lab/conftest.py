"""The ``lab`` fixture: a fresh netns NAT lab per test, torn down afterwards (needs root)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.netns import Lab
from tests.harness.tools import require_root, require_tool


def require_lab_tools() -> None:
    """Root plus the tools the harness shells out to (skip loudly, fail in CI)."""
    require_root()
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    require_tool("tc", "iproute2")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A Lab with unique names; everything it built is removed after the test."""
    require_lab_tools()
    with Lab() as topology:
        yield topology
