"""The ``p2pnode`` command: one entry point, one module per command family.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds
its sub-commands; each sub-command sets ``func`` (``argparse.Namespace -> int``).
Errors a person can act on are raised as ``CliError`` and printed without a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from p2pnode.cli.common import (
    EXIT_NEGATIVE,
    EXIT_NETWORK,
    EXIT_USAGE,
    CliError,
    NegativeAnswerError,
    NetworkFailureError,
)

__all__ = ["CliError", "build_parser", "main"]

COMMAND_MODULES = (
    "p2pnode.cli.node",
    "p2pnode.cli.status",
    "p2pnode.cli.config",
    "p2pnode.cli.records",
    "p2pnode.cli.nat",
    "p2pnode.cli.relay",
    "p2pnode.cli.directory",
    "p2pnode.cli.demo",
    "p2pnode.cli.sip",
    "p2pnode.cli.app",
    "p2pnode.cli.peer",
)


EPILOG = """\
exit status: 0 ok, 1 a negative answer (not found, refused), 2 usage error,
3 network failure. Query commands accept --json; -v works after the
subcommand too. Network commands use the running node of --home when there
is one (p2pnode run), else join the DHT themselves; they say which on stderr.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pnode",
        description="A pure peer-to-peer messenger and telephone network node.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    _verbose_everywhere(subparsers)
    return parser


def _verbose_everywhere(subparsers: argparse._SubParsersAction[Any]) -> None:
    """``-v`` after the subcommand too (counted with the one before it)."""
    for command in set(subparsers.choices.values()):
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        for inner in nested:
            _verbose_everywhere(inner)
        if not nested:
            with contextlib.suppress(argparse.ArgumentError):
                command.add_argument(
                    "-v",
                    "--verbose",
                    dest="sub_verbose",
                    action="count",
                    default=0,
                    help="more log output (-vv for debug)",
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += getattr(args, "sub_verbose", 0)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: int = args.func(args)
    except NegativeAnswerError as error:
        print(f"p2pnode {args.command}: {error}", file=sys.stderr)
        return EXIT_NEGATIVE
    except NetworkFailureError as error:
        print(f"p2pnode {args.command}: network failure: {error}", file=sys.stderr)
        return EXIT_NETWORK
    except CliError as error:
        print(f"p2pnode {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return result
