"""`p2pnode record put|get`: publish and look up a signed record from the command line.

When a node runs in --home (`p2pnode run`), both go through its control API:
no join, the node signs with the same identity. Otherwise they run a
short-lived DHT node in client mode (it queries, and asks others not to add it
to their tables) with a throwaway transport key; the record itself is signed
with the identity in --home (put) and verified against its owner (get). Each
says on stderr which way it went.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time
from typing import Any

from p2pnode.app.api_models import (
    RecordModel,
    RecordPutAnswer,
    RecordPutRequest,
    RecordsAnswer,
)
from p2pnode.cli.common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    CliError,
    NetworkFailureError,
    add_home_argument,
    parse_hostport,
)
from p2pnode.cli.control_client import RunningNode, running_node, say
from p2pnode.cli.node import home_of, load_identity
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity, fingerprint_for, peer_id_for, public_key_from_peer_id
from p2pnode.records import (
    CONTESTED_KINDS,
    MAX_TTL_BY_KIND,
    RecordKind,
    SignedRecord,
    record_key,
    sign_record,
)

__all__ = ["format_payload", "register"]

KIND_NAMES = {kind.name.lower().replace("_", "-"): kind for kind in RecordKind}


def parse_kind(text: str) -> RecordKind:
    kind = KIND_NAMES.get(text.lower())
    if kind is None:
        raise CliError(f"unknown kind {text!r}; choose one of: {', '.join(KIND_NAMES)}")
    return kind


def format_payload(payload: bytes, limit: int = 60) -> str:
    """Text when it is printable UTF-8, else hex; shortened to ``limit`` characters."""
    try:
        text = payload.decode("utf-8")
        shown = text if text.isprintable() else payload.hex()
    except UnicodeDecodeError:
        shown = payload.hex()
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _when(stamp: int) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _client(args: argparse.Namespace) -> DhtNode:
    if not args.bootstrap:
        raise CliError("give at least one --bootstrap HOST:PORT of a running node")
    bootstrap = [parse_hostport(text) for text in args.bootstrap]
    return DhtNode(
        Identity.generate(), listen=("0.0.0.0", 0), bootstrap=bootstrap, client_mode=True
    )


async def _join(node: DhtNode) -> None:
    result = await node.start()
    if result is None or result.answered == 0:
        raise NetworkFailureError("no bootstrap node answered (is `p2pnode run` listening there?)")


def _node_of(args: argparse.Namespace) -> RunningNode | None:
    home = home_of(args)
    node = running_node(home)
    if node is not None:
        say(f"using the running node of {home} at {node.url} (no DHT join)")
    elif args.bootstrap:
        say(f"no node running in {home}; joining the DHT through {', '.join(args.bootstrap)}")
    return node


def _put_via(node: RunningNode, args: argparse.Namespace) -> int:
    request = RecordPutRequest(
        kind=args.kind, subject=args.subject, payload=args.payload, ttl=args.ttl, seq=args.seq
    )
    answer = node.request("POST", "/api/records", RecordPutAnswer, body=request)
    if args.json:
        print(answer.model_dump_json(indent=2))
    else:
        print(f"key:    {answer.key}")
        print(f"owner:  {answer.owner}")
        print(f"seq:    {answer.seq}, expires {_when(answer.expires_at)}")
        print(f"stored: {answer.stored} of {answer.contacted} nodes asked")
        for reason, count in answer.rejected:
            print(f"rejected by {count}: {reason}")
    return EXIT_OK if answer.stored else EXIT_NEGATIVE


def _get_via(node: RunningNode, args: argparse.Namespace) -> int:
    query = [("kind", args.kind), ("subject", args.subject), ("owner", args.owner)]
    answer = node.request("GET", "/api/records", RecordsAnswer, query=query)
    if args.json:
        print(answer.model_dump_json(indent=2))
        return EXIT_OK if answer.records else EXIT_NEGATIVE
    if not answer.records:
        print(f"no valid record under {answer.key} ({answer.queries} nodes asked)")
        return EXIT_NEGATIVE
    print(f"{len(answer.records)} record(s) under {answer.key}, every signature verified:")
    for record in answer.records:
        print(f"  owner:   {record.owner} ({record.fingerprint})")
        print(f"  kind:    {record.kind.replace('-', '_')}  subject: {record.subject!r}")
        print(f"  seq:     {record.seq}  issued {_when(record.issued_at)}")
        print(f"  expires: {_when(record.expires_at)}")
        print(f"  payload: {format_payload(bytes.fromhex(record.payload_hex), 200)}")
    print(f"({answer.hops} hops, {answer.queries} queries, {answer.elapsed * 1000:.1f} ms)")
    return EXIT_OK


async def put(args: argparse.Namespace) -> int:
    identity = load_identity(args)
    kind = parse_kind(args.kind)
    limit = MAX_TTL_BY_KIND[kind]
    if not 0 < args.ttl <= limit:
        raise CliError(f"--ttl must be in 1..{limit} seconds for {args.kind}")
    seq = args.seq if args.seq is not None else int(time.time())
    try:
        record = sign_record(
            identity,
            kind,
            args.subject,
            args.payload.encode("utf-8"),
            seq=seq,
            now=time.time(),
            ttl=args.ttl,
        )
    except ValueError as error:
        raise CliError(str(error)) from None
    running = _node_of(args)
    if running is not None:
        return _put_via(running, args)
    node = _client(args)
    try:
        await _join(node)
        result = await node.put(record)
    finally:
        await node.close()
    if args.json:
        answer = RecordPutAnswer(
            key=record.key.hex(),
            owner=identity.peer_id,
            seq=record.seq,
            expires_at=record.expires_at,
            stored=result.stored,
            contacted=result.contacted,
            rejected=list(result.rejected),
        )
        print(answer.model_dump_json(indent=2))
        return EXIT_OK if result.stored else EXIT_NEGATIVE
    print(f"key:    {record.key.hex()}")
    print(f"owner:  {identity.peer_id} ({identity.fingerprint})")
    print(f"seq:    {record.seq}, expires {_when(record.expires_at)}")
    print(f"stored: {result.stored} of {result.contacted} nodes asked")
    for reason, count in result.rejected:
        print(f"rejected by {count}: {reason}")
    return 0 if result.stored else 1


async def get(args: argparse.Namespace) -> int:
    kind = parse_kind(args.kind)
    owner = b""
    if args.owner:
        try:
            owner = public_key_from_peer_id(args.owner)
        except ValueError as error:
            raise CliError(str(error)) from None
    elif kind not in CONTESTED_KINDS:
        raise CliError(f"--owner PEERID is needed for {args.kind} records")
    key = record_key(kind, owner, args.subject)
    running = _node_of(args)
    if running is not None:
        return _get_via(running, args)
    node = _client(args)
    try:
        await _join(node)
        result = await node.get(key)
    finally:
        await node.close()
    records: list[SignedRecord] = [r for r in result.records if not owner or r.owner == owner]
    if args.json:
        print(_records_answer(key, records, result.hops, result.queries, result.elapsed))
        return EXIT_OK if records else EXIT_NEGATIVE
    if not records:
        print(f"no valid record under {key.hex()} ({result.queries} nodes asked)")
        return 1
    print(f"{len(records)} record(s) under {key.hex()}, every signature verified:")
    for record in records:
        print(f"  owner:   {peer_id_for(record.owner)} ({fingerprint_for(record.owner)})")
        print(f"  kind:    {record.kind.name.lower()}  subject: {record.subject!r}")
        print(f"  seq:     {record.seq}  issued {_when(record.issued_at)}")
        print(f"  expires: {_when(record.expires_at)}")
        print(f"  payload: {format_payload(record.payload, 200)}")
    print(f"({result.hops} hops, {result.queries} queries, {result.elapsed * 1000:.1f} ms)")
    return 0


def _records_answer(
    key: bytes, records: list[SignedRecord], hops: int, queries: int, elapsed: float
) -> str:
    models = [
        RecordModel(
            owner=peer_id_for(r.owner),
            fingerprint=fingerprint_for(r.owner),
            kind=r.kind.name.lower().replace("_", "-"),
            subject=r.subject,
            seq=r.seq,
            issued_at=r.issued_at,
            expires_at=r.expires_at,
            payload_hex=r.payload.hex(),
        )
        for r in records
    ]
    answer = RecordsAnswer(
        key=key.hex(), records=models, hops=hops, queries=queries, elapsed=elapsed
    )
    return answer.model_dump_json(indent=2)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `record put` and `record get`."""
    record = subparsers.add_parser(
        "record",
        help="publish or look up a signed record in the DHT",
        description="Publish or look up a signed record through a running network.",
    )
    actions = record.add_subparsers(dest="action", metavar="ACTION", required=True)
    kinds = ", ".join(KIND_NAMES)

    put_parser = actions.add_parser(
        "put",
        help="sign a record with this node's identity and store it at the k closest nodes",
        description="Sign a record with the identity in --home and store it in the DHT.",
    )
    add_home_argument(put_parser)
    put_parser.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT")
    put_parser.add_argument("--kind", required=True, help=f"record kind: {kinds}")
    put_parser.add_argument("--subject", required=True, help="what the record is about")
    put_parser.add_argument("--payload", required=True, help="payload text (UTF-8)")
    put_parser.add_argument(
        "--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)"
    )
    put_parser.add_argument(
        "--seq", type=int, default=None, help="sequence number (default: the unix time)"
    )
    put_parser.add_argument("--json", action="store_true", help="answer as JSON")
    put_parser.set_defaults(func=lambda args: asyncio.run(put(args)))

    get_parser = actions.add_parser(
        "get",
        help="look up a record and verify it",
        description="Look up the newest valid record(s) of (kind, owner, subject).",
    )
    add_home_argument(get_parser)
    get_parser.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT")
    get_parser.add_argument("--json", action="store_true", help="answer as JSON")
    get_parser.add_argument("--kind", required=True, help=f"record kind: {kinds}")
    get_parser.add_argument(
        "--owner", default="", help="the owner's peer id (optional for contested kinds)"
    )
    get_parser.add_argument("--subject", required=True, help="what the record is about")
    get_parser.set_defaults(func=lambda args: asyncio.run(get(args)))
