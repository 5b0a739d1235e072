"""Load the RFC 4475 / RFC 5118 test messages kept in the RFCs' own notation.

The files under tests/vectors/sip/ are transcriptions of the messages as the
RFC text prints them (RFC 4475 §2): every line ends in CRLF on the wire;
``<allOneLine>`` joins the lines it encloses; ``<hex>..</hex>`` stands for the
bytes it spells; ``<repeat count=N>..</repeat>`` for N copies of its text.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["VECTORS", "load_vector"]

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "sip"

_ALL_ONE_LINE = re.compile(r"<allOneLine>\n(.*?)</allOneLine>\n", re.DOTALL)
_REPEAT = re.compile(r"<repeat count=(\d+)>(.*?)</repeat>", re.DOTALL)
_HEX = re.compile(r"<hex>([0-9A-Fa-f]*)</hex>")


def load_vector(path: Path) -> bytes:
    text = path.read_text(encoding="utf-8")
    text = _ALL_ONE_LINE.sub(lambda found: found.group(1).replace("\n", "") + "\n", text)
    text = _REPEAT.sub(lambda found: found.group(2) * int(found.group(1)), text)
    text = text.replace("\n", "\r\n")
    out = bytearray()
    position = 0
    for found in _HEX.finditer(text):
        out += text[position : found.start()].encode("utf-8")
        out += bytes.fromhex(found.group(1))
        position = found.end()
    out += text[position:].encode("utf-8")
    return bytes(out)
