"""`p2pnode config check [FILE]` and `p2pnode config show [--defaults]`.

``check`` reports every mistake at once (path and a one-line reason), exit 2 if
any; ``show`` prints the effective configuration of the home (or the defaults)
as TOML, so an operator can start from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from p2pnode.app.config import (
    CONFIG_FILE,
    ConfigError,
    NodeConfig,
    load_config,
    reference_markdown,
)
from p2pnode.cli.common import EXIT_OK, EXIT_USAGE, CliError, add_home_argument
from p2pnode.identity import default_home

__all__ = ["config_path", "load_for", "register", "to_toml"]


def config_path(args: argparse.Namespace) -> Path | None:
    """``--config FILE``, else ``<home>/p2pnode.toml`` when it exists, else None."""
    given: Path | None = getattr(args, "config", None)
    if given is not None:
        return given
    home: Path = args.home if args.home is not None else default_home()
    candidate = home / CONFIG_FILE
    return candidate if candidate.is_file() else None


def load_for(args: argparse.Namespace) -> NodeConfig:
    try:
        return load_config(config_path(args))
    except ConfigError as error:
        raise CliError(str(error)) from None


def _value(value: Any) -> str:
    return json.dumps(value)  # JSON strings, numbers, booleans and arrays are TOML too


def to_toml(config: NodeConfig) -> str:
    """The configuration as TOML (unset optional values as comments)."""
    lines: list[str] = []
    for section, values in config.model_dump().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} =")
            elif isinstance(value, dict):
                inner = ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items())
                lines.append(f"{key} = {{{inner}}}")
            else:
                lines.append(f"{key} = {_value(value)}")
        lines.append("")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    path: Path | None = args.file or config_path(args)
    if path is None:
        print("no configuration file: the defaults apply (p2pnode config show --defaults)")
        return EXIT_OK
    try:
        load_config(path)
    except ConfigError as error:
        print(f"{error.source}: {len(error.problems)} problem(s)")
        for problem in error.problems:
            print(f"  {problem}")
        return EXIT_USAGE
    print(f"{path}: ok")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    config = NodeConfig() if args.defaults else load_for(args)
    if args.json:
        print(config.model_dump_json(indent=2))
    else:
        print(to_toml(config), end="")
    return EXIT_OK


def cmd_reference(args: argparse.Namespace) -> int:
    print(reference_markdown())
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `config check` and `config show`."""
    config = subparsers.add_parser(
        "config",
        help="check or show the node's configuration file (p2pnode.toml)",
        description=f"The node reads <home>/{CONFIG_FILE}, or --config FILE; "
        "command-line flags of `p2pnode run` override it.",
    )
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="report every mistake in a configuration file")
    add_home_argument(check)
    check.add_argument("file", nargs="?", type=Path, help=f"default: <home>/{CONFIG_FILE}")
    check.set_defaults(func=cmd_check)
    show = actions.add_parser("show", help="print the effective configuration as TOML")
    add_home_argument(show)
    show.add_argument("--config", type=Path, metavar="FILE", help="read this file instead")
    show.add_argument("--defaults", action="store_true", help="the built-in defaults")
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")
    show.set_defaults(func=cmd_show)
    reference = actions.add_parser(
        "reference", help="every key, its default and meaning (Markdown, for docs/runtime.md)"
    )
    reference.set_defaults(func=cmd_reference)
