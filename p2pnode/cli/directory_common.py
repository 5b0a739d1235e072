"""Shared plumbing of the directory commands (`name`, `enum`, `verifier`, `enum serve`):
settings and trust from the home, argument checks, joining the DHT for one command.

Split out of ``cli/directory.py`` (over 600 lines) unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from p2pnode.cli.common import CliError, NetworkFailureError, add_home_argument, parse_hostport
from p2pnode.cli.node import load_identity
from p2pnode.dht import DhtNode
from p2pnode.directory.e164 import E164Error, normalise_country, normalise_e164
from p2pnode.directory.lookup import (
    MAX_TRUSTED_VERIFIERS,
    DhtNetwork,
    Directory,
    DirectoryTimeoutError,
)
from p2pnode.directory.names import (
    LoginError,
    normalise_login,
)
from p2pnode.directory.naptr import (
    NaptrDirective,
    format_enumer_directive,
)
from p2pnode.directory.settings import DirectorySettings, SettingsError, load_settings
from p2pnode.directory.tollfree import TollFreeError, TollFreeTable, load_tollfree
from p2pnode.directory.trust import Candidate
from p2pnode.directory.verifiers import (
    DEFAULT_VALIDITY,
    MAX_VALIDITY,
    TokenError,
    decode_token,
)
from p2pnode.identity import Identity, IdentityError, default_home
from p2pnode.identity import public_key_from_peer_id as key_of
from p2pnode.records import RecordKind

__all__ = [
    "DAY",
    "JOIN_TIMEOUT",
    "VERIFIER_DIR",
    "T",
    "_add_days_argument",
    "_add_network_arguments",
    "_country",
    "_date",
    "_days",
    "_describe",
    "_endorsements",
    "_home",
    "_identity",
    "_login",
    "_number",
    "_owner_key",
    "_print_directive",
    "_rate",
    "_settings",
    "_tollfree",
    "_trusted",
    "_verifier",
    "_whole_number",
    "_with_directory",
]


VERIFIER_DIR = "verifier"
JOIN_TIMEOUT = 10.0
DAY = 86400
T = TypeVar("T")


# ------------------------------------------------------------------ shared plumbing


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home) if args.home else default_home()


def _settings(args: argparse.Namespace) -> DirectorySettings:
    try:
        return load_settings(_home(args))
    except SettingsError as error:
        raise CliError(str(error)) from None


def _trusted(args: argparse.Namespace, settings: DirectorySettings) -> frozenset[bytes]:
    keys = set(settings.trust)
    for text in getattr(args, "trust", None) or []:
        try:
            keys.add(key_of(text))
        except ValueError:
            raise CliError(f"--trust {text!r} is not a verifier peer id (52 characters)") from None
    if len(keys) > MAX_TRUSTED_VERIFIERS:
        raise CliError(f"at most {MAX_TRUSTED_VERIFIERS} trusted verifiers (--trust and trust =)")
    return frozenset(keys)


def _tollfree(args: argparse.Namespace, settings: DirectorySettings) -> TollFreeTable:
    path = getattr(args, "tollfree_file", None) or settings.tollfree_file
    if path is None:
        return TollFreeTable()
    try:
        return load_tollfree(Path(path))
    except TollFreeError as error:
        raise CliError(str(error)) from None


def _country(args: argparse.Namespace, settings: DirectorySettings) -> str | None:
    if not args.country:
        return settings.country
    try:
        return normalise_country(args.country)
    except E164Error as error:
        raise CliError(f"--country: {error}") from None


def _number(text: str, args: argparse.Namespace, settings: DirectorySettings) -> str:
    country = _country(args, settings)
    try:
        return normalise_e164(text, country)
    except E164Error as error:
        raise CliError(f"bad number: {error}") from None


def _whole_number(option: str, text: str, low: int, high: int, unit: str) -> int:
    """``text`` as an integer in ``low..high``; a one-line ``CliError`` otherwise."""
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise CliError(
            f"{option} must be a whole number of {unit} from {low} to {high}, not {text!r}"
        )
    return value


def _days(args: argparse.Namespace) -> int:
    """``--days``: how long a countersignature is valid (1-730 days)."""
    return _whole_number("--days", args.days, 1, MAX_VALIDITY // DAY, "days")


def _rate(option: str, text: str) -> float:
    """A non-negative finite rate (0 turns the limit off)."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise CliError(f"{option} must be a number of queries per second, 0 or more, not {text!r}")
    return value


