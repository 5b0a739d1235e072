"""`p2pnode name|enum|verifier|enum-dns`: logins, phone numbers (ENUM), verifiers, the DNS gateway.

Every network command joins the DHT as a client through ``--bootstrap`` (or the
``bootstrap`` list in ``<home>/directory.toml``), does its work and leaves;
``enum-dns`` stays and serves DNS until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.name

from p2pnode.cli.common import CliError, add_home_argument, parse_hostport
from p2pnode.cli.node import load_identity
from p2pnode.cli.via_node import (
    enum_lookup_via_node,
    name_lookup_via_node,
    print_json_resolution,
)
from p2pnode.dht import DhtNode
from p2pnode.directory.e164 import E164Error, normalise_country, normalise_e164
from p2pnode.directory.lookup import (
    MAX_TRUSTED_VERIFIERS,
    DhtNetwork,
    Directory,
    DirectoryTimeoutError,
)
from p2pnode.directory.names import (
    ClaimedLogin,
    LoginError,
    normalise_login,
    parse_login_or_peer_id,
)
from p2pnode.directory.naptr import (
    NaptrDirective,
    NaptrError,
    format_enumer_directive,
    parse_enumer_directive,
    sip_directive,
)
from p2pnode.directory.settings import DirectorySettings, SettingsError, load_settings
from p2pnode.directory.tollfree import TollFreeError, TollFreeTable, load_tollfree
from p2pnode.directory.trust import Ambiguous, Candidate, NotFound, Resolution, Verified
from p2pnode.directory.verifiers import (
    DEFAULT_VALIDITY,
    MAX_VALIDITY,
    EndorsementToken,
    RevocationTooShortError,
    TokenError,
    countersign,
    decode_token,
    encode_token,
    inspect_claim,
)
from p2pnode.gateways.enumdns import EnumDnsCore, EnumDnsServer, GatewayConfig, RouteCache
from p2pnode.gateways.enumdns.config import DEFAULT_ZONES, parse_zone
from p2pnode.identity import Identity, IdentityError, default_home, fingerprint_for
from p2pnode.identity import public_key_from_peer_id as key_of
from p2pnode.records import RecordKind

__all__ = ["register"]

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
            raise CliError(f"could not join the DHT through {', '.join(bootstrap)}") from None
        try:
            if joined is not None and joined.answered == 0:
                raise CliError(f"no DHT node answered at {', '.join(bootstrap)}")
            directory = Directory(
                DhtNetwork(node),
                trusted=trusted,
                clock=time.time,
                tollfree=tollfree,
            )
            return await work(directory, settings)
        except DirectoryTimeoutError as error:
            raise CliError(str(error)) from None
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


# ------------------------------------------------------------------ name


def _name_claim(args: argparse.Namespace) -> int:
    login = _login(args.login)
    identity = _identity(args)
    add = _endorsements(args.endorsement, RecordKind.NAME_CLAIM, login, identity)

    async def work(directory: Directory, _: DirectorySettings) -> int:
        try:
            published = await directory.claim_name(identity, login, add=add)
        except LoginError as error:
            raise CliError(f"bad login: {error}") from None
        print(
            f"claimed {login!r} for {identity.peer_id} (fingerprint {identity.fingerprint}); "
            f"stored on {published.stored_on} nodes"
        )
        for note in published.notes:
            print(f"warning: {note}")
        if published.stored_on == 0:
            raise CliError("no DHT node stored the claim")
        return 0

    return _with_directory(args, work)


def _print_resolution(resolution: Resolution, number: str | None, as_json: bool = False) -> int:
    if as_json:
        return print_json_resolution(resolution, number)
    subject = resolution.subject
    if isinstance(resolution, NotFound):
        raise CliError(f"nobody claims {subject!r}")
    if isinstance(resolution, Ambiguous):
        what = "verified owners conflict" if resolution.conflict else "unverified claims"
        lines = "; ".join(_describe(c) for c in resolution.candidates)
        raise CliError(
            f"ambiguous: {len(resolution.candidates)} {what} for {subject!r}: {lines}. "
            "Trust a verifier (--trust) or ask the person for their peer id."
        )
    candidate = resolution.candidate
    if isinstance(resolution, Verified):
        verifiers = ", ".join(fingerprint_for(v) for v in candidate.verified_by)
        print(f"{subject}: VERIFIED by {verifiers}; {_describe(candidate)}")
    else:
        print(
            f"{subject}: UNVERIFIED (no trusted verifier vouches for it); {_describe(candidate)}. "
            "Check the fingerprint with the person before you rely on it."
        )
    if number is not None:
        for directive in sorted(candidate.directives, key=lambda d: (d.order, d.preference)):
            uri = directive.uri_for(number) or "(rule does not apply)"
            print(f"  {uri}    [{format_enumer_directive(directive)}]")
    return 0 if isinstance(resolution, Verified) else 1


def _name_lookup(args: argparse.Namespace) -> int:
    try:
        parsed = parse_login_or_peer_id(args.login)
    except LoginError as error:
        raise CliError(f"bad login: {error}") from None
    if not isinstance(parsed, ClaimedLogin):
        print(f"{parsed.peer_id}: a peer id (fingerprint {fingerprint_for(parsed.public_key)})")
        return 0
    login = parsed.login
    answered = name_lookup_via_node(args, login, _trusted(args, _settings(args)))
    if answered is not None:
        return answered

    async def work(directory: Directory, _: DirectorySettings) -> int:
        resolution = await directory.resolve(RecordKind.NAME_CLAIM, login)
        return _print_resolution(resolution, None, args.json)

    return _with_directory(args, work)


# ------------------------------------------------------------------ enum


def _directives(args: argparse.Namespace) -> list[NaptrDirective] | None:
    rules: list[NaptrDirective] = []
    try:
        rules += [sip_directive(uri) for uri in args.sip or []]
        rules += [parse_enumer_directive(text) for text in args.route or []]
    except NaptrError as error:
        raise CliError(f"bad route: {error}") from None
    return rules or None


def _enum_publish(args: argparse.Namespace) -> int:
    settings = _settings(args)
    number = _number(args.number, args, settings)
    identity = _identity(args)
    rules = _directives(args)
    add = _endorsements(args.endorsement, RecordKind.ENUM_ENTRY, number, identity)
    if rules is None and not add:
        raise CliError("give --sip URI or --route RULE (or an --endorsement to add)")

    async def work(directory: Directory, _: DirectorySettings) -> int:
        try:
            published = await directory.publish_enum(identity, number, rules, add=add)
        except ValueError as error:
            raise CliError(str(error)) from None
        entry = inspect_claim(published.record)
        print(
            f"published {number} for {identity.peer_id} (fingerprint {identity.fingerprint}); "
            f"stored on {published.stored_on} nodes; {len(entry.endorsements)} endorsement(s)"
        )
        for directive in entry.directives:
            print(f"  {directive.uri_for(number)}    [{format_enumer_directive(directive)}]")
        for note in published.notes:
            print(f"warning: {note}")
        if published.stored_on == 0:
            raise CliError("no DHT node stored the record")
        return 0

    return _with_directory(args, work)


def _enum_lookup(args: argparse.Namespace) -> int:
    settings = _settings(args)
    number = _number(args.number, args, settings)
    if not _tollfree(args, settings).directives:  # the node has no toll-free table
        answered = enum_lookup_via_node(args, number, _trusted(args, settings))
        if answered is not None:
            return answered

    async def work(directory: Directory, _: DirectorySettings) -> int:
        resolution = await directory.resolve(RecordKind.ENUM_ENTRY, number)
        if not isinstance(resolution, Verified):
            fallback = directory.tollfree.lookup(number)
            if fallback:
                print(f"{number}: no trusted record; toll-free table:")
                for directive in fallback:
                    print(
                        f"  {directive.uri_for(number)}    [{format_enumer_directive(directive)}]"
                    )
                return 0
        return _print_resolution(resolution, number, args.json)

    return _with_directory(args, work)


def _verify(args: argparse.Namespace, kind: RecordKind, subject: str) -> int:
    days = _days(args)
    owner = _owner_key(args.owner) if args.owner is not None else None
    verifier = _verifier(args)

    async def work(directory: Directory, _: DirectorySettings) -> int:
        records, _revocations = await directory.fetch(kind, subject)
        claims = [inspect_claim(r) for r in records if r.kind == kind and r.subject == subject]
        if owner is None:
            if not claims:
                raise CliError(f"nobody claims {subject!r}")
            for view in claims:
                mine = any(e.verifier == verifier.public_key for e in view.endorsements)
                print(
                    f"claim on {subject} by {view.owner_peer_id} (fingerprint "
                    f"{view.owner_fingerprint}); {len(view.endorsements)} endorsement(s)"
                    f"{', one is yours' if mine else ''}"
                )
                for directive in view.directives:
                    print(
                        f"  {directive.uri_for(subject)}    [{format_enumer_directive(directive)}]"
                    )
            print("countersign one with --owner PEER_ID after checking the person holds it")
            return 0
        if not any(view.owner == owner for view in claims):
            raise CliError(f"{args.owner} has no claim on {subject!r} in the DHT (publish first)")
        endorsement = countersign(
            verifier, kind, subject, owner, now=time.time(), validity=days * DAY
        )
        token = encode_token(EndorsementToken(kind, subject, owner, endorsement))
        print(f"countersigned {subject} for owner {fingerprint_for(owner)} for {days} days.")
        print("Give the owner this token; they add it with --endorsement:")
        print(token)
        return 0

    return _with_directory(args, work)


def _enum_verify(args: argparse.Namespace) -> int:
    return _verify(args, RecordKind.ENUM_ENTRY, _number(args.number, args, _settings(args)))


def _name_verify(args: argparse.Namespace) -> int:
    return _verify(args, RecordKind.NAME_CLAIM, _login(args.login))


def _revoke(args: argparse.Namespace, kind: RecordKind, subject: str) -> int:
    lifetime = None if args.days is None else _days(args) * DAY
    owner = _owner_key(args.owner)
    verifier = _verifier(args)

    async def work(directory: Directory, _: DirectorySettings) -> int:
        try:
            published = await directory.publish_revocation(
                verifier, kind, subject, owner, lifetime=lifetime
            )
        except RevocationTooShortError as error:
            days = math.ceil((error.needed_until - time.time()) / DAY)
            raise CliError(
                f"--days {args.days} is too short: an endorsement it voids (or the previous "
                f"revocation) lasts until {_date(error.needed_until)}; give --days {days} or "
                "more, or leave --days out"
            ) from None
        print(
            f"revoked your endorsements of {subject} for owner {fingerprint_for(owner)} "
            f"until {_date(published.record.expires_at)}; stored on {published.stored_on} nodes"
        )
        return 0 if published.stored_on else 1

    return _with_directory(args, work)


def _enum_revoke(args: argparse.Namespace) -> int:
    return _revoke(args, RecordKind.ENUM_ENTRY, _number(args.number, args, _settings(args)))


def _name_revoke(args: argparse.Namespace) -> int:
    return _revoke(args, RecordKind.NAME_CLAIM, _login(args.login))


# ------------------------------------------------------------------ verifier


def _verifier_init(args: argparse.Namespace) -> int:
    home = _home(args) / VERIFIER_DIR
    try:
        existed = (home / "identity.key").exists()
        identity = Identity.load_or_create(home)
    except (IdentityError, OSError) as error:
        raise CliError(str(error)) from None
    state = "existing" if existed else "new"
    print(f"{state} verifier identity in {home}")
    print(f"peer id (resolvers pass it to --trust): {identity.peer_id}")
    print(f"fingerprint: {identity.fingerprint}")
    return 0


# ------------------------------------------------------------------ enum-dns


def _enum_dns(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.listen, default_host="0.0.0.0")
    try:
        zones = tuple(parse_zone(z) for z in args.zone) if args.zone else None
    except ValueError as error:
        raise CliError(f"--zone: {error}") from None
    try:
        ns_name = dns.name.from_text(args.ns_name)
    except dns.exception.DNSException as error:
        raise CliError(f"--ns-name {args.ns_name!r} is not a domain name: {error}") from None
    rate = _rate("--rate-limit", args.rate_limit)
    config = GatewayConfig(
        zones=zones or DEFAULT_ZONES,
        ns_name=ns_name,
        rate_limit=rate,
        rate_burst=max(2.0 * rate, 1.0),  # two seconds' worth, whatever the rate
        serial=int(time.time()) % 2**32,
    )

    async def work(directory: Directory, _: DirectorySettings) -> int:
        loop = asyncio.get_running_loop()
        routes = RouteCache(directory.route, loop.time)
        core = EnumDnsCore(config, routes.route_nowait, clock=loop.time)
        server = EnumDnsServer(core, routes)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            async with server.running(host, port) as (bound_host, bound_port):
                names = ", ".join(z.to_text() for z in config.zones)
                print(
                    f"p2pnode enum-dns: serving {names} on udp+tcp {bound_host}:{bound_port}; "
                    f"{len(directory.trusted)} trusted verifier(s); "
                    f"{len(directory.tollfree.directives)} toll-free rule(s)",
                    flush=True,
                )
                await stop.wait()
        except OSError as error:
            raise CliError(f"cannot listen on {host}:{port}: {error}") from None
        return 0

    return _with_directory(args, work)


# ------------------------------------------------------------------ registration


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``name``, ``enum`` (with ``enum serve``), ``verifier`` and ``enum-dns``
    (the old name of ``enum serve``)."""
    name = subparsers.add_parser("name", help="claim and look up logins")
    name_sub = name.add_subparsers(dest="name_command", metavar="ACTION", required=True)
    claim = name_sub.add_parser(
        "claim",
        help="claim a login for this node's key",
        description="Publish a signed claim LOGIN -> this node's key. Others may claim it too: "
        "resolvers believe the claim a trusted verifier countersigned.",
    )
    claim.add_argument("login", help="3-32 of a-z 0-9 - . (all digits allowed)")
    claim.add_argument(
        "--endorsement",
        action="append",
        metavar="TOKEN",
        help="a verifier's token for this login (from `p2pnode name verify`)",
    )
    _add_network_arguments(claim, trust=False)
    claim.set_defaults(func=_name_claim)
    lookup = name_sub.add_parser("lookup", help="who is LOGIN (or which key is this peer id)")
    lookup.add_argument("login", help="a login or a peer id")
    _add_network_arguments(lookup)
    lookup.add_argument("--json", action="store_true", help="answer as JSON")
    lookup.set_defaults(func=_name_lookup)
    for action, handler, text in (
        ("verify", _name_verify, "as a verifier: list claims, or countersign --owner's"),
        ("revoke", _name_revoke, "as a verifier: withdraw your countersignature of --owner"),
    ):
        sub = name_sub.add_parser(action, help=text)
        sub.add_argument("login")
        sub.add_argument("--owner", required=action == "revoke", metavar="PEER_ID")
        _add_days_argument(sub, action)
        _add_network_arguments(sub, trust=False)
        sub.set_defaults(func=handler)

    enum = subparsers.add_parser("enum", help="publish and look up phone numbers (ENUM)")
    enum_sub = enum.add_subparsers(dest="enum_command", metavar="ACTION", required=True)
    publish = enum_sub.add_parser(
        "publish",
        help="publish routes for a number you hold",
        description="Publish NUMBER -> NAPTR routes, signed by this node's key. Callers' PBXs "
        "use them once a verifier they trust countersigned your claim (see `enum verify`).",
    )
    publish.add_argument("number", help="E.164 (+1 800 935 9935), 00/011 or national form")
    publish.add_argument(
        "--sip",
        action="append",
        metavar="URI",
        help="route every call to this sip: URI (E2U+sip, order 100, pref 10)",
    )
    publish.add_argument(
        "--route",
        action="append",
        metavar="RULE",
        help="an ENUMER-style rule, e.g. 'E2U+sip=100|10|!^(.*)$!sip:\\1@pbx!'",
    )
    publish.add_argument(
        "--endorsement",
        action="append",
        metavar="TOKEN",
        help="a verifier's token for this number (from `p2pnode enum verify`)",
    )
    _add_network_arguments(publish, trust=False)
    enum_lookup = enum_sub.add_parser("lookup", help="where does a call to NUMBER go")
    enum_lookup.add_argument("number")
    enum_lookup.add_argument(
        "--tollfree-file",
        metavar="FILE",
        help="fallback rules for numbers without a trusted record",
    )
    _add_network_arguments(enum_lookup)
    enum_lookup.add_argument("--json", action="store_true", help="answer as JSON")
    for sub in (publish, enum_lookup):
        sub.add_argument("--country", metavar="CC", help="default country for national numbers")
    publish.set_defaults(func=_enum_publish)
    enum_lookup.set_defaults(func=_enum_lookup)
    for action, handler, text in (
        ("verify", _enum_verify, "as a verifier: list claims, or countersign --owner's"),
        ("revoke", _enum_revoke, "as a verifier: withdraw your countersignature of --owner"),
    ):
        sub = enum_sub.add_parser(action, help=text)
        sub.add_argument("number")
        sub.add_argument("--owner", required=action == "revoke", metavar="PEER_ID")
        _add_days_argument(sub, action)
        sub.add_argument("--country", metavar="CC", help="default country for national numbers")
        _add_network_arguments(sub, trust=False)
        sub.set_defaults(func=handler)

    verifier = subparsers.add_parser("verifier", help="verifier identity")
    verifier_sub = verifier.add_subparsers(dest="verifier_command", metavar="ACTION", required=True)
    init = verifier_sub.add_parser(
        "init",
        help="create (or show) this home's verifier identity",
        description="A verifier key lives in HOME/verifier, apart from the node key.",
    )
    add_home_argument(init)
    init.set_defaults(func=_verifier_init)

    serve_description = (
        "A DNS server (UDP and TCP) for PBXs: NAPTR answers for numbers with a "
        "record countersigned by a --trust'ed verifier, else the toll-free table, else NXDOMAIN. "
        "`p2pnode run` hosts the same gateway as a service ([enum] in its config)."
    )
    for gateway in (
        enum_sub.add_parser(
            "serve",
            help="serve ENUM NAPTR answers over DNS from the DHT",
            description=serve_description,
        ),
        subparsers.add_parser(
            "enum-dns", help="old name of `enum serve`", description=serve_description
        ),
    ):
        gateway.add_argument(
            "--listen",
            required=True,
            metavar="HOST:PORT",
            help="address for UDP and TCP, e.g. 127.0.0.1:5353 or 0.0.0.0:53",
        )
        gateway.add_argument(
            "--zone",
            action="append",
            metavar="ZONE",
            help="zone to serve (repeatable; default e164.arpa. and enum.)",
        )
        gateway.add_argument(
            "--tollfree-file",
            metavar="FILE",
            help="ENUMER-style rules answered when no trusted record exists",
        )
        gateway.add_argument("--ns-name", default="localhost.", help="NS/SOA name of this server")
        gateway.add_argument(
            "--rate-limit",
            default="100",
            metavar="QPS",
            help="UDP answers per second per client address, bursts of two seconds' worth "
            "(0: off; default 100)",
        )
        _add_network_arguments(gateway)
        gateway.set_defaults(func=_enum_dns)
