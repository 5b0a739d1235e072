"""The control API's request and response bodies: pydantic models, frozen.

The handlers validate requests and build responses with these models, and the
OpenAPI document's schemas are generated from them (``control.openapi``), so
the document cannot drift from what the server does. The CLI parses answers
with the same models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from p2pnode.directory.trust import Ambiguous, NotFound, Resolution, Verified
from p2pnode.identity import peer_id_for

__all__ = [
    "ApiError",
    "CandidateModel",
    "EnumAnswer",
    "NameAnswer",
    "RecordModel",
    "RecordPutAnswer",
    "RecordPutRequest",
    "RecordQuery",
    "RecordsAnswer",
    "RelayState",
    "ServiceModel",
    "StatusAnswer",
    "TableModel",
    "resolution_answer",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiError(_Model):
    error: str
    detail: str = ""


class ServiceModel(_Model):
    name: str
    state: Literal["starting", "running", "failed", "restarting", "disabled", "draining", "stopped"]
    reason: str
    failures: int
    restarts: int
    statistics: dict[str, Any] = Field(description="the service's statistics() snapshot")


class TableModel(_Model):
    contacts: int
    buckets_used: int
    records: int
    healthy: bool
    datagrams_in: int
    datagrams_out: int


class RelayState(_Model):
    role: str = Field(description="client, candidate, supernode, draining, retiring, opted-out")
    reason: str
    reachability: str
    relay_udp: list[str]
    load: int
    capacity: int
    accepting: bool
    chosen_relays: list[str] = Field(description="supernodes this node would relay through")


class StatusAnswer(_Model):
    peer_id: str
    fingerprint: str
    dht_address: str
    uptime: float
    table: TableModel
    relay: RelayState | None
    services: list[ServiceModel]


class RecordPutRequest(_Model):
    kind: str = Field(description="record kind, e.g. presence, name-claim")
    subject: str
    payload: str = Field(description="UTF-8 text")
    ttl: int = Field(3600, ge=1)
    seq: int | None = Field(None, ge=0, description="default: the unix time")


class RecordPutAnswer(_Model):
    key: str
    owner: str
    seq: int
    expires_at: int
    stored: int
    contacted: int
    rejected: list[tuple[str, int]]


class RecordQuery(_Model):
    kind: str
    subject: str
    owner: str = Field("", description="peer id; optional for contested kinds")


class RecordModel(_Model):
    owner: str
    fingerprint: str
    kind: str
    subject: str
    seq: int
    issued_at: int
    expires_at: int
    payload_hex: str


class RecordsAnswer(_Model):
    key: str
    records: list[RecordModel]
    hops: int
    queries: int
    elapsed: float


class CandidateModel(_Model):
    peer_id: str
    fingerprint: str
    verified_by: list[str]
    uris: list[str] = Field(description="for numbers: the SIP URIs the rules give")


class NameAnswer(_Model):
    subject: str
    outcome: Literal["verified", "unverified", "ambiguous", "not-found"]
    conflict: bool = False
    candidates: list[CandidateModel]


EnumAnswer = NameAnswer


def resolution_answer(resolution: Resolution, number: str | None) -> NameAnswer:
    """A directory resolution as the API and the CLI's --json answer it."""
    if isinstance(resolution, NotFound):
        return NameAnswer(subject=resolution.subject, outcome="not-found", candidates=[])
    if isinstance(resolution, Ambiguous):
        candidates = resolution.candidates
        outcome = "ambiguous"
    else:
        candidates = (resolution.candidate,)
        outcome = "verified" if isinstance(resolution, Verified) else "unverified"
    models = [
        CandidateModel(
            peer_id=c.peer_id,
            fingerprint=c.fingerprint,
            verified_by=[peer_id_for(v) for v in c.verified_by],
            uris=[
                uri
                for d in sorted(c.directives, key=lambda d: (d.order, d.preference))
                if number is not None and (uri := d.uri_for(number)) is not None
            ],
        )
        for c in candidates
    ]
    conflict = isinstance(resolution, Ambiguous) and resolution.conflict
    return NameAnswer(
        subject=resolution.subject,
        outcome=outcome,  # type: ignore[arg-type]
        conflict=conflict,
        candidates=models,
    )
