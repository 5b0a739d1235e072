"""Talk to the running node of a home through its control API (stdlib HTTP, blocking).

Why the CLI prefers the running node: a command that joins the DHT itself costs
the network a join (hundreds of datagrams) and takes seconds; the running node
is already in it. ``running_node(home)`` finds it from ``<home>/control.json``
(written by the node, removed when it stops) and ``<home>/control.token``; a
stale file (the process is gone) counts as no node. Every command says on
stderr which way it went.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from p2pnode.app.homefiles import CONTROL_FILE, read_token
from p2pnode.cli.common import CliError, NetworkFailureError

__all__ = ["RunningNode", "running_node", "say"]

Model = TypeVar("Model", bound=pydantic.BaseModel)
TIMEOUT = 30.0


def say(text: str) -> None:
    """A note for people about how the command is carried out (stderr, not the answer)."""
    print(f"p2pnode: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunningNode:
    home: Path
    url: str
    token: str

    def request(
        self,
        method: str,
        path: str,
        answer: type[Model],
        *,
        query: list[tuple[str, str]] | None = None,
        body: pydantic.BaseModel | None = None,
    ) -> Model:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = body.model_dump_json().encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http on loopback, from control.json)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = _error_text(error.read())
            if error.code in (400, 404, 413):
                raise CliError(detail) from None
            raise NetworkFailureError(f"the running node answered {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise NetworkFailureError(f"the running node at {self.url}: {error}") from None
        try:
            return answer.model_validate_json(raw)
        except pydantic.ValidationError:
            raise NetworkFailureError("the running node gave an answer we cannot read") from None


def _error_text(raw: bytes) -> str:
    try:
        data: Any = json.loads(raw)
        return f"{data['error']}: {data['detail']}" if data.get("detail") else str(data["error"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return "(no detail)"


def running_node(home: Path) -> RunningNode | None:
    """The node running in ``home``, if its control API is up."""
    try:
        info = json.loads((home / CONTROL_FILE).read_text())
        url, pid = str(info["url"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    token = read_token(home)
    if token is None:
        return None
    return RunningNode(home, url, token)
