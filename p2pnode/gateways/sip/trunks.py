"""PBX trunks and DIDs: how a PBX or a carrier attaches to the gateway.

Two kinds, as carriers offer them:
- a *registration trunk* is an ordinary account a PBX registers with; it owns
  DIDs (phone numbers). A call to one of its DIDs goes to the PBX's
  registered Contact with the DID in To, and in the Request-URI too unless
  the trunk says otherwise (some PBXs route on the Request-URI user, some on
  To);
- an *IP trunk* does not register: it is recognised by its source address
  (an ACL of addresses and networks). Its requests need no digest; its DIDs
  are sent to ``target``. Only trunks are trusted to assert a caller
  (P-Asserted-Identity, RFC 3325): anyone else's PAI is ignored.

DIDs are stored as digits only (a leading ``+`` and visual separators are
dropped), so ``+49 30 555-0100`` and ``49305550100`` are one number.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from p2pnode.gateways.sip.transaction import Address

__all__ = [
    "DidRoute",
    "IpTrunk",
    "RegistrationTrunk",
    "TrunkTable",
    "digits",
]


def digits(number: str) -> str | None:
    """The digits of a phone number (``+``, spaces, ``-``, ``.``, ``()`` dropped), or None."""
    kept = "".join(c for c in number if c not in "+ -.()")
    if not kept or not kept.isascii() or not kept.isdecimal() or len(kept) > 20:
        return None
    return kept


@dataclass(frozen=True, slots=True)
class RegistrationTrunk:
    login: str  # the account the PBX registers
    dids: tuple[str, ...]
    did_in_request_uri: bool = True


@dataclass(frozen=True, slots=True)
class IpTrunk:
    name: str
    sources: tuple[str, ...]  # addresses or networks ("192.0.2.10", "198.51.100.0/28")
    dids: tuple[str, ...] = ()
    target: Address | None = None  # where calls to its DIDs go
    trust_pai: bool = True


@dataclass(frozen=True, slots=True)
class DidRoute:
    """Where a DID goes: an account (ring its devices), a registration trunk or an IP trunk."""

    did: str
    account: str | None = None
    registration_trunk: RegistrationTrunk | None = None
    ip_trunk: IpTrunk | None = None


class TrunkTable:
    """Trunks and DID routes from configuration (read-only after construction)."""

    def __init__(
        self,
        *,
        registration: tuple[RegistrationTrunk, ...] = (),
        ip: tuple[IpTrunk, ...] = (),
        account_dids: tuple[tuple[str, str], ...] = (),  # (DID, login)
    ) -> None:
        self.registration = registration
        self.ip = ip
        self._networks = [
            (ipaddress.ip_network(source, strict=False), trunk)
            for trunk in ip
            for source in trunk.sources
        ]
        self._dids: dict[str, DidRoute] = {}
        for did, login in account_dids:
            self._add(DidRoute(_did(did), account=login))
        for reg in registration:
            for did in reg.dids:
                self._add(DidRoute(_did(did), registration_trunk=reg))
        for trunk in ip:
            for did in trunk.dids:
                self._add(DidRoute(_did(did), ip_trunk=trunk))

    def _add(self, route: DidRoute) -> None:
        if route.did in self._dids:
            raise ValueError("a DID routed twice")
        self._dids[route.did] = route

    def ip_trunk_for(self, host: str) -> IpTrunk | None:
        """The IP trunk whose ACL holds ``host``, None for anyone else."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        for network, trunk in self._networks:
            if address.version == network.version and address in network:
                return trunk
        return None

    def did(self, number: str) -> DidRoute | None:
        key = digits(number)
        return None if key is None else self._dids.get(key)

    def registration_trunk(self, login: str) -> RegistrationTrunk | None:
        return next((t for t in self.registration if t.login == login), None)


def _did(number: str) -> str:
    key = digits(number)
    if key is None:
        raise ValueError("a DID must be a phone number")
    return key
