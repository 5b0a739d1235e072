"""`p2pnode` sub-commands of this family (filled in by the issue that owns it)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this family's sub-commands (none yet)."""
