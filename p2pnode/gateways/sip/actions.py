"""What the B2BUA asks its adapter to do, and where a new call goes.

Values only (frozen): :class:`Respond`, :class:`StartRequest`,
:class:`SendDirect` and :class:`CallEnded` are the B2BUA's effects; routing
builds a :class:`Target` of :class:`Contact` values for a new call.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode.gateways.sip.headers import NameAddress, Uri
from p2pnode.gateways.sip.message import SipRequest, SipResponse
from p2pnode.gateways.sip.transaction import Address, ServerKey

__all__ = ["Action", "CallEnded", "Contact", "Respond", "SendDirect", "StartRequest", "Target"]


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer server transaction ``key`` (again, for a 2xx retransmission)."""

    key: ServerKey
    response: SipResponse


@dataclass(frozen=True, slots=True)
class StartRequest:
    """Start a client transaction."""

    request: SipRequest
    destination: Address
    reliable: bool


@dataclass(frozen=True, slots=True)
class SendDirect:
    """Send outside any transaction (the ACK for a 2xx, RFC 3261 §13.2.2.4)."""

    message: SipRequest
    destination: Address
    reliable: bool


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call is over: the gateway releases its counters (per-account limits)."""

    call_ref: str
    accounts: tuple[str, ...]
    answered: bool


Action = Respond | StartRequest | SendDirect | CallEnded


@dataclass(frozen=True, slots=True)
class Contact:
    """One device to ring: its Contact URI and where to send (the NAT path or the URI)."""

    uri: Uri
    destination: Address
    reliable: bool


@dataclass(frozen=True, slots=True)
class Target:
    """Where a new call goes, decided by routing: the callee's contacts."""

    aor: Uri
    contacts: tuple[Contact, ...]
    accounts: tuple[str, ...]  # accounts the call counts against (caller, callee)
    request_uri_user: str | None = None  # e.g. a trunk's DID in the Request-URI
    caller: NameAddress | None = None  # the identity shown to the callee (default: From)