def _login(text: str) -> str:
    try:
        return normalise_login(text)
    except LoginError as error:
        raise CliError(f"bad login: {error}") from None


def _owner_key(text: str) -> bytes:
    try:
        return key_of(text)
    except ValueError:
        raise CliError(f"--owner {text!r} is not a peer id (52 characters)") from None


def _identity(args: argparse.Namespace) -> Identity:
    """The node identity in --home; never created here (as `record put`: run `p2pnode init`)."""
    return load_identity(args)


def _verifier(args: argparse.Namespace) -> Identity:
    home = _home(args) / VERIFIER_DIR
    if not (home / "identity.key").is_file():
        raise CliError(f"no verifier identity in {home}: run `p2pnode verifier init` first")
    try:
        return Identity.load(home)
    except IdentityError as error:
        raise CliError(str(error)) from None


def _date(stamp: int) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _with_directory(
    args: argparse.Namespace, work: Callable[[Directory, DirectorySettings], Awaitable[T]]
) -> T:
    settings = _settings(args)
    trusted = _trusted(args, settings)  # every local check before the network
    tollfree = _tollfree(args, settings)
    bootstrap = [*settings.bootstrap, *(args.bootstrap or [])]
    if not bootstrap:
        raise CliError(
            "no DHT node to join: give --bootstrap HOST:PORT (or set it in directory.toml)"
        )
    addresses = [parse_hostport(b) for b in bootstrap]

    async def run() -> T:
        node = DhtNode(
            Identity.generate(), listen=("0.0.0.0", 0), bootstrap=addresses, client_mode=True
        )
        try:
            async with asyncio.timeout(JOIN_TIMEOUT):
                joined = await node.start()
        except TimeoutError:
            await node.close()
            raise NetworkFailureError(
                f"could not join the DHT through {', '.join(bootstrap)}"
            ) from None
        try:
            if joined is not None and joined.answered == 0:
                raise NetworkFailureError(f"no DHT node answered at {', '.join(bootstrap)}")
            directory = Directory(
                DhtNetwork(node),
                trusted=trusted,
                clock=time.time,
                tollfree=tollfree,
            )
            return await work(directory, settings)
        except DirectoryTimeoutError as error:
            raise NetworkFailureError(str(error)) from None
        finally:
            await node.close()

    return asyncio.run(run())


def _add_network_arguments(parser: argparse.ArgumentParser, *, trust: bool = True) -> None:
    add_home_argument(parser)
    parser.add_argument(
        "--bootstrap",
        action="append",
        metavar="HOST:PORT",
        help="a DHT node to join through (repeatable; adds to directory.toml's list)",
    )
    if trust:
        parser.add_argument(
            "--trust",
            action="append",
            metavar="VERIFIER_PEER_ID",
            help="trust this verifier's countersignatures (repeatable; adds to directory.toml)",
        )


def _add_days_argument(parser: argparse.ArgumentParser, action: str) -> None:
    longest = MAX_VALIDITY // DAY
    if action == "verify":
        parser.add_argument(
            "--days",
            default=str(DEFAULT_VALIDITY // DAY),
            help=f"how long the countersignature is valid (1-{longest}; "
            f"default {DEFAULT_VALIDITY // DAY})",
        )
    else:
        parser.add_argument(
            "--days",
            help=f"how long the revocation lasts (1-{longest}; default {longest}, the longest "
            "any countersignature can be valid); refused if shorter than one it voids",
        )


def _print_directive(directive: NaptrDirective, number: str) -> None:
    uri = directive.uri_for(number) or "(rule does not apply to this number)"
    print(f"  {uri}    [{format_enumer_directive(directive)}]")


def _describe(candidate: Candidate) -> str:
    return f"owner {candidate.fingerprint} (peer id {candidate.peer_id})"


def _endorsements(
    texts: list[str] | None, kind: RecordKind, subject: str, owner: Identity
) -> list[Any]:
    result = []
    for text in texts or []:
        try:
            token = decode_token(text)
        except TokenError as error:
            raise CliError(str(error)) from None
        if token.kind != kind or token.subject != subject:
            raise CliError(f"that endorsement is for {token.subject!r}, not {subject!r}")
        if token.owner != owner.public_key:
            raise CliError("that endorsement was signed for another owner key, not this node's")
        result.append(token.endorsement)
    return result
