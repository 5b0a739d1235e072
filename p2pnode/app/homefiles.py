"""The files a running node keeps in its home for local clients (the CLI, the app).

A module of its own, importing nothing heavy, so a CLI command that only asks
the running node does not pay for importing the runtime (aiohttp, the services).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONTROL_FILE", "TOKEN_FILE", "read_token"]

TOKEN_FILE = "control.token"  # noqa: S105 (a file name, not a secret)
CONTROL_FILE = "control.json"  # {"url": ..., "pid": ...} while the node runs


def read_token(home: Path) -> str | None:
    """The control API token of the node running in ``home`` (None: none readable)."""
    try:
        return (home / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None
