"""The ``p2pnode`` command: one entry point, one module per command family.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds
its sub-commands; each sub-command sets ``func`` (``argparse.Namespace -> int``).
Errors a person can act on are raised as ``CliError`` and printed without a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from p2pnode.cli.common import CliError

__all__ = ["CliError", "build_parser", "main"]

COMMAND_MODULES = (
    "p2pnode.cli.node",
    "p2pnode.cli.records",
    "p2pnode.cli.nat",
    "p2pnode.cli.relay",
    "p2pnode.cli.directory",
    "p2pnode.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pnode",
        description="A pure peer-to-peer messenger and telephone network node.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: int = args.func(args)
    except CliError as error:
        print(f"p2pnode {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result
