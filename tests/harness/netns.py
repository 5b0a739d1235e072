"""The netns NAT lab for the tests: re-exported from ``p2pnode.lab.netns``, where it lives.

Why a re-export: ``p2pnode demo`` builds the same lab, and the package cannot
import the tests; every lab test keeps importing from here unchanged.
"""

from __future__ import annotations

from p2pnode.lab.netns import (
    LAN_PREFIX,
    PUBLIC_NETWORK,
    STATE_DIR,
    Host,
    Lab,
    LabError,
    NatType,
    cleanup_stale,
    list_labs,
    read_line,
    remove_lab,
)

__all__ = [
    "LAN_PREFIX",
    "PUBLIC_NETWORK",
    "STATE_DIR",
    "Host",
    "Lab",
    "LabError",
    "NatType",
    "cleanup_stale",
    "list_labs",
    "read_line",
    "remove_lab",
]
