"""The ``p2pnode`` command: one entry point, one module per command family.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds
its sub-commands; each sub-command sets ``func`` (``argparse.Namespace -> int``).
``COMMANDS`` names the module of each top-level command, so that ``p2pnode
status`` imports the status module alone rather than aiortc, aiohttp and the
demo (a command started in ~0.3 s instead of ~2.8 s); ``p2pnode --help`` and an
unknown command still import them all.
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

__all__ = ["COMMANDS", "COMMAND_MODULES", "CliError", "build_parser", "main"]

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
    "p2pnode.cli.settings",
    "p2pnode.cli.mailboxes",
)

# Which module registers each top-level command (tests/unit/app/test_cli_conventions.py
# checks this table against what the modules really register).
COMMANDS: dict[str, str] = {
    **dict.fromkeys(("id", "init", "run"), "p2pnode.cli.node"),
    "status": "p2pnode.cli.status",
    "config": "p2pnode.cli.config",
    "record": "p2pnode.cli.records",
    **dict.fromkeys(("nat", "stun"), "p2pnode.cli.nat"),
    "relay": "p2pnode.cli.relay",
    **dict.fromkeys(("enum", "name", "verifier"), "p2pnode.cli.directory"),
    "demo": "p2pnode.cli.demo",
    "sip": "p2pnode.cli.sip",
    "app": "p2pnode.cli.app",
    **dict.fromkeys(
        ("answer", "call", "chat", "contacts", "hangup", "history", "inbox", "ping",
         "presence", "send"),
        "p2pnode.cli.peer",
    ),
    "settings": "p2pnode.cli.settings",
    "mailboxes": "p2pnode.cli.mailboxes",
}  # fmt: skip

EPILOG = """\
exit status: 0 ok, 1 a negative answer (not found, refused), 2 usage error,
3 network failure. Query commands accept --json; -v works after the
subcommand too. Network commands use the running node of --home when there
is one (p2pnode run), else join the DHT themselves; they say which on stderr.
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or only ``command``'s module when it is a known command."""
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
    names = [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES
    for name in names:
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
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in arguments if not word.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(arguments)
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
