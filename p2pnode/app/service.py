"""The service contract every long-running part of a node follows, and the runtime's events.

A node is a set of services (DHT, supernode role, relay search, ENUM DNS
gateway; next presence, mailbox, chat, calls, SIP gateway, web) hosted by one
``p2pnode.app.node.Node``. Services in LOWER layers must not import this module
(``p2pnode.app`` is above them); they conform structurally. The contract:

    class MyService:
        name: str                              # unique in the node, e.g. "dht"
        async def start(self) -> None: ...     # bind sockets, join; raise to fail
        async def stop(self) -> None: ...      # release everything; idempotent
        def statistics(self) -> MyStatistics   # a frozen dataclass snapshot, cheap

    optional:
        async def run(self) -> None: ...       # the service's life after start();
                                               # returns or raises = the service ended
                                               # (the node restarts it); cancelled on stop
        async def drain(self, limit: float) -> None: ...  # SIGTERM: finish work in flight
                                               # within ``limit`` seconds before stop()
        a constructor parameter ``emit: Callable[[object], None]``: events the service
        publishes (frozen dataclasses), e.g. a role change; the node serializes them
        with ``event_json`` for the WebSocket stream

Why the runtime, not the service, holds the state (starting/running/failed/
restarting/disabled/stopped): a service cannot report its own crash, and one
supervisor gives every service the same restart policy and the same report.
Statistics are snapshots (no counters read from outside) so metrics, the
control API and ``p2pnode status`` all see the same consistent values.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DrainingService",
    "NodeStopping",
    "RunningService",
    "Service",
    "ServiceState",
    "ServiceStateChanged",
    "ServiceStatus",
    "event_json",
    "snapshot_json",
]


@runtime_checkable
class Service(Protocol):
    """Start, stop and a frozen statistics snapshot; see the module docstring."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def statistics(self) -> object: ...


@runtime_checkable
class RunningService(Service, Protocol):
    """A service with a life of its own after ``start`` (a loop the node supervises)."""

    async def run(self) -> None: ...


@runtime_checkable
class DrainingService(Service, Protocol):
    """A service that can finish its work in flight before it stops (SIGTERM)."""

    async def drain(self, limit: float) -> None: ...


class ServiceState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"  # it raised; a restart is scheduled
    RESTARTING = "restarting"
    DISABLED = "disabled"  # failed too often, or disabled by configuration
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ServiceStatus:
    """One service's state as the runtime sees it, and why."""

    name: str
    state: ServiceState
    reason: str
    since: float  # monotonic seconds of the runtime's clock
    failures: int  # failures in a row (reset after a stable run)
    restarts: int  # restarts since the node started


@dataclass(frozen=True)
class ServiceStateChanged:
    """Event: a service changed state (published on the WebSocket stream)."""

    service: str
    state: ServiceState
    reason: str
    failures: int


@dataclass(frozen=True)
class NodeStopping:
    """Event: the node was asked to stop (SIGTERM, SIGINT, or the API)."""

    reason: str


def _plain(value: object) -> Any:
    """JSON-ready: enums by value, bytes as hex, tuples as lists, mappings with str keys."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, bytes):
        return value.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def snapshot_json(snapshot: object) -> Any:
    """A statistics snapshot (frozen dataclass) as JSON-ready values."""
    return _plain(snapshot)


def event_json(event: object) -> dict[str, Any]:
    """An event as one JSON object: its fields (``dataclasses.asdict``-like) and its
    class name as ``type``; a non-dataclass event is only its type."""
    fields = _plain(event) if dataclasses.is_dataclass(event) else {}
    assert isinstance(fields, dict)
    return {"type": type(event).__name__, **fields}
