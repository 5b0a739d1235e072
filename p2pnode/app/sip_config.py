"""The ``[sip]`` section: the SIP gateway hosted by ``p2pnode run``.

Why the defaults: a desk phone is configured with three settings (login,
password, server), so the gateway listens where phones look (UDP and TCP on
5060) and offers MD5 first: sipp answers only the first challenge and only
MD5, and baresip 1.0 gives up when a challenge names SHA-256 at all
(``digest = ["MD5"]`` for such phones). The domain is the digest realm the
accounts' hashes were made for; it defaults to the one remembered in
``<home>/sip-accounts.sqlite`` (where ``p2pnode sip account add`` writes).

The bridge keys (``bridge*``, ``foreign_*``) stay flat under ``[sip]`` so
``config reference`` lists them like every other key. The bridge is on by
default when the node has signalling (``[presence]``): a gateway operator who
runs a peer wants phones and peers to reach each other; ``bridge = false``
turns it off, and ``foreign_*`` limits what other SIP networks can make the
P2P side do (each admitted foreign call is a P2P dial).

``to_gateway`` maps the validated section onto the gateway's frozen
``GatewayConfig``, so a mistake is reported with its path (``sip.trunks.0.login``)
before anything binds.
"""

from __future__ import annotations

from typing import Annotated, Literal

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from p2pnode.app.config_types import IpHostPort, IpText, check_network
from p2pnode.gateways.sip.accounts import valid_login
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.settings import GatewayConfig
from p2pnode.gateways.sip.trunks import IpTrunk, RegistrationTrunk, digits

__all__ = ["IpTrunkSection", "RegistrationTrunkSection", "SipSection", "to_gateway"]

MAX_TRUNKS = 64
MAX_DIDS = 10_000
MAX_BRIDGED = 16  # hosted accounts with a bridge: each is one more signalling socket
MAX_FOREIGN_DOMAINS = 1000


def _check_source(text: str) -> str:
    return check_network(text)


def _check_login(text: str) -> str:
    if not valid_login(text):
        raise ValueError("not a SIP account login")
    return text


def _check_did(text: str) -> str:
    if digits(text) is None:
        raise ValueError("not a phone number (digits, optional +)")
    return text


def _check_domain(text: str) -> str:
    labels = text.split(".")
    if len(text) > 253 or not all(
        label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels
    ):
        raise ValueError("not a domain name")
    return text.lower()


def _check_country(text: str) -> str:
    """An ISO 3166 alpha-2 region phonenumbers knows (``DE``, ``us``): national numbers
    dialled by phones are read in it (``030 5550100`` -> ``+49305550100``)."""
    region = text.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("not a country code with a numbering plan (ISO 3166 alpha-2, e.g. DE)")
    return region


