"""The node's configuration: ``<home>/p2pnode.toml`` (or ``--config FILE``), validated whole.

One pydantic model per section ([node], [dht], [supernode], [relay], [enum],
[control], [metrics], [log]; [presence], [mailbox], [chat], [calls], [sip] and
[web] are reserved for the services to come). Why pydantic: it reports every
error at once with its path (``relay.capacity: ...``), and the same models give
the JSON Schema for the control API's OpenAPI document and docs/runtime.md's
reference, so the three never disagree.

Invariants: unknown keys are errors (a typo must not be silently ignored);
every value a command-line flag can set has a key (flags override the file);
models are frozen; addresses stay ``HOST:PORT`` strings in the file and are
parsed by ``hostport``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from p2pnode.app.config_types import IpText, PeerIdText, check_network
from p2pnode.app.peer_config import CallsSection, ChatSection, MailboxSection, PresenceSection
from p2pnode.app.sip_config import SipSection
from p2pnode.app.web_config import WebSection
from p2pnode.dht.puzzle import DEFAULT_ID_DIFFICULTY, MAX_ID_DIFFICULTY, own_id_problem

__all__ = [
    "CONFIG_FILE",
    "ConfigError",
    "ConfigProblem",
    "ControlSection",
    "DhtSection",
    "EnumSection",
    "LogSection",
    "MetricsSection",
    "NodeConfig",
    "NodeSection",
    "RelaySection",
    "SupernodeSection",
    "TurnSection",
    "default_control_port",
    "hostport",
    "load_config",
    "parse_config",
    "reference_markdown",
]

CONFIG_FILE = "p2pnode.toml"
CONTROL_PORT_BASE = 20000  # default control ports: 20000-29999, derived from the home
CONTROL_PORT_SPAN = 10000


def hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``[V6]:PORT`` -> (host, port); ValueError with a one-line reason."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError("not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("the port must be a number in 0-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError("the host must be an IP address") from None
        host = "127.0.0.1"
    return host, int(port_text)


def _check_hostport(text: str) -> str:
    hostport(text)
    return text


def _check_cidr(text: str) -> str:
    return check_network(text, "not an address range (CIDR)")


HostPort = Annotated[str, AfterValidator(_check_hostport), Field(examples=["127.0.0.1:4000"])]
Cidr = Annotated[str, AfterValidator(_check_cidr)]
Level = Literal["debug", "info", "warning", "error"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Section):
    """The DHT socket and how to join."""

    listen: HostPort = Field("0.0.0.0:0", description="UDP address of the DHT")
    bootstrap: tuple[HostPort, ...] = Field((), description="nodes to join through")
    client: bool = Field(False, description="query only; never enter others' routing tables")
    status_interval: float = Field(30.0, gt=0, description="seconds between health lines")


class DhtSection(_Section):
    """Kademlia parameters."""

    k: int = Field(20, ge=1, le=64, description="bucket size and replication factor")
    alpha: int = Field(3, ge=1, le=16, description="lookups in flight per operation")
    disjoint_paths: int = Field(
        2, ge=1, le=8, description="disjoint lookup paths per get (S/Kademlia; eclipse cost)"
    )
    disjoint_puts: bool = Field(
        False, description="also store on each path's k closest (about 2x a put's datagrams)"
    )
    id_difficulty: int = Field(
        DEFAULT_ID_DIFFICULTY,
        ge=0,
        le=MAX_ID_DIFFICULTY,
        description="puzzle bits a DHT server's node id needs (S/Kademlia; grinding cost "
        "2**bits; one value per network, 0: off)",
    )
    puzzle_loopback: bool = Field(
        False, description="also ask loopback contacts for the id puzzle (exempt by default)"
    )


class SupernodeSection(_Section):
    """Reachability checks and the promotion to relay supernode."""

    enabled: bool = Field(True, description="run the supernode controller at all")
    relay: bool = Field(True, description="false: never serve as a relay (--no-relay)")
    stun: tuple[HostPort, ...] = Field((), description="dial-back STUN servers to ask")
    min_agree: int = Field(3, ge=1, le=16, description="servers that must agree")
    public_ip: IpText | None = Field(None, description="assert reachability at this IP")
    check_interval: float = Field(300.0, gt=0, description="seconds between checks")
    serve_stun: HostPort | None = Field(None, description="also run a dial-back STUN server")
    stun_alt_ip: IpText | None = Field(None, description="second IP for RFC 5780 discovery")
    relay_search: bool = Field(True, description="find supernodes in the DHT, keep two")

    @model_validator(mode="after")
    def _alt_needs_server(self) -> SupernodeSection:
        if self.stun_alt_ip is not None and self.serve_stun is None:
            raise ValueError("stun_alt_ip needs serve_stun")
        return self


class RelaySection(_Section):
    """The TURN relay a supernode runs."""

    listen: HostPort = Field("0.0.0.0:3478", description="STUN+TURN, UDP and TCP")
    capacity: int = Field(100, ge=1, le=1_000_000, description="allocations at most")
    realm: str = Field("p2pnode", min_length=1, max_length=64, description="TURN realm")
    allow_peers: tuple[Cidr, ...] = Field((), description="internal ranges peers may reach")
    drain_limit: float = Field(
        30.0, ge=0, description="SIGTERM: seconds live allocations get before the node exits"
    )


def _check_user(text: str) -> str:
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise ValueError("not NAME:PASSWORD")
    return text


def _check_port_range(text: str) -> str:
    low, sep, high = text.partition("-")
    if (
        not sep
        or not low.isdigit()
        or not high.isdigit()
        or not 1 <= int(low) <= int(high) <= 65535
    ):
        raise ValueError("not a port range LOW-HIGH within 1-65535")
    return text


class TurnSection(_Section):
    """A standalone STUN + TURN server with operator users (as `p2pnode relay`), apart
    from the supernode role's relay."""

    enabled: bool = Field(False, description="run it")
    listen: HostPort = Field("0.0.0.0:3478", description="UDP and TCP")
    relay_ip: IpText | None = Field(None, description="address of relayed sockets")
    realm: str = Field("p2pnode", min_length=1, max_length=64, description="TURN realm")
    users: tuple[Annotated[str, AfterValidator(_check_user)], ...] = Field(
        (), description="long-term credentials, NAME:PASSWORD"
    )
    secret: str | None = Field(None, min_length=1, description="TURN REST API shared secret")
    allow_peers: tuple[Cidr, ...] = Field((), description="internal ranges peers may reach")
    max_allocations: int = Field(1000, ge=1, description="allocations at most")
    max_per_user: int = Field(10, ge=1, description="allocations per user")
    max_per_ip: int = Field(20, ge=1, description="allocations per client IP")
    bandwidth_kbps: int = Field(2500, ge=1, description="per allocation and direction")
    ports: Annotated[str, AfterValidator(_check_port_range)] = Field(
        "49152-65535", description="relayed port range"
    )
    tcp: bool = Field(True, description="also serve TURN over TCP")
    rfc5766_channels: bool = Field(
        False, description="also accept channel numbers 0x5000-0x7FFF (coturn's clients)"
    )
    tls_listen: HostPort | None = Field(None, description="also serve TURN over TLS here")
    tls_cert: str | None = Field(None, description="certificate chain for tls_listen (PEM)")
    tls_key: str | None = Field(None, description="its private key (default: in tls_cert)")

    @model_validator(mode="after")
    def _usable(self) -> TurnSection:
        if self.enabled and not self.users and self.secret is None:
            raise ValueError("an enabled turn server needs users or a secret")
        if (self.tls_listen is None) != (self.tls_cert is None):
            raise ValueError("tls_listen and tls_cert go together")
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key needs tls_cert")
        if self.enabled and self.relay_ip is None:
            host, _ = hostport(self.listen)
            if ipaddress.ip_address(host).is_unspecified:
                raise ValueError("listen on a wildcard address needs relay_ip")
        return self


