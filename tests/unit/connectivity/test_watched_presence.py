"""Watched presence: several homes' notices combine into one report, emitted on change only."""

from __future__ import annotations

from p2pnode.connectivity.contact import Presence, PresenceStatus, encode_presence
from p2pnode.connectivity.homes_events import PresenceNotice
from p2pnode.connectivity.homewire import Code
from p2pnode.connectivity.watched_presence import WatchedPresence

BOB = bytes(range(32))
HOME_1 = ("198.51.100.1", 4000)
HOME_2 = ("198.51.100.2", 4000)
AWAY = encode_presence(Presence(PresenceStatus.AWAY, "lunch", 1))


def notice(home: tuple[str, int], attached: bool, code: Code = Code.OK) -> PresenceNotice:
    return PresenceNotice(BOB, home, code, attached, AWAY if attached else b"")


def test_online_while_attached_at_any_home_and_one_report_per_change() -> None:
    watched = WatchedPresence()
    assert watched.notice(notice(HOME_1, True)) is None  # not watched: ignored
    watched.follow(BOB)
    first = watched.notice(notice(HOME_1, True))
    assert first is not None and first.online and first.status == "away"
    assert first.note == "lunch"
    assert watched.notice(notice(HOME_2, True)) is None  # same verdict from a second home
    assert watched.notice(notice(HOME_1, False)) is None  # still attached at home 2
    gone = watched.notice(notice(HOME_2, False))
    assert gone is not None and not gone.online
    assert watched.report(BOB) == gone


def test_a_refused_watch_counts_as_not_attached_and_forget_clears() -> None:
    watched = WatchedPresence()
    watched.follow(BOB)
    refused = watched.notice(notice(HOME_1, True, Code.FORBIDDEN))
    assert refused is not None and not refused.online
    assert watched.watched() == [BOB]
    watched.forget(BOB)
    assert not watched.following(BOB) and watched.report(BOB) is None
