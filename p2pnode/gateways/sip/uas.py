"""RFC 3261 §8.2 request checks every UAS (and the gateway's B2BUA) runs first.

``precheck(request, policy)`` returns the refusal to send, or None when the
request may go on to its handler. The order is §8.2's: method (405/501), URI
scheme (416), Require (420), Content-Type/-Encoding (415), Accept (406), and
for an element that forwards, Max-Forwards (483, §16.3 step 3). RFC 4475's
application-layer cases (§3.3) exercise each step.

Responses carry no Server/User-Agent banner: a scanner learns nothing about
the software from them (issue 14, Kamailio's default recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode.gateways.sip.message import KNOWN_METHODS, SipRequest, SipResponse, build_response

__all__ = ["UasPolicy", "options_response", "precheck"]

_NO_REQUIRE_CHECK = frozenset({"ACK", "CANCEL"})  # §8.2.2.3
_BODY_ANSWERING = frozenset({"INVITE", "OPTIONS", "UPDATE", "PRACK"})


@dataclass(frozen=True, slots=True)
class UasPolicy:
    allowed_methods: frozenset[str] = frozenset(
        {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "UPDATE"}
        | {"PRACK", "NOTIFY", "SUBSCRIBE"}
    )
    schemes: frozenset[str] = frozenset({"sip", "sips", "tel"})
    supported_options: frozenset[str] = frozenset({"replaces", "timer", "100rel", "path"})
    accepted_types: frozenset[str] = frozenset(
        {"application/sdp", "text/plain", "application/dtmf-relay", "message/sipfrag"}
    )
    answer_type: str = "application/sdp"  # what we answer INVITE/OPTIONS bodies with
    event_packages: frozenset[str] = frozenset()  # RFC 6665 packages we serve (none: 489)
    forwarding: bool = False  # a proxy or B2BUA forwarding the request: check Max-Forwards

    @property
    def allow(self) -> str:
        return ", ".join(sorted(self.allowed_methods))


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip(" \t").lower()


def _accepts(accept_values: tuple[str, ...], wanted: str) -> bool:
    kind, _, _ = wanted.partition("/")
    for value in accept_values:
        for item in value.split(","):
            media = _media_type(item)
            if media in (wanted, f"{kind}/*", "*/*"):
                return True
    return False


def precheck(request: SipRequest, policy: UasPolicy) -> SipResponse | None:
    """The §8.2 refusal for ``request``, or None when it may be handled."""

    def refuse(status: int, reason: str, *extra: tuple[str, str]) -> SipResponse:
        return build_response(request, status, reason, *extra, to_tag="precheck")

    method = request.method
    if method == "ACK":
        return None  # never answered
    # §8.2.1: a method we do not know at all is 501, one we know but do not allow 405.
    if method not in policy.allowed_methods:
        if method in KNOWN_METHODS:
            return refuse(405, "Method Not Allowed", ("Allow", policy.allow))
        return refuse(501, "Not Implemented", ("Allow", policy.allow))
    # §8.2.2.1: a Request-URI scheme we do not serve.
    scheme = request.uri.scheme
    if scheme not in policy.schemes:
        return refuse(416, "Unsupported URI Scheme")
    # §8.2.2.3: option tags we do not support.
    if method not in _NO_REQUIRE_CHECK:
        unsupported = [
            t for t in request.option_tags("Require") if t not in policy.supported_options
        ]
        if unsupported:
            return refuse(420, "Bad Extension", ("Unsupported", ", ".join(unsupported)))
    # §8.2.3: a body we cannot read.
    content_type = request.header("Content-Type")
    if request.body and (
        content_type is None or _media_type(content_type) not in policy.accepted_types
    ):
        accept = ", ".join(sorted(policy.accepted_types))
        return refuse(415, "Unsupported Media Type", ("Accept", accept))
    encoding = request.header("Content-Encoding")
    if request.body and encoding is not None and encoding.strip().lower() != "identity":
        return refuse(415, "Unsupported Media Type", ("Accept-Encoding", "identity"))
    # §21.4.7: the client accepts no body type we could answer with.
    accept_values = request.header_values("Accept")
    if (
        method in _BODY_ANSWERING
        and accept_values
        and not _accepts(accept_values, policy.answer_type)
    ):
        return refuse(406, "Not Acceptable")
    # RFC 6665 §8.2.1: a SUBSCRIBE/PUBLISH for a package we do not serve (phones
    # subscribe to message-summary for MWI) is answered 489 with Allow-Events.
    if method in ("SUBSCRIBE", "PUBLISH"):
        event = (request.header("Event") or "").split(";", 1)[0].strip(" \t").lower()
        if event not in policy.event_packages:
            allow_events = ", ".join(sorted(policy.event_packages))
            extra = (("Allow-Events", allow_events),) if allow_events else ()
            return refuse(489, "Bad Event", *extra)
    # §16.3 step 3: nothing is forwarded with Max-Forwards 0 (OPTIONS may be answered).
    if policy.forwarding and request.max_forwards == 0 and method != "OPTIONS":
        return refuse(483, "Too Many Hops")
    return None


def options_response(request: SipRequest, policy: UasPolicy, *, to_tag: str) -> SipResponse:
    """§11.2: 200 to OPTIONS with Allow, Accept and Supported (and no banner)."""
    return build_response(
        request,
        200,
        "OK",
        ("Allow", policy.allow),
        ("Accept", policy.answer_type),
        ("Supported", ", ".join(sorted(policy.supported_options))),
        to_tag=to_tag,
    )