class EnumSection(_Section):
    """The ENUM DNS gateway (NAPTR answers from the DHT)."""

    enabled: bool = Field(False, description="run the gateway")
    listen: HostPort = Field("127.0.0.1:5353", description="UDP and TCP")
    zones: tuple[str, ...] = Field((), description="served zones (default e164.arpa + e164.org)")
    ns_name: str = Field("localhost.", description="NS/SOA name of the zones")
    rate_limit: float = Field(100.0, ge=0, description="answers/s per client; 0: off")
    trust: tuple[PeerIdText, ...] = Field((), description="verifiers whose countersignatures count")


class ControlSection(_Section):
    """The local control API (JSON + WebSocket, token in <home>/control.token)."""

    enabled: bool = Field(True, description="run the control API")
    host: Literal["127.0.0.1", "::1"] = Field("127.0.0.1", description="loopback only")
    port: int | None = Field(
        None, ge=0, le=65535, description="default: derived from the home (20000-29999)"
    )


class MetricsSection(_Section):
    """Prometheus metrics on their own address (no token: bind where scrapers reach)."""

    listen: HostPort | None = Field(None, description="Prometheus /metrics; off unless set")


class LogSection(_Section):
    """Log lines on stderr."""

    format: Literal["kv", "json"] = Field("kv", description="key=value lines or JSON lines")
    level: Level = Field("warning", description="debug, info, warning or error")
    modules: dict[str, Level] = Field(
        default_factory=dict, description='per-module levels, e.g. {"p2pnode.dht" = "debug"}'
    )


class ReservedSection(BaseModel):
    """Reserved for a service still to come: its keys are accepted and not checked yet."""

    model_config = ConfigDict(extra="allow", frozen=True)
    enabled: bool = False


