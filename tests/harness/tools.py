"""Find third-party tools and root, or skip loudly (fail in CI, where they must be there).

CI sets ``P2PNODE_REQUIRE_TOOLS=1`` after installing the Debian packages, so a
missing tool there is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["require_root", "require_tool", "tools_required"]


def tools_required() -> bool:
    return os.environ.get("P2PNODE_REQUIRE_TOOLS") == "1"


def _missing(reason: str) -> None:
    message = f"SKIPPED LOUDLY: {reason}"
    if tools_required():
        pytest.fail(f"{reason} (P2PNODE_REQUIRE_TOOLS=1: CI must provide it)")
    pytest.skip(message)


def require_tool(name: str, package: str | None = None) -> str:
    """Path of executable ``name``; skip (or fail in CI) naming the Debian package."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        _missing(f"{name} not found: apt-get install {package or name}")
        raise AssertionError("unreachable")
    return path


def require_root() -> None:
    """Lab tests build network namespaces: they need root."""
    if os.geteuid() != 0:
        _missing("the netns lab needs root (run the tests as root, as CI does)")
