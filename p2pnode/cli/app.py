"""`p2pnode app`: open the desktop app of the running node in the user's browser.

Why a one-time link: the browser cannot read the home's control token, and a
link with a long-lived secret would end up in shell histories. This command,
which can read the token, asks the node's app server for a link that works
once within two minutes; opening it sets the browser's session cookie.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
import webbrowser
from typing import Any

from p2pnode.app.homefiles import read_token
from p2pnode.app.web_config import WEB_FILE
from p2pnode.cli.common import EXIT_OK, CliError, NetworkFailureError, add_home_argument
from p2pnode.cli.control_client import running_node, say
from p2pnode.identity import default_home

__all__ = ["register"]

TIMEOUT = 10.0


def cmd_app(args: argparse.Namespace) -> int:
    home = args.home if args.home is not None else default_home()
    if running_node(home) is None:
        raise NetworkFailureError(f"no node is running in {home} (start one: p2pnode run)")
    try:
        url = json.loads((home / WEB_FILE).read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CliError(
            "the running node does not serve the app: set [web] enabled = true and restart it"
        ) from None
    token = read_token(home)
    if token is None:
        raise CliError(f"cannot read the control token in {home}")
    request = urllib.request.Request(  # noqa: S310 (our own loopback URL from the home)
        f"{url}/app/ticket", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
            link = json.loads(answer.read())["url"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        raise NetworkFailureError(f"the app server at {url} did not answer: {error}") from None
    if args.no_browser or not webbrowser.open(link):
        say("open this link in your browser (it works once, for two minutes):")
        print(link)
    else:
        say(f"opened the app of {home} in your browser")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `app`."""
    app = subparsers.add_parser(
        "app",
        help="open the desktop app (chat, contacts, calls) in your browser",
        description="Open the app served by the node running in --home, through a one-time "
        "link that signs the browser in.",
    )
    add_home_argument(app)
    app.add_argument("--no-browser", action="store_true", help="print the link instead")
    app.set_defaults(func=cmd_app)