class NodeConfig(_Section):
    """The whole file."""

    node: NodeSection = Field(default_factory=NodeSection)  # type: ignore[arg-type]
    dht: DhtSection = Field(default_factory=DhtSection)  # type: ignore[arg-type]
    supernode: SupernodeSection = Field(default_factory=SupernodeSection)  # type: ignore[arg-type]
    relay: RelaySection = Field(default_factory=RelaySection)  # type: ignore[arg-type]
    turn: TurnSection = Field(default_factory=TurnSection)  # type: ignore[arg-type]
    enum: EnumSection = Field(default_factory=EnumSection)  # type: ignore[arg-type]
    control: ControlSection = Field(default_factory=ControlSection)  # type: ignore[arg-type]
    metrics: MetricsSection = Field(default_factory=MetricsSection)  # type: ignore[arg-type]
    log: LogSection = Field(default_factory=LogSection)  # type: ignore[arg-type]
    presence: PresenceSection = Field(default_factory=PresenceSection)  # type: ignore[arg-type]
    mailbox: MailboxSection = Field(default_factory=MailboxSection)  # type: ignore[arg-type]
    chat: ChatSection = Field(default_factory=ChatSection)  # type: ignore[arg-type]
    calls: CallsSection = Field(default_factory=CallsSection)  # type: ignore[arg-type]
    sip: SipSection = Field(default_factory=SipSection)  # type: ignore[arg-type]
    web: WebSection = Field(default_factory=WebSection)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _bridge_needs_presence(self) -> NodeConfig:
        if self.sip.enabled and self.sip.bridge and not self.presence.enabled:
            raise ValueError("sip.bridge needs [presence] enabled (the bridge's signalling)")
        return self

    def override(self, changes: dict[str, dict[str, Any]]) -> NodeConfig:
        """A copy with ``{section: {key: value}}`` applied (command-line flags), validated."""
        data = self.model_dump()
        for section, values in changes.items():
            data[section].update(values)
        return parse_config(data)

    def for_node_id(self, node_id: bytes) -> tuple[NodeConfig, str | None]:
        """The config a node with ``node_id`` runs with, and why it differs (None: same).

        A DHT server's id must meet ``[dht] id_difficulty`` (``p2pnode.dht.puzzle``), or
        every peer refuses it: a node whose id does not runs the DHT as a client and
        never takes the relay supernode role (its advert and credentials RPC would name
        a DHT node nobody keeps). Loopback listeners are exempt like loopback contacts.
        """
        if self.node.client:
            return self, None
        host, _ = hostport(self.node.listen)
        problem = own_id_problem(
            node_id, self.dht.id_difficulty, host, loopback=self.dht.puzzle_loopback
        )
        if problem is None:
            return self, None
        return self.override({"node": {"client": True}, "supernode": {"relay": False}}), problem


class ConfigProblem(pydantic.BaseModel):
    """One mistake: where (``relay.capacity``) and a one-line reason."""

    model_config = ConfigDict(frozen=True)
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ConfigError(ValueError):
    """Every mistake in a configuration, not just the first."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


def _problems(error: pydantic.ValidationError) -> list[ConfigProblem]:
    found = []
    for item in error.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in item["loc"])
        reason = str(item["msg"]).removeprefix("Value error, ").splitlines()[0]
        found.append(ConfigProblem(path=path, reason=reason))
    return found


def parse_config(data: dict[str, Any], source: str = "configuration") -> NodeConfig:
    try:
        return NodeConfig.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(source, _problems(error)) from None


def load_config(path: Path | None) -> NodeConfig:
    """Parse and validate ``path`` (None, or missing and not asked for: the defaults)."""
    if path is None:
        return NodeConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [ConfigProblem(path="", reason=str(error))]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), [ConfigProblem(path="", reason=str(error))]) from None
    return parse_config(data, str(path))


def default_control_port(home: Path) -> int:
    """A port derived from the home's absolute path, so two homes rarely collide."""
    digest = hashlib.blake2b(str(home.resolve()).encode(), digest_size=4).digest()
    return CONTROL_PORT_BASE + int.from_bytes(digest, "big") % CONTROL_PORT_SPAN


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)


def reference_markdown() -> str:
    """The configuration reference (docs/runtime.md), generated from the models."""
    lines: list[str] = []
    defaults = NodeConfig()
    for section, field_info in NodeConfig.model_fields.items():
        model = field_info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines.append(f"### [{section}]")
        lines.append("")
        lines.append((model.__doc__ or "").strip().splitlines()[0])
        lines.append("")
        lines.append("| key | default | meaning |")
        lines.append("|---|---|---|")
        current = getattr(defaults, section)
        for key, info in model.model_fields.items():
            meaning = info.description or ""
            limits = [
                f"{name} {getattr(m, name)}"
                for m in info.metadata
                for name in ("ge", "gt", "le", "lt", "min_length", "max_length")
                if getattr(m, name, None) is not None
            ]
            if limits:
                meaning = f"{meaning} ({', '.join(limits)})" if meaning else ", ".join(limits)
            lines.append(f"| `{key}` | `{_shown(getattr(current, key))}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)
