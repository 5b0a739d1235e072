"""`p2pnode settings [show|set KEY VALUE]`: who may reach us, in the running node.

The reach settings (``app/peer_contacts.py``, kept in ``<home>/settings.json``
and applied at once): who may see our presence, who may call (strangers ring,
wait silently as requests, or are refused) and whether calls are answered
unattended. ``set`` changes one key and keeps the others as they are; a key
left to the config (``[calls] non_contacts``, ``[calls] auto_answer``) stays
with the config unless it is the one set, and ``default`` hands a key back to
the config.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from p2pnode.app.api_contacts import SettingsAnswer, SettingsRequest
from p2pnode.cli.common import EXIT_OK, CliError, NetworkFailureError, add_home_argument
from p2pnode.cli.control_client import RunningNode, running_node
from p2pnode.identity import default_home

__all__ = ["KEYS", "describe_settings", "register", "updated"]

# KEY -> the values it takes ("default": back to the config's value)
KEYS: dict[str, tuple[str, ...]] = {
    "presence-visibility": ("everyone", "contacts", "nobody"),
    "who-may-call": ("ring", "request", "refuse", "default"),
    "auto-answer": ("on", "off", "default"),
}
_ALIASES = {"presence": "presence-visibility", "calls": "who-may-call"}


def _keys() -> str:
    return "; ".join(f"{k} {'|'.join(v)}" for k, v in KEYS.items())


def _node(args: argparse.Namespace) -> RunningNode:
    home = args.home if args.home is not None else default_home()
    node = running_node(home)
    if node is None:
        raise NetworkFailureError(
            f"no node is running in {home} (start one with [presence] enabled: p2pnode run)"
        )
    return node


def describe_settings(answer: SettingsAnswer) -> list[str]:
    auto = "on" if answer.auto_answer else "off"
    return [
        f"presence-visibility  {answer.presence_visibility}",
        f"who-may-call         {answer.who_may_call} (from {answer.who_may_call_from})",
        f"auto-answer          {auto} (from {answer.auto_answer_from})",
    ]


def updated(current: SettingsAnswer, key: str, value: str) -> SettingsRequest:
    """The request that sets ``key`` to ``value`` and leaves the rest as it is (a value
    the config gives stays the config's); ``CliError`` for an unknown key or value."""
    key = _ALIASES.get(key.replace("_", "-"), key.replace("_", "-"))
    if key not in KEYS:
        raise CliError(f"unknown setting: choose one of {', '.join(KEYS)}")
    if value not in KEYS[key]:
        raise CliError(f"{key}: choose one of {', '.join(KEYS[key])}")
    visibility: Any = current.presence_visibility
    calls: Any = current.who_may_call if current.who_may_call_from == "settings" else None
    auto = current.auto_answer if current.auto_answer_from == "settings" else None
    if key == "presence-visibility":
        visibility = value
    elif key == "who-may-call":
        calls = None if value == "default" else value
    else:
        auto = None if value == "default" else value == "on"
    return SettingsRequest(presence_visibility=visibility, who_may_call=calls, auto_answer=auto)


def cmd_settings(args: argparse.Namespace) -> int:
    action: Literal["show", "set"] = args.action
    if action == "show" and (args.key is not None or args.value is not None):
        raise CliError("show takes no KEY VALUE (did you mean: settings set KEY VALUE?)")
    if action == "set" and (args.key is None or args.value is None):
        raise CliError(
            "set needs KEY VALUE: " + "; ".join(f"{k} {'|'.join(v)}" for k, v in KEYS.items())
        )
    node = _node(args)
    answer = node.request("GET", "/api/settings", SettingsAnswer)
    if action == "set":
        body = updated(answer, args.key, args.value)
        answer = node.request("PUT", "/api/settings", SettingsAnswer, body=body)
    print(answer.model_dump_json(indent=2) if args.json else "\n".join(describe_settings(answer)))
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `settings`."""
    keys = _keys()
    settings = subparsers.add_parser(
        "settings",
        help="who may see our presence, who may call, auto-answer",
        description="Show or change the running node's reach settings (kept in the home, "
        f"applied at once). Keys: {keys}. 'default' hands a key back to the config.",
    )
    settings.add_argument("action", nargs="?", choices=("show", "set"), default="show")
    settings.add_argument("key", nargs="?", metavar="KEY")
    settings.add_argument("value", nargs="?", metavar="VALUE")
    add_home_argument(settings)
    settings.add_argument("--json", action="store_true", help="the API's JSON answer")
    settings.set_defaults(func=cmd_settings)
