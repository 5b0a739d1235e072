"""The messaging families' labels are a fixed set: an unknown reason is counted as
``other``, no reason is lost, every known series is there from the first scrape."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.app.messaging_metrics import (
    OPK_FALLBACK_LABELS,
    OTHER,
    REFUSED_LABELS,
    bounded_counts,
    messaging_metrics,
)
from p2pnode.sessions.messaging import MessagingStatistics

REASONS = st.one_of(st.sampled_from(OPK_FALLBACK_LABELS), st.text(max_size=12))


@given(st.dictionaries(REASONS, st.integers(min_value=0, max_value=10**6), max_size=40))
def test_bounded_counts_keep_every_count_under_the_fixed_labels(counts: dict[str, int]) -> None:
    bounded = dict(bounded_counts(tuple(sorted(counts.items())), OPK_FALLBACK_LABELS))
    assert tuple(bounded) == OPK_FALLBACK_LABELS
    assert sum(bounded.values()) == sum(counts.values())
    for label in OPK_FALLBACK_LABELS:
        if label != OTHER:
            assert bounded[label] == counts.get(label, 0)


def test_the_families_carry_the_snapshot_and_only_known_labels() -> None:
    stats = MessagingStatistics(
        outbox=2, online_sent=5, deposited=3, deposit_refusals=1, drained=4, refused=3,
        replies_dropped=0, opk_sessions=6, opk_fallbacks=2, opk_uploaded=100,
        opk_fallback_reasons=(("no_prekeys", 1), ("something-new", 1)),
        refused_reasons=(("replay", 2), ("tampered", 1)),
    )  # fmt: skip
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in messaging_metrics(stats)
        for s in family.samples
    }
    assert samples[("p2pnode_messaging_sent_total", (("path", "online"),))] == 5
    assert samples[("p2pnode_messaging_sent_total", (("path", "mailbox"),))] == 3
    assert samples[("p2pnode_messaging_outbox", ())] == 2
    assert samples[("p2pnode_messaging_opk_uploaded_total", ())] == 100
    fallbacks = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "p2pnode_messaging_opk_fallbacks_total"
    }
    assert set(fallbacks) == set(OPK_FALLBACK_LABELS)
    assert fallbacks["no_prekeys"] == 1 and fallbacks[OTHER] == 1
    refused = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "p2pnode_messaging_refused_total"
    }
    assert set(refused) == set(REFUSED_LABELS) and sum(refused.values()) == stats.refused
