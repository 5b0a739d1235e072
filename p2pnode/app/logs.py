"""Log set-up for the node: one line per event, ``key=value`` by default or JSON lines.

Why ``key=value``: a line an operator can grep and fail2ban can match, still
readable by people; JSON for log shippers. Levels are set per module
(``[log] modules``, e.g. ``p2pnode.dht = "debug"``). Messages are left as the
code formatted them; the record's fixed fields come first.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Literal

__all__ = ["JsonFormatter", "KeyValueFormatter", "configure_logging"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


def _stamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _quoted(text: str) -> str:
    if text and not any(c.isspace() or c in '"=' for c in text):
        return text
    return json.dumps(text)


class KeyValueFormatter(logging.Formatter):
    """``time=... level=warning logger=p2pnode.dht msg="..."``."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"time={_stamp(record)} level={record.levelname.lower()} "
            f"logger={record.name} msg={_quoted(record.getMessage())}"
        )
        if record.exc_info:
            line += " exc=" + _quoted(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(
    level: str,
    log_format: Literal["kv", "json"] = "kv",
    modules: Mapping[str, str] | None = None,
) -> None:
    """Replace the root handler: stderr, the chosen format, per-module levels."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    for name, module_level in (modules or {}).items():
        logging.getLogger(name).setLevel(LEVELS[module_level])
