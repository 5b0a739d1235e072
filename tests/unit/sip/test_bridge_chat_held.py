"""``HeldTexts``: chat texts for the phones, on disk until a phone takes one."""

from __future__ import annotations

from pathlib import Path

from p2pnode.gateways.sip.bridge_chat import HeldTexts


def test_held_texts_keep_order_once_each_within_the_bound_across_reopening(
    tmp_path: Path,
) -> None:
    path = tmp_path / "phones.db"
    held = HeldTexts(path, limit=3)
    assert held.put(b"m1", b"P" * 32, "first")
    assert held.put(b"m2", b"Q" * 32, "second")
    assert held.put(b"m1", b"P" * 32, "first")  # shown again: held once
    assert held.put(b"m3", b"P" * 32, "third")
    assert not held.put(b"m4", b"P" * 32, "fourth")  # full: refused, not held
    held.close()
    held = HeldTexts(path, limit=3)  # a restart reads them back, oldest first
    assert [(h.peer[:1], h.text) for h in held.oldest(10)] == [
        (b"P", "first"),
        (b"Q", "second"),
        (b"P", "third"),
    ]
    held.remove(held.oldest(1)[0].row)
    assert [h.text for h in held.oldest(10)] == ["second", "third"]
    assert len(held) == 2
    held.close()