def _split(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


HostPort = IpHostPort
SourceText = Annotated[str, AfterValidator(_check_source)]
LoginText = Annotated[str, AfterValidator(_check_login)]
DidText = Annotated[str, AfterValidator(_check_did)]
DomainText = Annotated[str, AfterValidator(_check_domain)]
CountryText = Annotated[str, AfterValidator(_check_country)]


class RegistrationTrunkSection(BaseModel):
    """A PBX that registers an account and owns DIDs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    login: LoginText = Field(description="the account the PBX registers")
    dids: tuple[DidText, ...] = Field((), max_length=MAX_DIDS, description="its numbers")
    did_in_request_uri: bool = Field(True, description="the DID in the Request-URI too")


class IpTrunkSection(BaseModel):
    """A PBX or carrier recognised by its source address (no REGISTER)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    sources: tuple[SourceText, ...] = Field(min_length=1, max_length=64)
    dids: tuple[DidText, ...] = Field((), max_length=MAX_DIDS)
    target: HostPort | None = Field(None, description="where calls to its DIDs go")
    trust_pai: bool = Field(True, description="take the caller from P-Asserted-Identity")


class SipSection(BaseModel):
    """The SIP gateway: desk phones, DECT bases and PBXs with login, password and server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="host the SIP gateway")
    domain: DomainText | None = Field(
        None, description="SIP domain and digest realm (default: the accounts file's)"
    )
    listen: HostPort = Field("0.0.0.0:5060", description="UDP and TCP address for SIP")
    media_host: IpText | None = Field(None, description="RTP relay address (default: listen's)")
    tls_port: int | None = Field(
        None, ge=0, le=65535, description="SIP over TLS (sips:) on listen's host, this port"
    )
    tls_certificate: str | None = Field(None, description="PEM certificate chain for TLS")
    tls_key: str | None = Field(None, description="PEM private key for TLS")
    digest: tuple[Literal["MD5", "SHA-256"], ...] = Field(
        ("MD5", "SHA-256"),
        min_length=1,
        max_length=2,
        description="digest challenges offered, in order (baresip 1.0: MD5 alone)",
    )
    max_calls: int = Field(1024, ge=1, le=100_000, description="concurrent calls")
    max_transactions: int = Field(65_536, ge=64, le=1_000_000, description="SIP transactions")
    keepalive: float = Field(25.0, ge=5.0, le=3600.0, description="seconds between OPTIONS pings")
    upstream: HostPort | None = Field(None, description="trunk for phone numbers not ours")
    default_country: CountryText | None = Field(
        None, description="ISO 3166 country national numbers are dialled in (none: +E.164 only)"
    )
    min_expires: int = Field(
        60, ge=1, le=3600, description="shortest registration accepted (shorter: 423)"
    )
    dids: dict[DidText, LoginText] = Field(
        default_factory=dict, max_length=MAX_DIDS, description="DID -> account login"
    )
    registration_trunks: tuple[RegistrationTrunkSection, ...] = Field(
        (), max_length=MAX_TRUNKS, description="PBXs registering an account"
    )
    ip_trunks: tuple[IpTrunkSection, ...] = Field(
        (), max_length=MAX_TRUNKS, description="PBXs and carriers by source address"
    )
    claim_logins: bool = Field(
        True, description="claim a registered account's login in the DHT (its hosted identity)"
    )
    bridge: bool | None = Field(
        None, description="bridge phones and P2P peers (default: on when [presence] is)"
    )
    bridge_account: LoginText = Field(
        "p2p", description="account the bridge registers as (made once, new password each start)"
    )
    bridge_hosted: tuple[LoginText, ...] = Field(
        (),
        max_length=MAX_BRIDGED,
        description="accounts whose P2P calls ring their phones and whose phones dial P2P",
    )
    bridge_local_calls: bool = Field(
        True,
        description="accounts not in bridge_hosted dial P2P as the gateway (their URI shown)",
    )
    bridge_unverified_logins: bool = Field(
        False, description="dial a login's single unverified claim (anyone can claim a free one)"
    )
    bridge_ring_timeout: float = Field(
        30.0, ge=5.0, le=300.0, description="seconds a bridged call rings before 480/no answer"
    )
    foreign_calls: bool = Field(
        True, description="other SIP networks may call P2P logins (as the gateway's identity)"
    )
    foreign_domains: tuple[DomainText, ...] = Field(
        (), max_length=MAX_FOREIGN_DOMAINS, description="only these From domains; empty: any"
    )
    foreign_per_minute: float = Field(
        30.0, gt=0, le=6000.0, description="foreign calls admitted per minute (burst as many)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SipSection:
        tls = {self.tls_port is None, self.tls_certificate is None, self.tls_key is None}
        if len(tls) > 1:
            raise ValueError("tls_port, tls_certificate and tls_key go together")
        if len(set(self.digest)) != len(self.digest):
            raise ValueError("digest names an algorithm twice")
        names = [trunk.name for trunk in self.ip_trunks]
        if len(set(names)) != len(names):
            raise ValueError("two ip_trunks share a name")
        if self.bridge_account in self.bridge_hosted:
            raise ValueError("bridge_account is the bridge itself, not a hosted account")
        if len(set(self.bridge_hosted)) != len(self.bridge_hosted):
            raise ValueError("bridge_hosted names an account twice")
        return self

    def bridging(self, presence: bool) -> bool:
        """Whether ``p2pnode run`` starts the bridge (it needs the node's signalling)."""
        return self.enabled and (presence if self.bridge is None else self.bridge)


def to_gateway(section: SipSection, domain: str) -> GatewayConfig:
    """The gateway's configuration for ``domain`` (the section's, or the accounts file's)."""
    host, port = _split(section.listen)
    return GatewayConfig(
        domain,
        host=host,
        port=port,
        media_host=section.media_host,
        digest_algorithms=tuple(Algorithm(name) for name in section.digest),
        max_calls=section.max_calls,
        max_transactions=section.max_transactions,
        registration_trunks=tuple(
            RegistrationTrunk(t.login, t.dids, t.did_in_request_uri)
            for t in section.registration_trunks
        ),
        ip_trunks=tuple(
            IpTrunk(
                t.name,
                t.sources,
                t.dids,
                None if t.target is None else _split(t.target),
                t.trust_pai,
            )
            for t in section.ip_trunks
        ),
        account_dids=tuple(section.dids.items()),
        keepalive_interval=section.keepalive,
        min_expires=section.min_expires,
        default_country=section.default_country,
        upstream=None if section.upstream is None else _split(section.upstream),
        tls_port=section.tls_port,
        tls_certificate=section.tls_certificate,
        tls_key=section.tls_key,
    )
