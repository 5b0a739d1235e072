"""Control-API route for the chat service's messaging figures: ``GET /api/messaging``.

The same ``MessagingStatistics`` snapshot as the ``p2pnode_messaging_*`` families
on /metrics (``messaging_metrics``): deliveries (online, deposited at a mailbox),
mailbox drains and refusals, refused envelopes, and the one-time prekey
counters, among them the sessions that fell back to the signed prekey alone with
the reason of each. Why a route of its own beside /metrics: /metrics is off by
default and served to a scraper without the token; an operator with the control
token (``p2pnode`` commands, the app's page) reads the figures here. A node
without ``[chat]`` answers 404 with the setting to change, one whose chat service
is (re)starting 503. Listed in ``control.ROUTES`` so the OpenAPI document shows
the model.
"""

from __future__ import annotations

import pydantic
from aiohttp import web

from p2pnode.app.api_peer import RouteSpec, _chat, _guarded, _json, _RefusedError
from p2pnode.app.peer_services import PeerApp
from p2pnode.sessions.messaging import MessagingStatistics

__all__ = ["MESSAGING_ROUTES", "MessagingAnswer", "ReasonCount", "messaging_answer"]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class ReasonCount(_Model):
    reason: str
    count: int


class MessagingAnswer(_Model):
    outbox: int = pydantic.Field(description="our messages not yet acknowledged")
    online_sent: int = pydantic.Field(description="envelopes sent on the chat channel")
    deposited: int = pydantic.Field(description="envelopes deposited at the peer's mailboxes")
    deposit_refusals: int = pydantic.Field(description="deposits a mailbox refused")
    drained: int = pydantic.Field(description="envelopes fetched from our mailboxes")
    refused: int = pydantic.Field(description="received envelopes refused (not decrypted)")
    refused_reasons: list[ReasonCount] = pydantic.Field(description="... by reason")
    replies_dropped: int = pydantic.Field(description="receipts dropped: reply queue full")
    receipts_withheld: int = pydantic.Field(description="delivered receipts not sent (blocked)")
    opk_sessions: int = pydantic.Field(description="sessions opened with a one-time prekey")
    opk_fallbacks: int = pydantic.Field(description="sessions opened on the signed prekey alone")
    opk_fallback_reasons: list[ReasonCount] = pydantic.Field(
        description="... by reason: no-mailbox, unreachable, no_prekeys, rate_limited, ..."
    )
    opk_uploaded: int = pydantic.Field(description="our one-time prekeys our mailboxes accepted")


def messaging_answer(stats: MessagingStatistics) -> MessagingAnswer:
    def reasons(counts: tuple[tuple[str, int], ...]) -> list[ReasonCount]:
        return [ReasonCount(reason=r, count=n) for r, n in counts]

    return MessagingAnswer(
        outbox=stats.outbox,
        online_sent=stats.online_sent,
        deposited=stats.deposited,
        deposit_refusals=stats.deposit_refusals,
        drained=stats.drained,
        refused=stats.refused,
        refused_reasons=reasons(stats.refused_reasons),
        replies_dropped=stats.replies_dropped,
        receipts_withheld=stats.receipts_withheld,
        opk_sessions=stats.opk_sessions,
        opk_fallbacks=stats.opk_fallbacks,
        opk_fallback_reasons=reasons(stats.opk_fallback_reasons),
        opk_uploaded=stats.opk_uploaded,
    )


async def messaging(app: PeerApp, request: web.Request) -> web.Response:
    stats = _chat(app).statistics()
    if stats is None:
        raise _RefusedError(503, "chat not running", "the chat service is (re)starting")
    return _json(messaging_answer(stats))


MESSAGING_ROUTES: tuple[RouteSpec, ...] = (
    ("GET", "/api/messaging", _guarded(messaging),
     "messaging figures: deliveries, mailbox deposits and drains, refusals, one-time prekeys "
     "(the same as p2pnode_messaging_* on /metrics)", MessagingAnswer, None, None),
)  # fmt: skip
