"""Refusal lines: one per source and kind per interval, with the count; log-safe values;
and the node's key=value / JSON formatters."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.logsafe import RefusalLog, clean
from p2pnode.app.logs import JsonFormatter, KeyValueFormatter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_source_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = RefusalLog(logging.getLogger("test.refusals"), clock, interval=60.0)
    with caplog.at_level(logging.WARNING):
        assert log.refused("turn-auth", "bad integrity", ("198.51.100.7", 3478))
        for _ in range(9):
            assert not log.refused("turn-auth", "bad integrity", ("198.51.100.7", 3478))
        assert log.refused("turn-auth", "bad integrity", ("198.51.100.8", 1))  # another source
        assert log.refused("dht-store", "unproven", "198.51.100.7")  # another kind
        clock.now = 61.0
        assert log.refused("turn-auth", "bad integrity", ("198.51.100.7", 3478))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused what=turn-auth reason=bad_integrity source=198.51.100.7 count=1",
        "refused what=turn-auth reason=bad_integrity source=198.51.100.8 count=1",
        "refused what=dht-store reason=unproven source=198.51.100.7 count=1",
        "refused what=turn-auth reason=bad_integrity source=198.51.100.7 count=10",
    ]
    assert log.total == 13


def test_sources_held_are_bounded() -> None:
    log = RefusalLog(logging.getLogger("test.bounded"), Clock(), max_sources=4)
    for n in range(100):
        log.refused("x", "y", f"192.0.2.{n}")
    assert len(log._seen) == 4


@given(st.text())
def test_clean_values_cannot_forge_fields_or_lines(value: str) -> None:
    text = clean(value)
    assert text and len(text) <= 64
    assert not any(c.isspace() or c == "=" or not c.isprintable() for c in text)


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("p2pnode.dht", logging.WARNING, __file__, 1, message, (), None)


def test_key_value_and_json_lines() -> None:
    line = KeyValueFormatter().format(_record('said "hi" there'))
    assert " level=warning logger=p2pnode.dht msg=" in line
    assert line.endswith('msg="said \\"hi\\" there"') and "\n" not in line
    assert KeyValueFormatter().format(_record("plain")).endswith("msg=plain")
    data = json.loads(JsonFormatter().format(_record("two\nlines")))
    assert data["msg"] == "two\nlines" and data["level"] == "warning"
