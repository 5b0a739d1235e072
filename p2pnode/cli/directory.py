"""`p2pnode name|enum|verifier`: logins, phone numbers (ENUM), verifiers.

Every network command joins the DHT as a client through ``--bootstrap`` (or the
``bootstrap`` list in ``<home>/directory.toml``), does its work and leaves
(lookups go through the running node of the home when there is one). The
shared plumbing is in ``directory_common``; ``enum serve`` (the DNS gateway)
in ``enum_serve``.

Exit statuses (``p2pnode --help``): 0 a positive answer; 1 a negative one
("nobody claims", "ambiguous", an unverified owner, "no DHT node stored" it);
2 a usage error; 3 a network failure (the DHT could not be joined or timed out).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from p2pnode.cli.common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    CliError,
    NegativeAnswerError,
    add_home_argument,
)
from p2pnode.cli.directory_common import (
    DAY,
    VERIFIER_DIR,
    _add_days_argument,
    _add_network_arguments,
    _date,
    _days,
    _describe,
    _endorsements,
    _home,
    _identity,
    _login,
    _number,
    _owner_key,
    _settings,
    _tollfree,
    _trusted,
    _verifier,
    _with_directory,
)
from p2pnode.cli.enum_serve import add_serve_parsers
from p2pnode.cli.via_node import (
    enum_lookup_via_node,
    name_lookup_via_node,
    print_json_resolution,
)
from p2pnode.directory.lookup import (
    Directory,
)
from p2pnode.directory.names import (
    ClaimedLogin,
    LoginError,
    parse_login_or_peer_id,
)
from p2pnode.directory.naptr import (
    NaptrDirective,
    NaptrError,
    format_enumer_directive,
    parse_enumer_directive,
    sip_directive,
)
from p2pnode.directory.settings import DirectorySettings
from p2pnode.directory.trust import Ambiguous, NotFound, Resolution, Verified
from p2pnode.directory.verifiers import (
    EndorsementToken,
    RevocationTooShortError,
    countersign,
    encode_token,
    inspect_claim,
)
from p2pnode.identity import Identity, IdentityError, fingerprint_for
from p2pnode.records import RecordKind

__all__ = ["register"]

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
            raise NegativeAnswerError("no DHT node stored the claim")
        return 0

    return _with_directory(args, work)


def _print_resolution(resolution: Resolution, number: str | None, as_json: bool = False) -> int:
    if as_json:
        return print_json_resolution(resolution, number)
    subject = resolution.subject
    if isinstance(resolution, NotFound):
        raise NegativeAnswerError(f"nobody claims {subject!r}")
    if isinstance(resolution, Ambiguous):
        what = "verified owners conflict" if resolution.conflict else "unverified claims"
        lines = "; ".join(_describe(c) for c in resolution.candidates)
        raise NegativeAnswerError(
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
    return EXIT_OK if isinstance(resolution, Verified) else EXIT_NEGATIVE


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
            raise NegativeAnswerError("no DHT node stored the record")
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
                raise NegativeAnswerError(f"nobody claims {subject!r}")
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
            raise NegativeAnswerError(
                f"{args.owner} has no claim on {subject!r} in the DHT (publish first)"
            )
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
        return EXIT_OK if published.stored_on else EXIT_NEGATIVE

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


# ------------------------------------------------------------------ registration


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``name``, ``enum`` (with ``enum serve``) and ``verifier``."""
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

    add_serve_parsers(enum_sub)
