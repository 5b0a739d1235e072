"""`p2pnode sip account limits LOGIN [--numbers/--no-numbers] [--calls N]`.

An account's limits: whether it may call phone numbers (E.164, through the
gateway's ENUM look-up) and how many calls it may have at once. The same
functions as the app's Limits form (``app/web/sip_accounts``): the accounts live
in ``<home>/sip-accounts.sqlite``, not in the running node, so like ``sip account
add``/``list``/``remove`` this works with or without a node; a running gateway sees
the change at its next look-up of the account (the store's ``data_version``), so
no restart is needed. An option left out keeps its current value; with neither
the command only shows the limits. Unknown login: exit 1 (a negative answer); a
call limit outside 1..``MAX_ACCOUNT_CALLS``: exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from p2pnode.app.web.sip_accounts import SipAccountView, list_accounts, set_limits
from p2pnode.cli.common import EXIT_OK, CliError, NegativeAnswerError
from p2pnode.gateways.sip.accounts import MAX_ACCOUNT_CALLS, AccountError
from p2pnode.identity import default_home

__all__ = ["add_limits_parser", "describe_limits"]


def describe_limits(view: SipAccountView) -> str:
    numbers = "may call phone numbers" if view.e164 else "may not call phone numbers"
    return f"{view.login}@{view.server}: {numbers}, at most {view.max_calls} calls at once"


def _account_limits(args: argparse.Namespace) -> int:
    home: Path = args.home or default_home()
    _, accounts = list_accounts(home)
    current = next((a for a in accounts if a.login == args.login), None)
    if current is None:
        raise NegativeAnswerError(f"no SIP account {args.login} in {home}")
    view = current
    if args.numbers is not None or args.calls is not None:
        numbers = current.e164 if args.numbers is None else args.numbers
        calls = current.max_calls if args.calls is None else args.calls
        if not 1 <= calls <= MAX_ACCOUNT_CALLS:
            raise CliError(f"--calls must be 1-{MAX_ACCOUNT_CALLS}")
        try:
            view = set_limits(home, args.login, numbers, calls)
        except AccountError as error:  # removed meanwhile
            raise NegativeAnswerError(str(error)) from None
    if args.json:
        print(json.dumps(dataclasses.asdict(view)))
    else:
        print(describe_limits(view))
    return EXIT_OK


def add_limits_parser(accounts: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``limits`` to ``sip account``; the caller adds ``--home``."""
    limits: argparse.ArgumentParser = accounts.add_parser(
        "limits",
        help="show or change an account's limits (phone numbers, concurrent calls)",
        description="Show or change LOGIN's limits; a running gateway sees the change at "
        "once. An option left out keeps its value. Exit status 1 for an unknown login.",
    )
    limits.add_argument("login")
    limits.add_argument(
        "--numbers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="may (or may not, --no-numbers) call phone numbers (E.164)",
    )
    limits.add_argument(
        "--calls",
        type=int,
        metavar="N",
        help=f"at most N calls at once (1-{MAX_ACCOUNT_CALLS})",
    )
    limits.add_argument("--json", action="store_true", help="the account's limits as JSON")
    limits.set_defaults(func=_account_limits)
    return limits
