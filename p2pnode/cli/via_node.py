"""Directory queries (`name lookup`) answered by the running node of the home.

Kept out of ``cli/directory.py`` so that module only gains a two-line hook; the
printed lines and exit codes are those of the joining path (a negative answer
is 1; "nobody claims" and "ambiguous" stay errors as they are there).
"""

from __future__ import annotations

import argparse

from p2pnode.app.api_models import NameAnswer, resolution_answer
from p2pnode.cli.common import EXIT_NEGATIVE, EXIT_OK, NegativeAnswerError
from p2pnode.cli.control_client import running_node, say
from p2pnode.directory.trust import Resolution
from p2pnode.identity import (
    default_home,
    fingerprint_for,
    peer_id_for,
    public_key_from_peer_id,
)

__all__ = ["enum_lookup_via_node", "name_lookup_via_node", "print_json_resolution"]


def name_lookup_via_node(
    args: argparse.Namespace, login: str, trusted: frozenset[bytes]
) -> int | None:
    """The answer's exit status, or None when no node runs in the home (then join)."""
    return _lookup_via_node(args, f"/api/names/{login}", trusted)


def enum_lookup_via_node(
    args: argparse.Namespace, number: str, trusted: frozenset[bytes]
) -> int | None:
    """As ``name_lookup_via_node``, for a phone number (E.164); prints the SIP URIs."""
    return _lookup_via_node(args, f"/api/enum/{number}", trusted)


def _lookup_via_node(args: argparse.Namespace, path: str, trusted: frozenset[bytes]) -> int | None:
    home = args.home if args.home is not None else default_home()
    node = running_node(home)
    if node is None:
        say(f"no node running in {home}; joining the DHT")
        return None
    say(f"using the running node of {home} at {node.url} (no DHT join)")
    query = [("trust", peer_id_for(key)) for key in sorted(trusted)]
    answer = node.request("GET", path, NameAnswer, query=query)
    if getattr(args, "json", False):
        print(answer.model_dump_json(indent=2))
        return EXIT_OK if answer.outcome == "verified" else EXIT_NEGATIVE
    if answer.outcome == "not-found":
        raise NegativeAnswerError(f"nobody claims {answer.subject!r}")
    described = [f"owner {c.fingerprint} (peer id {c.peer_id})" for c in answer.candidates]
    if answer.outcome == "ambiguous":
        what = "verified owners conflict" if answer.conflict else "unverified claims"
        raise NegativeAnswerError(
            f"ambiguous: {len(answer.candidates)} {what} for {answer.subject!r}: "
            f"{'; '.join(described)}. Trust a verifier (--trust) or ask the person for "
            "their peer id."
        )
    if answer.outcome == "verified":
        verifiers = ", ".join(
            fingerprint_for(public_key_from_peer_id(v)) for v in answer.candidates[0].verified_by
        )
        print(f"{answer.subject}: VERIFIED by {verifiers}; {described[0]}")
    else:
        print(
            f"{answer.subject}: UNVERIFIED (no trusted verifier vouches for it); "
            f"{described[0]}. Check the fingerprint with the person before you rely on it."
        )
    for uri in answer.candidates[0].uris:
        print(f"  {uri}")
    return EXIT_OK if answer.outcome == "verified" else EXIT_NEGATIVE


def print_json_resolution(resolution: Resolution, number: str | None) -> int:
    """The joining path's --json answer: the API's model, the same exit statuses."""
    answer = resolution_answer(resolution, number)
    print(answer.model_dump_json(indent=2))
    return EXIT_OK if answer.outcome == "verified" else EXIT_NEGATIVE
