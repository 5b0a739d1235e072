"""The chat service's messaging figures as Prometheus families, with bounded labels.

``metrics.NodeCollector`` yields these at each scrape from one
``MessagingStatistics`` snapshot (``ChatService.statistics()``), so /metrics and
``GET /api/messaging`` (``api_messaging``) show the same numbers. Why the labels
are fixed sets: a reason is a label value, and a label value is a time series a
scraper keeps forever. The reasons come from our own code (``SessionFailure``,
the mailbox ``Status`` names, ``prekey_supply.take``'s own words), never from a
peer's bytes, but a new reason added later must not grow the series without
anyone noticing: anything outside the set is counted as ``other``. Every known
series is present from the first scrape (``rate()`` needs the zero).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from p2pnode.sessions.crypto import SessionFailure
from p2pnode.sessions.mailbox_wire import Status
from p2pnode.sessions.messaging import MessagingStatistics

__all__ = [
    "OPK_FALLBACK_LABELS",
    "OTHER",
    "REFUSED_LABELS",
    "bounded_counts",
    "messaging_metrics",
]

OTHER = "other"  # the label of a reason outside the known set
# Why a new session opened on the signed prekey alone (prekey_supply.take's answers).
OPK_FALLBACK_LABELS: tuple[str, ...] = (
    "no-mailbox",
    "unreachable",
    "bad-signature",
    *(s.name.lower() for s in Status if s is not Status.OK),
    OTHER,
)
# Why a received envelope was refused (ChatCore: SessionFailure values, "malformed").
REFUSED_LABELS: tuple[str, ...] = (*(f.value for f in SessionFailure), "malformed", OTHER)


def bounded_counts(
    counts: tuple[tuple[str, int], ...], labels: tuple[str, ...]
) -> tuple[tuple[str, int], ...]:
    """``counts`` over exactly ``labels`` (in their order, zeros included); a reason
    outside them is added to ``OTHER``, the last label."""
    known = dict.fromkeys(labels, 0)
    for reason, count in counts:
        known[reason if reason in known else OTHER] += count
    return tuple(known.items())


def messaging_metrics(stats: MessagingStatistics) -> Iterator[Metric]:
    """The messaging families (names ``p2pnode_messaging_*``)."""
    outbox = GaugeMetricFamily(
        "p2pnode_messaging_outbox", "messages of ours not yet acknowledged by the peer or a mailbox"
    )
    outbox.add_metric([], stats.outbox)
    yield outbox
    sent = CounterMetricFamily(
        "p2pnode_messaging_sent",
        "envelopes we sent, by path: online (the chat channel) or deposited at a mailbox",
        labels=["path"],
    )
    sent.add_metric(["online"], stats.online_sent)
    sent.add_metric(["mailbox"], stats.deposited)
    yield sent
    simple = (
        ("deposit_refusals", "deposits a mailbox refused", stats.deposit_refusals),
        ("drained", "envelopes fetched from our mailboxes", stats.drained),
        ("replies_dropped", "receipts dropped: the reply queue was full", stats.replies_dropped),
        ("receipts_withheld", "delivered receipts not sent (blocked)", stats.receipts_withheld),
        ("opk_sessions", "new sessions opened with a one-time prekey", stats.opk_sessions),
        ("opk_uploaded", "our one-time prekeys our mailboxes accepted", stats.opk_uploaded),
    )
    for name, documentation, value in simple:
        family = CounterMetricFamily(f"p2pnode_messaging_{name}", documentation)
        family.add_metric([], value)
        yield family
    by_reason = (
        ("opk_fallbacks",
         "new sessions opened on the signed prekey alone (no one-time prekey), by reason",
         stats.opk_fallback_reasons, OPK_FALLBACK_LABELS),
        ("refused", "received envelopes refused (not decrypted), by reason",
         stats.refused_reasons, REFUSED_LABELS),
    )  # fmt: skip
    for name, documentation, counts, known in by_reason:
        family = CounterMetricFamily(f"p2pnode_messaging_{name}", documentation, labels=["reason"])
        for reason, count in bounded_counts(counts, known):
            family.add_metric([reason], count)
        yield family
